/// Everything a worker needs to build its machine, sent once as the first message with
/// the descriptors attached (SCM_RIGHTS), in this order: /dev/kvm, one memfd per
/// entry of `memory`, the kernel image, then the initrd when `hasInitrd`.
public struct WorkerSetup: Sendable, Equatable {
    /// One guest-memory segment the daemon created as a memfd.
    public struct Segment: Sendable, Equatable {
        public var name: String
        public var guestBase: UInt64
        public var size: UInt64
        public init(name: String, guestBase: UInt64, size: UInt64) {
            self.name = name; self.guestBase = guestBase; self.size = size
        }
    }

    public var name: String
    public var memoryMiB: UInt64
    public var cpus: UInt32
    public var commandLine: String
    public var debugExit: Bool
    public var hypercalls: Bool
    public var rebootOnReset: Bool
    public var hasInitrd: Bool
    public var memory: [Segment]
    /// Options later issues add (e.g. a CPU template), as name/value pairs the worker
    /// must understand: an unknown one fails the setup instead of being ignored.
    public var options: [String: String]

    public init(name: String, memoryMiB: UInt64, cpus: UInt32, commandLine: String, debugExit: Bool,
                hypercalls: Bool, rebootOnReset: Bool, hasInitrd: Bool, memory: [Segment],
                options: [String: String] = [:]) {
        self.name = name; self.memoryMiB = memoryMiB; self.cpus = cpus; self.commandLine = commandLine
        self.debugExit = debugExit; self.hypercalls = hypercalls; self.rebootOnReset = rebootOnReset
        self.hasInitrd = hasInitrd; self.memory = memory; self.options = options
    }

    /// How many descriptors travel with this setup.
    public var descriptorCount: Int { 1 + memory.count + 1 + (hasInitrd ? 1 : 0) }

    func encode(into w: inout WireWriter) {
        w.string(name); w.u64(memoryMiB); w.u32(cpus); w.string(commandLine)
        w.bool(debugExit); w.bool(hypercalls); w.bool(rebootOnReset); w.bool(hasInitrd)
        w.u32(UInt32(memory.count))
        for s in memory { w.string(s.name); w.u64(s.guestBase); w.u64(s.size) }
        w.u32(UInt32(options.count))
        for (k, v) in options.sorted(by: { $0.key < $1.key }) { w.string(k); w.string(v) }
    }

    static func decode(from r: inout WireReader) throws -> WorkerSetup {
        let name = try r.string(), memoryMiB = try r.u64(), cpus = try r.u32(), commandLine = try r.string()
        let debugExit = try r.bool(), hypercalls = try r.bool(), rebootOnReset = try r.bool(), hasInitrd = try r.bool()
        let count = try r.u32()
        guard count <= 8 else { throw WireError.malformed("\(count) memory segments") }
        var memory: [Segment] = []
        for _ in 0 ..< count { memory.append(Segment(name: try r.string(), guestBase: try r.u64(), size: try r.u64())) }
        let optionCount = try r.u32()
        guard optionCount <= 64 else { throw WireError.malformed("\(optionCount) options") }
        var options: [String: String] = [:]
        for _ in 0 ..< optionCount { options[try r.string()] = try r.string() }
        return WorkerSetup(name: name, memoryMiB: memoryMiB, cpus: cpus, commandLine: commandLine, debugExit: debugExit,
                           hypercalls: hypercalls, rebootOnReset: rebootOnReset, hasInitrd: hasInitrd,
                           memory: memory, options: options)
    }
}
