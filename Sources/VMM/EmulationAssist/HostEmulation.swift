import Dispatch
import GuestMemory
import KVM
import Synchronization

/// What this host's KVM needs the VMM to finish, found by running a probe VM once per
/// process (`HostEmulation.probe`): a 64-bit guest that executes `int3` at CPL 0, drops to
/// CPL 3 with `iretq`, makes a `syscall`, and finally tries `vmcall` at CPL 0.
///
/// On hardware-virtualised KVM all three just work. On a KVM that emulates CPL 0 (PVM,
/// README, "The KVM on these machines"): `int3` is an emulation failure, `syscall` stays at
/// CPL 3 and faults at LSTAR, and `vmcall` never comes back (KVM's emulator "fixes" the
/// hypercall instruction and re-executes it, forever, inside `KVM_RUN`).
public struct HostEmulation: Sendable, Equatable, CustomStringConvertible {
    /// CPL-0 instructions such as `int3` end in an emulation failure.
    public var refusesInstructions = false
    /// A 64-bit `syscall` from CPL 3 does not reach CPL 0.
    public var syscallBroken = false
    /// `vmcall` at CPL 0 does not return (no exit, RIP stays on it).
    public var hypercallsHang = false
    /// Set when the probe itself could not run to the end; the flags say what it saw.
    public var probeError: String?

    public init(refusesInstructions: Bool = false, syscallBroken: Bool = false, hypercallsHang: Bool = false,
                probeError: String? = nil) {
        self.refusesInstructions = refusesInstructions
        self.syscallBroken = syscallBroken
        self.hypercallsHang = hypercallsHang
        self.probeError = probeError
    }

    /// Whether a VM here needs the emulation assist (`EmulationAssistMode.auto`).
    public var needsAssist: Bool { refusesInstructions || syscallBroken || hypercallsHang || probeError != nil }

    public var description: String {
        // Appended, not `[String].joined`: vmmctl logs this at every start, and joined's
        // first use in a process costs ~0.25 ms of associated-type witness lookups.
        var text = ""
        func add(_ part: String) { text += (text.isEmpty ? "" : "; ") + part }
        if refusesInstructions { add("refuses CPL-0 instructions (int3, clac, popcnt, cmpxchg16b, ...)") }
        if syscallBroken { add("breaks 64-bit syscall") }
        if hypercallsHang { add("never returns from vmcall") }
        if let probeError { add("probe incomplete: \(probeError)") }
        return text.isEmpty ? "hardware-virtualised (nothing to assist)" : text
    }

    private static let cached = Mutex<HostEmulation?>(nil)

    /// How long the probe's `vmcall` may take before it counts as hanging, by default.
    public static let defaultHangTimeoutMS = 10

    /// This process's answer so far: the probe's, or the one `assume` was given; nil
    /// before either.
    public static var known: HostEmulation? { cached.withLock { $0 } }

    /// Takes `answer` (found by an earlier process on this host: `HostEmulationCache`)
    /// as this process's, so that `probe` runs no probe VM; no effect once there is one.
    public static func assume(_ answer: HostEmulation) { cached.withLock { $0 = $0 ?? answer } }

    /// The probe's answer for this process (run on the first call: a few ms, plus
    /// `hangTimeoutMS` where `vmcall` hangs). A vmm-worker under vmmd is handed the
    /// daemon's answer instead (`assume`). `hangTimeoutMS`: how long a `vmcall` may take
    /// before it counts as hanging; a caller off the critical path (vmmd, whose answer
    /// every worker takes) waits longer, so that a descheduled probe thread is not
    /// mistaken for a hang.
    public static func probe(_ kvm: KVMSystem, hangTimeoutMS: Int = defaultHangTimeoutMS) -> HostEmulation {
        if let known = cached.withLock({ $0 }) { return known }
        let result = HostProbeVM.run(kvm, hangTimeoutMS: hangTimeoutMS)
        cached.withLock { $0 = $0 ?? result }
        return cached.withLock { $0 } ?? result
    }

    /// A probe VM run now, whatever this process found before: for a caller that checks
    /// an answer before it keeps it (vmmd confirms a hang before caching it).
    public static func probeAgain(_ kvm: KVMSystem, hangTimeoutMS: Int = defaultHangTimeoutMS) -> HostEmulation {
        HostProbeVM.run(kvm, hangTimeoutMS: hangTimeoutMS)
    }
}

/// The probe VM: 64 KiB of memory, identity-mapped 4-KiB pages (pages 8 and 9 user),
/// Linux's GDT layout (kernel CS/SS 0x10/0x18, user CS/SS 0x33/0x2b), an IDT with #BP and
/// #PF handlers, a TSS with RSP0. Each step reports on port 0x10.
enum HostProbeVM {
    static let reportPort: UInt16 = 0x10
    /// A vmcall that has not returned after this long never will: on hardware KVM it takes
    /// microseconds. A false "hangs" (the probe thread descheduled that long) only hides
    /// the PV hypercall features and watches for stalled vmcalls, which is harmless.
    static let hangTimeoutMS = HostEmulation.defaultHangTimeoutMS

    // Report values.
    static let afterInt3: UInt64 = 1, int3Delivered: UInt64 = 2, syscallAtCPL0: UInt64 = 3
    static let userPageFault: UInt64 = 4, afterVmcall: UInt64 = 5

    static let kernelCode: UInt64 = 0xA000, bpHandler: UInt64 = 0xA020, pfHandler: UInt64 = 0xA030
    static let syscallEntry: UInt64 = 0xA040, vmcallCode: UInt64 = 0xA050, userCode: UInt64 = 0x8000

    static func run(_ kvm: KVMSystem, hangTimeoutMS: Int = hangTimeoutMS) -> HostEmulation {
        var result = HostEmulation()
        do {
            let probe = try ProbeVM(kvm: kvm, build: build)
            let vcpu = probe.vcpu
            try enterLongMode(vcpu)
            try firstRun(vcpu, &result)
            try vmcallRun(vcpu, &result, timeoutMS: hangTimeoutMS)
            withExtendedLifetime(probe) {}  // guest memory stays mapped while the vCPU runs
        } catch let error as ProbeError {
            result.probeError = error.why
        } catch {
            result.probeError = "\(error)"
        }
        return result
    }

    struct ProbeError: Error { let why: String }

    /// int3, iretq to CPL 3, syscall.
    private static func firstRun(_ vcpu: KVMVCPU, _ result: inout HostEmulation) throws {
        for _ in 0 ..< 16 {
            let exit = try vcpu.runOnce()
            switch exit {
            case .internalError(1, _):
                let rip = try vcpu.registers([.rip])[0]
                guard rip == kernelCode else { throw ProbeError(why: "emulation failure at 0x\(String(rip, radix: 16))") }
                result.refusesInstructions = true
                try vcpu.setRegisters([(.rip, rip + 1)])
            case .io(let io) where io.port == reportPort && io.direction == .out:
                switch vcpu.ioValue(io) & 0xFF {
                case afterInt3, int3Delivered: continue
                case syscallAtCPL0: return
                case userPageFault: result.syscallBroken = true; return
                case let other: throw ProbeError(why: "unexpected report \(other)")
                }
            case .interrupted:
                continue
            default:
                throw ProbeError(why: "unexpected exit \(exit)")
            }
        }
        throw ProbeError(why: "too many exits")
    }

    /// vmcall at CPL 0, on a thread of its own: a hang is a KVM_RUN that only a kick ends.
    private static func vmcallRun(_ vcpu: KVMVCPU, _ result: inout HostEmulation, timeoutMS: Int) throws {
        var sregs = try vcpu.specialRegisters()
        sregs.cs = .make(selector: 0x10, base: 0, limit: 0xFFFF_FFFF, type: 0xB, l: true, g: true)
        sregs.ss = .make(selector: 0x18, base: 0, limit: 0xFFFF_FFFF, type: 0x3, db: true, g: true)
        try vcpu.setSpecialRegisters(sregs)
        try vcpu.setRegisters([(.rip, vmcallCode), (.rsp, 0x7F00), (.rflags, 2), (.rax, 0xFFFF)])

        VCPUKick.installHandler()
        let done = DispatchSemaphore(value: 0)
        let outcome = Mutex<Result<VCPUExit, Error>?>(nil)
        let thread = try HostThread(name: "kvm-probe") {
            VCPUKick.unblockOnCurrentThread()
            let r = Result { try vcpu.runOnce() }
            outcome.withLock { $0 = r }
            done.signal()
        }
        if done.wait(timeout: .now() + .milliseconds(timeoutMS)) == .timedOut {
            vcpu.requestImmediateExit(true)
            while done.wait(timeout: .now() + .milliseconds(1)) == .timedOut { VCPUKick.kick(thread.handle) }
        }
        thread.join()
        let exit = try outcome.withLock { $0 }?.get()
        let rip = try vcpu.registers([.rip])[0]
        if case .io(let io)? = exit, io.port == reportPort, vcpu.ioValue(io) & 0xFF == afterVmcall { return }
        if rip == vmcallCode, exit == .interrupted { result.hypercallsHang = true; return }
        throw ProbeError(why: "vmcall: exit \(exit.map { "\($0)" } ?? "none") at 0x\(String(rip, radix: 16))")
    }

    private static func enterLongMode(_ vcpu: KVMVCPU) throws {
        var sregs = try vcpu.specialRegisters()
        let data = Segment.make(selector: 0x18, base: 0, limit: 0xFFFF_FFFF, type: 0x3, db: true, g: true)
        sregs.cs = .make(selector: 0x10, base: 0, limit: 0xFFFF_FFFF, type: 0xB, l: true, g: true)
        sregs.ds = data; sregs.es = data; sregs.fs = data; sregs.gs = data; sregs.ss = data
        sregs.tr = .make(selector: 0x38, base: 0x6800, limit: 0x67, type: 0xB, s: false)
        sregs.gdt.base = 0x5000; sregs.gdt.limit = 0x47
        sregs.idt.base = 0x6000; sregs.idt.limit = 32 * 16 - 1
        sregs.cr3 = 0x1000
        sregs.cr4 = 1 << 5                     // PAE
        sregs.cr0 = 0x8000_0011                // PG | ET | PE
        sregs.efer = (1 << 0) | (1 << 8) | (1 << 10)  // SCE | LME | LMA
        try vcpu.setSpecialRegisters(sregs)
        try vcpu.setRegisters([(.rip, kernelCode), (.rsp, 0x7F00), (.rflags, 2)])
        try vcpu.setMSRs([(index: SyscallRepair.msrSTAR, value: (0x10 << 32) | (0x20 << 48)),
                          (index: SyscallRepair.msrLSTAR, value: syscallEntry),
                          (index: SyscallRepair.msrSFMASK, value: 0x200)])
    }

    private static func build(_ memory: GuestMemory) throws {
        let p: UInt64 = 1, w: UInt64 = 2, u: UInt64 = 4
        try memory.writeInteger(0x2000 | p | w | u, at: GuestAddress(0x1000))
        try memory.writeInteger(0x3000 | p | w | u, at: GuestAddress(0x2000))
        try memory.writeInteger(0x4000 | p | w | u, at: GuestAddress(0x3000))
        for page: UInt64 in 1 ..< 16 {
            let user = page == 8 || page == 9 ? u : 0
            try memory.writeInteger(page << 12 | p | w | user, at: GuestAddress(0x4000 + page * 8))
        }
        let gdt: [UInt64] = [0, 0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF, 0x00CF_FB00_0000_FFFF,
                             0x00CF_F300_0000_FFFF, 0x00AF_FB00_0000_FFFF, 0x0000_8B00_6800_0067, 0]
        for (i, entry) in gdt.enumerated() { try memory.writeInteger(entry, at: GuestAddress(0x5000 + UInt64(i) * 8)) }
        for (vector, handler) in [(UInt64(3), bpHandler), (14, pfHandler)] {
            let gate = (handler & 0xFFFF) | (0x10 << 16) | (0x8E << 40) | ((handler >> 16 & 0xFFFF) << 48)
            try memory.writeInteger(gate, at: GuestAddress(0x6000 + vector * 16))
            try memory.writeInteger(handler >> 32, at: GuestAddress(0x6008 + vector * 16))
        }
        try memory.writeInteger(UInt64(0x7F00), at: GuestAddress(0x6804))  // TSS.RSP0
        let out: (UInt8) -> [UInt8] = { [0xB0, $0, 0xE6, UInt8(reportPort)] }  // mov $v, %al; out %al, $0x10
        let kernel: [UInt8] = [0xCC] + out(UInt8(afterInt3))
            + [0x6A, 0x2B, 0x68, 0x00, 0x9F, 0x00, 0x00, 0x6A, 0x02, 0x6A, 0x33, 0x68, 0x00, 0x80, 0x00, 0x00, 0x48, 0xCF]  // iretq to 0x33:0x8000
        try memory.write(kernel, at: GuestAddress(kernelCode))
        try memory.write(out(UInt8(int3Delivered)) + [0x48, 0xCF], at: GuestAddress(bpHandler))
        try memory.write(out(UInt8(userPageFault)) + [0xF4], at: GuestAddress(pfHandler))
        try memory.write(out(UInt8(syscallAtCPL0)) + [0xF4], at: GuestAddress(syscallEntry))
        try memory.write([0x0F, 0x01, 0xC1] + out(UInt8(afterVmcall)) + [0xF4], at: GuestAddress(vmcallCode))
        try memory.write([0x0F, 0x05, 0xEB, 0xFE], at: GuestAddress(userCode))  // syscall; jmp .
    }
}
