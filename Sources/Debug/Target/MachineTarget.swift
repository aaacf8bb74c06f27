import KVM
import VMM

/// A `Machine` as a gdb target: its debugger for control, KVM for the registers.
public final class MachineTarget: DebugTarget {
    public let machine: Machine
    private var debugger: MachineDebugger { machine.debugger }

    public init(machine: Machine) { self.machine = machine }

    /// IA32_KERNEL_GS_BASE.
    static let kernelGSBaseMSR: UInt32 = 0xC000_0102

    public var threadCount: Int { debugger.vcpuCount }

    public func attach(onStop: @escaping @Sendable () -> Void) throws -> String {
        "guest debug on this KVM: \(try debugger.attach(onStop: onStop))"
    }

    public func detach() { debugger.detach() }
    public func interrupt(thread: Int) -> DebugStop { debugger.interrupt(vcpu: thread) }
    public func takeStop() -> DebugStop? { debugger.takeStop() }
    public func resume(_ actions: [ResumeAction]) throws -> Bool { try debugger.resume(actions) }

    public func registers(thread: Int) throws -> RegisterFile {
        try debugger.withStoppedVCPU(thread) { vcpu in
            RegisterFile(regs: try vcpu.registers(), sregs: try vcpu.specialRegisters(), fpu: try vcpu.fpu(),
                         kernelGSBase: (try? vcpu.msrs([Self.kernelGSBaseMSR]).first) ?? 0)
        }
    }

    public func setRegisters(_ file: RegisterFile, parts: RegisterFile.Parts, thread: Int) throws {
        try debugger.withStoppedVCPU(thread) { vcpu in
            if parts.contains(.general) { try vcpu.setRegisters(file.regs) }
            if parts.contains(.special) { try vcpu.setSpecialRegisters(file.sregs) }
            if parts.contains(.fpu) { try vcpu.setFPU(file.fpu) }
            if parts.contains(.msr) { try vcpu.setMSRs([(index: Self.kernelGSBaseMSR, value: file.kernelGSBase)]) }
        }
    }

    public func readMemory(at address: UInt64, count: Int, thread: Int) throws -> [UInt8] {
        try debugger.readMemory(at: address, count: count, vcpu: thread)
    }

    public func writeMemory(_ bytes: [UInt8], at address: UInt64, thread: Int) throws {
        try debugger.writeMemory(bytes, at: address, vcpu: thread)
    }

    public func insert(_ point: DebugPoint, thread: Int) throws { try debugger.insert(point, vcpu: thread) }
    public func remove(_ point: DebugPoint) { debugger.remove(point) }

    public func describe(thread: Int) -> String {
        let runner = machine.vcpus[thread]
        var parts = ["vCPU \(thread)", "APIC ID \(runner.id)"]
        if let sregs = try? debugger.withStoppedVCPU(thread, { try $0.specialRegisters() }) {
            parts.append(Self.mode(sregs))
        }
        if let mp = try? debugger.withStoppedVCPU(thread, { try $0.mpState() }), mp != .runnable {
            parts.append(mp == .halted ? "halted" : mp == .uninitialized || mp == .initReceived ? "waiting for SIPI" : "\(mp)")
        }
        return parts.joined(separator: ", ")
    }

    /// The CPU mode in words: "long mode, CPL 0", "protected mode, paging off, CPL 0", ...
    static func mode(_ s: SpecialRegisters) -> String {
        let cpl = "CPL \(s.ss.dpl)"
        if s.cr0 & 1 == 0 { return "real mode" }
        if s.efer & (1 << 10) != 0 { return (s.cs.l == 1 ? "64-bit mode, " : "compatibility mode, ") + cpl }
        return "protected mode, " + (s.cr0 & (1 << 31) != 0 ? "paging on, " : "paging off, ") + cpl
    }

    public func monitor(_ command: String) -> String {
        switch command.split(separator: " ").first.map(String.init) ?? "" {
        case "info", "host":
            var lines = ["guest debug on this KVM: \(GuestDebugSupport.probe(machine.kvm))"]
            for i in 0 ..< threadCount { lines.append("thread \(i + 1): \(describe(thread: i)), \(machine.vcpus[i].state.rawValue)") }
            return lines.joined(separator: "\n") + "\n"
        default:
            return "monitor commands: info (what guest debugging can do on this host, and each vCPU)\n"
        }
    }

    public func kill() { machine.kill() }
}
