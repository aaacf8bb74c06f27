import VMM

/// What the gdb session drives: a machine's vCPUs as threads 0..<threadCount (gdb ids
/// 1...threadCount), stopped and resumed together. `MachineTarget` is the real one; the
/// session's tests use a fake.
public protocol DebugTarget: AnyObject, Sendable {
    var threadCount: Int { get }
    /// Attaches (does not stop anything); `onStop` is called whenever a stop is waiting
    /// for `takeStop`. Returns a line about what the host supports, for the log.
    func attach(onStop: @escaping @Sendable () -> Void) throws -> String
    /// Removes every breakpoint and lets the machine run.
    func detach()
    /// Stops every vCPU; the stop to report.
    func interrupt(thread: Int) -> DebugStop
    /// The stop `onStop` announced (every vCPU stopped), or nil if none is waiting.
    func takeStop() -> DebugStop?
    /// Runs the vCPUs as `actions` says; false when a stop was still waiting (it is
    /// announced again instead).
    func resume(_ actions: [ResumeAction]) throws -> Bool
    func registers(thread: Int) throws -> RegisterFile
    func setRegisters(_ file: RegisterFile, parts: RegisterFile.Parts, thread: Int) throws
    func readMemory(at address: UInt64, count: Int, thread: Int) throws -> [UInt8]
    func writeMemory(_ bytes: [UInt8], at address: UInt64, thread: Int) throws
    func insert(_ point: DebugPoint, thread: Int) throws
    func remove(_ point: DebugPoint)
    /// One line about a vCPU for `info threads`.
    func describe(thread: Int) -> String
    /// What `monitor` commands answer.
    func monitor(_ command: String) -> String
    /// Stops the machine for good (gdb's `kill`).
    func kill()
}
