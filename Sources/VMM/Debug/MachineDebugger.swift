import GuestMemory
import KVM
import Synchronization

/// A debugger's control of a machine (what libvmmapi gives bhyve's gdb stub: per-vCPU
/// suspend and resume, guest debug, register and guest-virtual memory access), in
/// all-stop mode: when any vCPU stops for the debugger, every vCPU stops.
///
/// One client drives it at a time, from one thread: `attach`, then `resume`/`takeStop`
/// (or `interrupt`), register and memory access while stopped, `detach`. The vCPU
/// threads call in only on `KVM_EXIT_DEBUG` and on a refused `int3` (through the
/// emulation assist's claimant hook): no other exit pays anything for the debugger.
///
/// How a stop travels: the vCPU that hits a breakpoint records it, asks every vCPU to
/// pause without waiting (a vCPU thread must never wait for another), and calls the
/// `onStop` notification; the client then calls `takeStop()`, which waits until every
/// vCPU is out of the guest and returns the stop.
public final class MachineDebugger: @unchecked Sendable {
    // @unchecked: the stored lets are immutable and thread-safe; all mutable state is in `state`.
    let runners: [VCPURunner]
    let memory: GuestMemory
    let kvm: KVMSystem
    /// MAXPHYADDR and 1-GiB page support, for the page walk (from the guest's CPUID).
    let physicalAddressBits: Int
    let gigabytePages: Bool
    /// Whether KVM can hold interrupts back during a single step (`KVM_CAP_SET_GUEST_DEBUG2`),
    /// asked when the machine is built: a sandboxed worker may not ask later.
    private let blockInterruptsWhileStepping: Bool
    /// Stops the machine when a debug exit cannot be handled (an ioctl failed).
    private let fail: @Sendable (String) -> Void
    let state = Mutex(State())
    /// `state.attached`, readable without the lock: the assist's paths ask it first, so
    /// a machine without a client pays one relaxed load there and nothing more.
    private let attachedFlag = Atomic<Bool>(false)

    struct State {
        var attached = false
        var support = GuestDebugSupport()
        var notify: (@Sendable () -> Void)?
        /// Stops recorded by vCPU threads and not yet taken.
        var pending: [DebugStop] = []
        /// Planted `int3`s by the virtual address the client gave.
        var planted: [UInt64: PlantedBreakpoint] = [:]
        /// DR0-DR3.
        var slots: [HardwareSlot?] = [nil, nil, nil, nil]
        /// Write watchpoints emulated by single-stepping (hosts without data breakpoints).
        var emulated: [EmulatedWatch] = []
        /// What each vCPU was last resumed with.
        var actions: [ResumeAction] = []
        /// vCPUs the owner had paused before the debugger came: detach leaves them paused.
        var pausedBeforeAttach: Set<Int> = []
        var blockInterruptsWhileStepping = false
    }

    struct PlantedBreakpoint {
        let physical: UInt64
        var original: UInt8
    }

    /// Hands the debugger the `int3`s the host refuses (emulation failures), while attached.
    let assist: EmulationAssist?

    init(runners: [VCPURunner], memory: GuestMemory, kvm: KVMSystem, cpuid: [CPUIDEntry], assist: EmulationAssist?,
         fail: @escaping @Sendable (String) -> Void) {
        self.runners = runners
        self.assist = assist
        self.memory = memory
        self.kvm = kvm
        self.fail = fail
        blockInterruptsWhileStepping = kvm.supportedGuestDebugControl()?.contains(.blockInterrupts) ?? false
        let addressSizes = cpuid.first { $0.function == 0x8000_0008 }
        physicalAddressBits = addressSizes.map { Int($0.eax & 0xFF) } ?? 36
        gigabytePages = cpuid.first { $0.function == 0x8000_0001 }.map { $0.edx & (1 << 26) != 0 } ?? false
    }

    /// The index in `runners` of the vCPU with KVM id `id`. A search, not a dictionary
    /// built at init: every machine builds its debugger, and a `[UInt32: Int]`'s first use
    /// costs a cold `vmmctl run` ~0.1 ms of generic metadata and conformance lookups.
    private func index(of id: UInt32) -> Int? {
        runners.firstIndex { $0.id == id }
    }

    /// The number of vCPUs (debugger threads).
    public var vcpuCount: Int { runners.count }

    /// Whether a client is attached.
    public var isAttached: Bool { attachedFlag.load(ordering: .acquiring) }

    // MARK: - Attach and detach

    /// Attaches a client and returns what guest debugging can do on this host. `onStop`
    /// is called, on whichever thread hit it, each time a stop is waiting for `takeStop()`.
    /// The vCPUs are not stopped: call `interrupt()` for that.
    public func attach(onStop: @escaping @Sendable () -> Void) throws -> GuestDebugSupport {
        let support = GuestDebugSupport.probe(kvm)
        let block = blockInterruptsWhileStepping
        try state.withLock { s in
            guard !s.attached else { throw MachineError.invalidState("a debugger is already attached") }
            s = State()
            s.attached = true
            s.support = support
            s.notify = onStop
            s.actions = Array(repeating: .run, count: runners.count)
            s.pausedBeforeAttach = Set(runners.indices.filter { runners[$0].state == .paused })
            s.blockInterruptsWhileStepping = block
        }
        attachedFlag.store(true, ordering: .releasing)
        assist?.setBreakpointClaimant(self)
        return support
    }

    /// Detaches: every breakpoint and watchpoint removed (planted bytes put back), guest
    /// debug off, and every vCPU running again (except those the owner had paused).
    public func detach() {
        stopAll()
        let keepPaused = state.withLock { s -> Set<Int> in
            let planted = s.planted.values
            let keep = s.pausedBeforeAttach
            s = State()
            for bp in planted { restore(bp, in: s) }
            return keep
        }
        attachedFlag.store(false, ordering: .releasing)
        assist?.setBreakpointClaimant(nil)
        for r in runners { try? Self.onVCPUThread(r) { try $0.setGuestDebug([]) } }
        for (i, r) in runners.enumerated() where !keepPaused.contains(i) { r.resume() }
    }

    // MARK: - Stopping and resuming

    /// Stops every vCPU and returns once all are out of the guest.
    public func stopAll() {
        for r in runners { r.pause() }
    }

    /// After `onStop`: stops every vCPU and returns the first stop recorded, or nil when
    /// there is none (it was taken already). Breakpoint hits of other vCPUs in the same
    /// burst are dropped (they hit again when those vCPUs run); traps are kept for the
    /// next `resume`, which reports them instead of running.
    public func takeStop() -> DebugStop? {
        stopAll()
        return state.withLock { s -> DebugStop? in
            guard !s.pending.isEmpty else { return nil }
            let first = s.pending.removeFirst()
            s.pending.removeAll { !$0.isTrap }
            return first
        }
    }

    /// Stops every vCPU at the client's request (Ctrl-C): the stop is a pending event if
    /// one raced with the request, else `.interrupted` on `vcpu`.
    public func interrupt(vcpu: Int) -> DebugStop {
        takeStop() ?? DebugStop(vcpu: vcpu, reason: .interrupted)
    }

    /// Runs the machine again, each vCPU as `actions` says (one entry per vCPU). Returns
    /// false, running nothing, when a stop is still waiting: `onStop` is called again for it.
    public func resume(_ actions: [ResumeAction]) throws -> Bool {
        guard actions.count == runners.count else {
            throw MachineError.invalidState("resume needs one action per vCPU (\(runners.count))")
        }
        let (notify, waiting) = state.withLock { s in (s.notify, !s.pending.isEmpty) }
        if waiting {
            notify?()
            return false
        }
        let plan = state.withLock { s -> [(GuestDebugControl, GuestDebugRegisters)] in
            for i in s.emulated.indices { s.emulated[i].refresh(memory) }
            s.actions = actions
            return actions.map { guestDebug(for: $0, s) }
        }
        for (i, r) in runners.enumerated() where actions[i] != .stay {
            let (control, registers) = plan[i]
            try Self.onVCPUThread(r) { vcpu in
                try vcpu.setGuestDebug(control, registers: registers)
                try Self.stepPastExecutionBreakpoint(vcpu, registers)
            }
        }
        for (i, r) in runners.enumerated() where actions[i] != .stay { r.resume() }
        return true
    }

    /// The `KVM_SET_GUEST_DEBUG` a vCPU runs with.
    private func guestDebug(for action: ResumeAction, _ s: State) -> (GuestDebugControl, GuestDebugRegisters) {
        var control: GuestDebugControl = []
        if !s.planted.isEmpty { control.insert(.useSoftwareBreakpoints) }
        let registers = HardwareSlot.debugRegisters(s.slots)
        if registers.dr7 & 0xFF != 0 { control.insert(.useHardwareBreakpoints) }
        if action == .step {
            control.insert(.singleStep)
            if s.blockInterruptsWhileStepping { control.insert(.blockInterrupts) }
        }
        if !s.emulated.isEmpty { control.insert(.singleStep) }
        if !control.isEmpty { control.insert(.enable) }
        return (control, registers)
    }

    /// RFLAGS.RF on a vCPU resumed on an execution breakpoint, so that the instruction
    /// runs instead of hitting the breakpoint again (SDM vol. 3B 18.3.1.1).
    private static func stepPastExecutionBreakpoint(_ vcpu: KVMVCPU, _ registers: GuestDebugRegisters) throws {
        guard registers.dr7 & 0xFF != 0 else { return }
        let values = try vcpu.registers([.rip, .rflags, .segmentBase(.cs)])
        let linear = values[0] &+ values[2]
        let onBreakpoint = (0 ..< 4).contains { slot in
            registers.dr7 & (1 << (2 * UInt64(slot))) != 0 && (registers.dr7 >> (16 + 4 * UInt64(slot))) & 3 == 0
                && registers[slot] == linear
        }
        if onBreakpoint { try vcpu.setRegisters([(.rflags, values[1] | (1 << 16))]) }
    }

    // MARK: - The vCPU side

    /// `KVM_EXIT_DEBUG` on a vCPU thread.
    func handleDebugExit(_ event: DebugEvent, on runner: VCPURunner) {
        guard let index = index(of: runner.id) else { return }
        switch event.exception {
        case 3:
            // #BP from a KVM that intercepts int3 (KVM_GUESTDBG_USE_SW_BP): RIP is on it.
            if claimBreakpoint(index, runner.vcpu, linear: event.pc) { return }
            do { try runner.vcpu.injectException(vector: 3) } catch { fail("vCPU \(runner.id): giving the guest its int3: \(error)") }
        case 1:
            let reason = state.withLock { s -> DebugStop.Reason?? in
                guard s.attached else { return .some(nil) }
                let slots = event.dr6 & 0xF
                for slot in 0 ..< 4 where slots & (1 << UInt64(slot)) != 0 {
                    if let hit = s.slots[slot] { return hit.reason }
                }
                guard event.dr6 & (1 << 14) != 0 else { return nil }  // not a step, not ours
                for i in s.emulated.indices where s.emulated[i].changed(memory) {
                    return .watchpoint(.write, address: s.emulated[i].address)
                }
                if index < s.actions.count, s.actions[index] == .step { return .singleStep }
                return s.emulated.isEmpty ? nil : .some(nil)  // stepping for watchpoints: go on
            }
            switch reason {
            case .some(.some(let r)): report(DebugStop(vcpu: index, reason: r))
            case .some(.none): break
            case .none:
                // The guest's own #DB (its TF or its debug registers): hand it back.
                do {
                    var dr = try runner.vcpu.debugRegisters()
                    dr.dr6 = event.dr6
                    try runner.vcpu.setDebugRegisters(dr)
                    try runner.vcpu.injectException(vector: 1)
                } catch {
                    fail("vCPU \(runner.id): giving the guest its debug exception: \(error)")
                }
            }
        default:
            break
        }
    }

    /// After the emulation assist finished an instruction on a vCPU thread: KVM did not
    /// run it, so no single-step exit follows; a vCPU being stepped (or watched) stops here.
    func finishedInstruction(on runner: VCPURunner) {
        guard attachedFlag.load(ordering: .relaxed), let index = index(of: runner.id) else { return }
        let reason = state.withLock { s -> DebugStop.Reason? in
            guard s.attached else { return nil }
            for i in s.emulated.indices where s.emulated[i].changed(memory) {
                return .watchpoint(.write, address: s.emulated[i].address)
            }
            return index < s.actions.count && s.actions[index] == .step ? .singleStep : nil
        }
        if let reason { report(DebugStop(vcpu: index, reason: reason)) }
    }

    /// Whether the `int3` at `linear` on `vcpu` is one the debugger planted (compared by
    /// physical address, so an alias of the page is ours too); if so the stop is reported.
    func claimBreakpoint(_ index: Int, _ vcpu: KVMVCPU, linear: UInt64) -> Bool {
        guard attachedFlag.load(ordering: .relaxed), state.withLock({ $0.attached && !$0.planted.isEmpty }),
              let sregs = try? vcpu.specialRegisters(),
              let translation = try? memory.translate(linear, paging: paging(sregs), access: .debugger(.execute))
        else { return false }
        let physical = translation.physical.raw
        guard state.withLock({ s in s.planted.values.contains { $0.physical == physical } }) else { return false }
        report(DebugStop(vcpu: index, reason: .softwareBreakpoint(address: linear)))
        return true
    }

    /// The emulation assist's claimant hook (a refused `int3` at CPL 0): `rip` is RIP.
    public func claims(vcpu id: UInt32, rip: UInt64) -> Bool {
        guard let index = index(of: id), let sregs = try? runners[index].vcpu.specialRegisters() else { return false }
        let linear = sregs.cs.l == 1 ? rip : (sregs.cs.base &+ rip) & 0xFFFF_FFFF
        return claimBreakpoint(index, runners[index].vcpu, linear: linear)
    }

    private func report(_ stop: DebugStop) {
        let notify = state.withLock { s -> (@Sendable () -> Void)? in
            guard s.attached else { return nil }
            s.pending.append(stop)
            return s.notify
        }
        guard let notify else { return }
        for r in runners { r.requestPause() }
        notify()
    }

    // MARK: - vCPU state

    /// Runs `body` with a vCPU that is out of the guest (stopped, paused or not started);
    /// fails for a running one: its registers cannot be read or written meanwhile.
    public func withStoppedVCPU<T>(_ index: Int, _ body: @escaping @Sendable (KVMVCPU) throws -> T) throws -> T {
        guard runners.indices.contains(index) else { throw MachineError.invalidState("no vCPU \(index)") }
        guard runners[index].state != .running else { throw MachineError.invalidState("vCPU \(index) is running") }
        return try Self.onVCPUThread(runners[index], body)
    }

    /// `body` on the vCPU's own thread when it is paused or not started, as KVM wants vCPU
    /// ioctls (api.rst, "vcpu ioctls"; `VCPURunner.onOwnThread`). A stopped vCPU (its guest
    /// ended) is used from here: onOwnThread refuses it, as its thread may have ended.
    static func onVCPUThread<T>(_ runner: VCPURunner, _ body: @escaping @Sendable (KVMVCPU) throws -> T) throws -> T {
        runner.isParked ? try runner.onOwnThread(body) : try body(runner.vcpu)
    }

    /// How `sregs` translates addresses, with this machine's MAXPHYADDR.
    func paging(_ sregs: SpecialRegisters) -> PagingMode {
        PagingMode(cr0: sregs.cr0, cr3: sregs.cr3, cr4: sregs.cr4, efer: sregs.efer,
                   physicalAddressBits: physicalAddressBits, gigabytePages: gigabytePages)
    }

    /// The paging mode of a stopped vCPU.
    public func paging(of index: Int) throws -> PagingMode {
        try withStoppedVCPU(index) { [self] in paging(try $0.specialRegisters()) }
    }
}

/// The emulation assist asks before it treats a refused `int3` as the guest's own.
extension MachineDebugger: BreakpointClaimant {}
