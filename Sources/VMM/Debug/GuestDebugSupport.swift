import GuestMemory
import KVM
import Synchronization

/// What `KVM_SET_GUEST_DEBUG` really does on this host, found by running a probe VM once
/// per process (`GuestDebugSupport.probe`).
///
/// On hardware-virtualised KVM everything works at every privilege level. On a KVM that
/// emulates guest CPL 0 and runs CPL 3 natively (PVM on this project's hosts), the
/// emulator honours single-step and execution breakpoints, but no data breakpoint fires
/// and nothing at all is seen at CPL 3; a planted `int3` at CPL 0 is an emulation
/// failure, not a debug exit. The debugger uses the answers to choose: real debug
/// registers for watchpoints, or watchpoints emulated by single-stepping.
public struct GuestDebugSupport: Sendable, Equatable, CustomStringConvertible {
    /// `KVM_GUESTDBG_SINGLESTEP` stops after each instruction at CPL 0.
    public var singleStep = false
    /// ... and at CPL 3.
    public var singleStepInUserMode = false
    /// A DR0 execution breakpoint (`KVM_GUESTDBG_USE_HW_BP`) stops at CPL 0.
    public var executionBreakpoints = false
    /// ... and at CPL 3.
    public var executionBreakpointsInUserMode = false
    /// A DR0 write watchpoint stops after the write, at CPL 0.
    public var dataBreakpoints = false
    /// `int3` at CPL 0 with `KVM_GUESTDBG_USE_SW_BP` exits with `KVM_EXIT_DEBUG`
    /// (otherwise: an emulation failure, which the emulation assist hands the debugger).
    public var softwareBreakpointExits = false
    /// Set when the probe could not run to the end; the flags say what it saw.
    public var probeError: String?

    public init() {}

    public var description: String {
        func yes(_ b: Bool) -> String { b ? "yes" : "no" }
        var s = "single-step: CPL 0 \(yes(singleStep)), CPL 3 \(yes(singleStepInUserMode)); "
            + "execution breakpoints: CPL 0 \(yes(executionBreakpoints)), CPL 3 \(yes(executionBreakpointsInUserMode)); "
            + "data breakpoints: \(yes(dataBreakpoints)); "
            + "int3 as a debug exit: \(yes(softwareBreakpointExits))"
        if let probeError { s += "; probe incomplete: \(probeError)" }
        return s
    }

    private static let cached = Mutex<GuestDebugSupport?>(nil)

    /// Takes `answer` (found by another process on this host: vmmd hands its own to each
    /// worker) as this process's, so that `probe` runs no probe VM; no effect once there
    /// is one.
    public static func assume(_ answer: GuestDebugSupport) { cached.withLock { $0 = $0 ?? answer } }

    /// The probe's answer for this process; the first call runs the probe VM (3 ms here).
    /// A sandboxed process must call it before its filter forbids `KVM_CREATE_VM`.
    public static func probe(_ kvm: KVMSystem) -> GuestDebugSupport {
        if let known = cached.withLock({ $0 }) { return known }
        let result = GuestDebugProbeVM.run(kvm)
        return cached.withLock { c in
            if c == nil { c = result }
            return c ?? result
        }
    }
}

/// The probe VM: 64 KiB, long mode at CPL 0 with one identity-mapped 2-MiB user page,
/// Linux's user selectors for an `iretq` to CPL 3. Each snippet ends with an `out` to
/// port 0x10 (a VM exit at CPL 0; at CPL 3 an exit or a #GP that becomes a triple
/// fault, which ends the run just as well).
enum GuestDebugProbeVM {
    static let pml4: UInt64 = 0x1000, gdt: UInt64 = 0x4000, data: UInt64 = 0x5000, stackTop: UInt64 = 0xF000
    static let kernelStep: UInt64 = 0x6000, kernelExec: UInt64 = 0x6010, kernelExecTarget: UInt64 = 0x6012
    static let kernelWrite: UInt64 = 0x6020, kernelInt3: UInt64 = 0x6030, toUser: UInt64 = 0x6040
    static let userStep: UInt64 = 0x6060, userExec: UInt64 = 0x6070, userExecTarget: UInt64 = 0x6072
    static let dr6SingleStep: UInt64 = 1 << 14

    struct ProbeError: Error { let why: String }

    static func run(_ kvm: KVMSystem) -> GuestDebugSupport {
        var result = GuestDebugSupport()
        do {
            let probe = try ProbeVM(kvm: kvm, build: build)
            let vcpu = probe.vcpu

            let step = try exits(vcpu, at: kernelStep, .singleStep)
            result.singleStep = step.contains { $0.dr6 & dr6SingleStep != 0 && $0.pc == kernelStep + 1 }
            var one = GuestDebugRegisters()
            one[0] = kernelExecTarget
            one.dr7 = 1  // L0, execute, 1 byte
            result.executionBreakpoints = try exits(vcpu, at: kernelExec, .useHardwareBreakpoints, one)
                .contains { $0.dr6 & 1 != 0 && $0.pc == kernelExecTarget }
            one[0] = data
            one.dr7 = 1 | (1 << 16) | (3 << 18)  // L0, write, 4 bytes
            result.dataBreakpoints = try exits(vcpu, at: kernelWrite, .useHardwareBreakpoints, one).contains { $0.dr6 & 1 != 0 }
            result.softwareBreakpointExits = try exits(vcpu, at: kernelInt3, .useSoftwareBreakpoints).contains { $0.exception == 3 }

            result.singleStepInUserMode = try exits(vcpu, at: toUser, .singleStep, user: userStep)
                .contains { $0.dr6 & dr6SingleStep != 0 && $0.pc == userStep + 1 }
            one[0] = userExecTarget
            one.dr7 = 1
            result.executionBreakpointsInUserMode = try exits(vcpu, at: toUser, .useHardwareBreakpoints, one, user: userExec)
                .contains { $0.dr6 & 1 != 0 && $0.pc == userExecTarget }
            withExtendedLifetime(probe) {}  // guest memory stays mapped while the vCPU runs
        } catch let error as ProbeError {
            result.probeError = error.why
        } catch {
            result.probeError = "\(error)"
        }
        return result
    }

    /// Runs from `rip` with `control` until the snippet's end; returns the debug exits seen.
    private static func exits(_ vcpu: KVMVCPU, at rip: UInt64, _ control: GuestDebugControl,
                              _ registers: GuestDebugRegisters = GuestDebugRegisters(), user: UInt64 = 0) throws -> [DebugEvent] {
        try kernelState(vcpu)
        try vcpu.setRegisters([(.rip, rip), (.rsp, stackTop), (.rflags, 2), (.r13, user)])
        try vcpu.setGuestDebug([.enable, control], registers: registers)
        defer { try? vcpu.setGuestDebug([]) }
        var seen: [DebugEvent] = []
        for _ in 0 ..< 32 {
            switch try vcpu.runOnce() {
            case .debug(let event):
                seen.append(event)
                // A breakpoint that fired is answered; stop here rather than step past it.
                if event.dr6 & dr6SingleStep == 0 { return seen }
            case .interrupted:
                continue
            default:
                return seen  // the report port, an emulation failure, a triple fault: the end
            }
        }
        throw ProbeError(why: "the snippet at 0x\(String(rip, radix: 16)) did not end")
    }

    private static func kernelState(_ vcpu: KVMVCPU) throws {
        var sregs = try vcpu.specialRegisters()
        let data = Segment.make(selector: 0x18, base: 0, limit: 0xFFFF_FFFF, type: 0x3, db: true, g: true)
        sregs.cs = .make(selector: 0x10, base: 0, limit: 0xFFFF_FFFF, type: 0xB, l: true, g: true)
        sregs.ds = data; sregs.es = data; sregs.fs = data; sregs.gs = data; sregs.ss = data
        sregs.gdt.base = gdt; sregs.gdt.limit = 7 * 8 - 1
        sregs.cr3 = pml4
        sregs.cr4 = 1 << 5                            // PAE
        sregs.cr0 = 0x8000_0011                       // PG | ET | PE
        sregs.efer = (1 << 8) | (1 << 10)             // LME | LMA
        try vcpu.setSpecialRegisters(sregs)
    }

    private static func build(_ memory: GuestMemory) throws {
        try memory.writeInteger(UInt64(0x2007), at: GuestAddress(pml4))          // P | W | U
        try memory.writeInteger(UInt64(0x3007), at: GuestAddress(0x2000))
        try memory.writeInteger(UInt64(0x0087), at: GuestAddress(0x3000))        // 2 MiB at 0, P | W | U | PS
        let entries: [UInt64] = [0, 0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF, 0,
                                 0x00CF_F300_0000_FFFF, 0x00AF_FB00_0000_FFFF]   // 0x10, 0x18, 0x2b, 0x33
        for (i, e) in entries.enumerated() { try memory.writeInteger(e, at: GuestAddress(gdt + UInt64(i) * 8)) }
        let nop: UInt8 = 0x90, out: [UInt8] = [0xE6, 0x10]                       // out %al, $0x10
        try memory.write([nop, nop] + out, at: GuestAddress(kernelStep))
        try memory.write([nop, nop, nop] + out, at: GuestAddress(kernelExec))
        try memory.write([0xC7, 0x04, 0x25, 0x00, 0x50, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, nop] + out,
                         at: GuestAddress(kernelWrite))                           // movl $1, 0x5000
        try memory.write([0xCC, nop] + out, at: GuestAddress(kernelInt3))
        // push $0x2b; push $stackTop; push $2; push $0x33; push %r13; iretq
        try memory.write([0x6A, 0x2B, 0x68, 0x00, 0xF0, 0x00, 0x00, 0x6A, 0x02, 0x6A, 0x33, 0x41, 0x55, 0x48, 0xCF],
                         at: GuestAddress(toUser))
        try memory.write([nop, nop] + out, at: GuestAddress(userStep))
        try memory.write([nop, nop, nop] + out, at: GuestAddress(userExec))
    }
}
