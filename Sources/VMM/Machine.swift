import Boot
import Devices
import Dispatch
import GuestMemory
import Hypercalls
import KVM
import Synchronization

/// A virtual machine: guest memory, vCPUs, devices and a booted image, on one KVM VM.
///
/// This is the library's main entry point (what libvmmapi's `vm_create` + `vm_setup_memory`
/// + bhyve's device setup are together):
///
///     let machine = try Machine(config: config)
///     let reason = try machine.run()      // blocks until the guest stops
///
/// `start()`/`waitForStop()` split `run()` for callers that pause, resume or inspect the
/// machine while it runs. A machine belongs to the process that created it (KVM binds a
/// VM to its creator's address space).
public final class Machine: @unchecked Sendable {
    // @unchecked: the stored components are immutable after init and thread-safe
    // themselves; mutable run state is behind `stopState`.
    public let config: MachineConfig
    public let kvm: KVMSystem
    public let vm: KVMVM
    public let memory: GuestMemory
    public let vcpus: [VCPURunner]
    public let portIO: PortIOBus
    public let mmio: MMIOBus
    public let serial: Serial16550
    public let postCode: PostCode
    /// The VMM's IOAPIC with a split irqchip (`IRQChipMode.split`); nil when KVM's
    /// in-kernel irqchip has it, or there are no interrupt controllers.
    public let ioapic: IOAPIC?
    /// Where the virtio devices are (MMIO windows and GSIs, in device order).
    public let deviceLayout: DeviceLayout
    let virtioDevices: [VirtioDeviceHost]
    /// The loaded image's format.
    public private(set) var bootFormat: BootImageFormat
    /// The vCPUs are as KVM_CREATE_VCPU made them (from their creation to the first image
    /// load, never for a restored machine): already in the power-on state, so that load
    /// skips most of `resetToPowerOnState`.
    private var vcpusAsCreated = true
    /// KVM's XSAVE area layout (KVM_CAP_XSAVE2), asked once at creation: a worker's sandbox
    /// forbids KVM_CHECK_EXTENSION later, when a reboot resets MXCSR through the area.
    let xsaveLayout: KVMVCPU.XSAVELayout?
    /// Guest resets that were turned into reboots.
    public let reboots = Atomic<UInt64>(0)

    /// Features the CPU template hides that KVM still shows the guest (read back after
    /// KVM_SET_CPUID2); empty when the template took effect.
    public private(set) var featuresTemplateCouldNotHide: [CPUFeature] = []
    /// The command line the kernel gets: the configured one, plus what the CPU template
    /// asks of a Linux kernel when KVM could not hide a feature (`Machine+Platform`).
    public private(set) var commandLine = ""

    /// The hypercall table when hypercalls are enabled.
    public let hypercalls: HypercallRegistry?
    /// vCPU control for a debugger (the gdb stub): breakpoints, single-step, all-stop.
    public let debugger: MachineDebugger
    /// What finishes the instructions this host's KVM refuses; nil when off or not needed.
    public let emulationAssist: EmulationAssist?
    let vmStatistics: StatisticsFile?
    let vcpuStatistics: [StatisticsFile?]
    let supportedCPUID: [CPUIDEntry]
    private let stopState = Mutex<StopReason?>(nil)
    private let stopped = DispatchSemaphore(value: 0)
    private let running = Mutex(false)
    /// Set by `reboot()`: the next `.reset` stop reboots even when `rebootOnReset` is off.
    private let rebootRequested = Atomic<Bool>(false)
    /// Snapshot state: the last snapshot (a diff's parent), the restore generation.
    let snapshots = SnapshotBookkeeping()

    deinit {
        for runner in vcpus { runner.terminate() }
        for device in virtioDevices { device.stop() }
    }

    /// Identity-map page and TSS for Intel VMX, just below the 4 GiB BIOS area.
    static let identityMapAddress: UInt64 = 0xFFFB_C000
    static let tssAddress: UInt32 = 0xFFFB_D000

    /// Builds the machine and loads the image; nothing runs until `run()` or `start()`.
    ///
    /// - Parameters:
    ///   - kvm: an open `/dev/kvm` (e.g. handed over by a daemon); opened here if nil.
    ///   - memory: guest memory built by the caller, e.g. from memfds a supervisor owns so
    ///     that they outlive this machine; its RAM must be `config.memoryMiB`. Created
    ///     here if nil.
    public convenience init(config: MachineConfig, kvm: KVMSystem? = nil, memory providedMemory: GuestMemory? = nil) throws {
        try self.init(config: config, kvm: kvm, memory: providedMemory, restoring: nil)
    }

    /// The machine of `config`, booting its image — or, with a restore plan, taking the
    /// snapshot's CPUID and state instead (`Machine.restore`).
    init(config: MachineConfig, kvm: KVMSystem?, memory providedMemory: GuestMemory?, restoring plan: RestorePlan?) throws {
        let topology = try Self.validate(config)
        if let providedMemory, providedMemory.ramSize != config.memoryMiB << 20 {
            throw MachineError.invalidConfig("the memory handed in holds \(providedMemory.ramSize >> 20) MiB of RAM, the config asks for \(config.memoryMiB) MiB")
        }
        self.config = config
        self.kvm = try kvm ?? KVMSystem()
        vm = try self.kvm.createVM()
        try vm.setIdentityMapAddress(Self.identityMapAddress)
        try vm.setTSSAddress(Self.tssAddress)

        memory = try providedMemory ?? GuestMemory.create(ramSize: config.memoryMiB << 20)
        for (slot, segment) in memory.segments.enumerated() {
            var flags: KVMVM.MemoryFlags = segment.readOnly ? .readOnly : []
            if config.trackDirtyPages { flags.insert(.logDirtyPages) }
            try vm.setMemoryRegion(slot: UInt32(slot), guestAddress: segment.guestBase.raw, size: segment.size,
                                   hostAddress: segment.hostAddress, flags: flags)
        }
        if config.trackDirtyPages && plan == nil { memory.writeLog.enable() }
        // A restore takes the snapshot's assist as it was (no probe), or none.
        if let plan {
            emulationAssist = Self.restoredEmulationAssist(plan, memory: memory)
        } else {
            emulationAssist = Self.makeEmulationAssist(config, kvm: self.kvm, memory: memory)
        }
        ioapic = try Self.createInterruptControllers(config, vm: vm, topology: topology)
        let interrupts = InterruptWiring(vm: vm, ioapic: ioapic, enabled: config.inKernelIRQChip)

        let relay = PlatformEventRelay()
        let events: PlatformEventSink = { relay.send($0) }
        portIO = PortIOBus()
        mmio = MMIOBus()
        serial = Serial16550(output: config.serialOutput,
                             irq: config.inKernelIRQChip ? interrupts.line(gsi: Serial16550.com1IRQ) : nil)
        postCode = PostCode()
        try portIO.register(serial, base: Serial16550.com1Port, length: Serial16550.portCount)
        try portIO.register(I8042(events: events), base: I8042.basePort, length: I8042.portCount)
        try portIO.register(ACPIPowerControl(events: events), base: ACPIPowerControl.defaultPort,
                            length: ACPIPowerControl.portCount)
        try portIO.register(postCode, base: PostCode.defaultPort, length: 1)
        if config.debugExit {
            try portIO.register(DebugExit(events: events), base: DebugExit.defaultPort, length: 1)
        }
        if let ioapic { try mmio.register(ioapic, base: IOAPIC.baseAddress, length: IOAPIC.windowSize) }
        (deviceLayout, virtioDevices) = try Self.buildVirtioDevices(config, vm: vm, memory: memory, bus: mmio, interrupts: interrupts)
        portIO.seal()
        mmio.seal()

        // A restore takes each vCPU's CPUID from the snapshot; the first one's also gives
        // the reset signature a reboot needs (KVM_GET_SUPPORTED_CPUID costs ~0.3 ms here).
        supportedCPUID = try plan?.vcpus.first?.cpuid ?? self.kvm.supportedCPUID()
        hypercalls = config.hypercalls ? config.hypercallRegistry : nil
        let handler = ExitDispatcher(portIO: portIO, mmio: mmio, machine: relay, memory: memory, hypercalls: hypercalls,
                                     assist: emulationAssist, ioapic: ioapic)
        let cpuid = Self.cpuidForAssist(config.cpuTemplate.apply(to: CPUIDBuilder.relocatingHypervisorLeaves(
            supportedCPUID, own: Self.hypercallLeaves(enabled: config.hypercalls))), emulationAssist, config)
        var runners: [VCPURunner] = []
        var stats: [StatisticsFile?] = []
        for index in 0 ..< config.cpus {
            let id = topology.apicID(ofIndex: index)  // the vCPU ID is its initial APIC ID
            let vcpu = try vm.createVCPU(id: id)
            try vcpu.setCPUID(plan?.vcpus[index].cpuid ?? CPUIDBuilder.entries(supported: cpuid, apicID: id, topology: topology))
            vcpu.setSyncRegisters(config.hypercalls)  // the doorbell reads and writes registers
            runners.append(VCPURunner(vcpu: vcpu, handler: handler))
            stats.append(try? vcpu.openStatistics())
        }
        vcpus = runners
        xsaveLayout = runners.first?.vcpu.xsaveLayout
        emulationAssist?.adopt(xsaveLayout: xsaveLayout)
        snapshots.prepare(kvm: self.kvm, xsave: xsaveLayout)
        debugger = MachineDebugger(runners: runners, memory: memory, kvm: self.kvm, cpuid: cpuid,
                                   assist: emulationAssist, fail: { relay.stop(.vmmError($0)) })
        handler.debug.target = debugger
        // Read back from this host's KVM, a restore's too: another host's KVM (the
        // snapshot's) may have hidden what this one passes through.
        featuresTemplateCouldNotHide = Self.checkTemplate(config, cpuid: try runners[0].vcpu.cpuid())
        commandLine = Self.withVirtioParameters(Self.commandLine(config, templateCouldNotHide: featuresTemplateCouldNotHide),
                                                config, layout: deviceLayout)
        vcpuStatistics = stats
        vmStatistics = try? vm.openStatistics()
        bootFormat = plan?.bootFormat ?? .pvhELF
        if plan == nil { bootFormat = try loadImage() }
        relay.target = self
        if let hypercalls { try BuiltinHypercalls.register(into: hypercalls, environment: HypercallHost(machine: self)) }
        if let plan {
            try applyRestore(plan)
            vcpusAsCreated = false   // they hold the snapshot's state: a reboot resets them fully
        }
    }

    /// Checks the configuration before anything is created; returns the vCPU topology.
    static func validate(_ config: MachineConfig) throws -> CPUTopology {
        guard config.memoryMiB << 20 >= BootLayout.minimumRAM, config.memoryMiB <= MachineConfig.maxMemoryMiB else {
            throw MachineError.invalidConfig("memory must be between \(BootLayout.minimumRAM >> 20) MiB and \(MachineConfig.maxMemoryMiB) MiB")
        }
        guard (1 ... MachineConfig.maxCPUs).contains(config.cpus) else {
            throw MachineError.invalidConfig("cpus must be between 1 and \(MachineConfig.maxCPUs)")
        }
        return try topology(of: config)
    }

    /// Resets every vCPU to its power-on state, (re)loads the image and boot data, and
    /// points the boot vCPU at the entry.
    private func loadImage() throws -> BootImageFormat {
        var request = BootRequest(kernel: config.kernel, initrd: config.initrd, commandLine: commandLine)
        request.rsdp = try writeACPITables()
        let (format, entry) = try ImageLoader.load(request, into: memory)
        let signature = CPUIDBuilder.signature(supportedCPUID)
        for runner in vcpus {
            if vcpusAsCreated && config.inKernelIRQChip {
                // KVM_CREATE_VCPU resets the vCPU as at power-on (kvm_vcpu_reset, not an
                // INIT): registers, segments, FPU, debug registers, no pending events, the
                // BSP runnable and the APs waiting for SIPI (KVMHandleTests'
                // aCreatedVCPUIsInThePowerOnState checks it against resetToPowerOnState).
                // Eight ioctls saved per vCPU, ~10 µs each here. Not the LAPIC: KVM's BSP
                // gets LVT0 in ExtINT mode (KVM_X86_QUIRK_LINT0_REENABLED), where a reset
                // masks it. Only with a LAPIC in the kernel: without one, what KVM leaves
                // in IA32_APIC_BASE depends on its version.
                try runner.vcpu.resetLAPIC()
            } else {
                try runner.vcpu.resetToPowerOnState(isBootstrap: runner.id == 0, cpuSignature: signature,
                                                    hasIRQChip: config.inKernelIRQChip, xsave: xsaveLayout)
            }
            try FirmwareMSRs.apply(to: runner.vcpu)
        }
        vcpusAsCreated = false
        try entry.apply(to: vcpus[0].vcpu)
        return format
    }

    /// Puts the machine back to power-on: every vCPU reset, the image and boot data
    /// reloaded, devices reset, guest memory otherwise kept (libvmmapi's `vm_reinit`).
    /// Only while it is not running.
    public func reset() throws {
        guard !running.withLock({ $0 }) else { throw MachineError.invalidState("reset needs a stopped machine") }
        try reloadForBoot()
        stopState.withLock { $0 = nil }
    }

    /// The image, boot data and vCPUs back to power-on, and the devices reset: what a
    /// reboot and `reset()` share.
    private func reloadForBoot() throws {
        emulationAssist?.reset()
        bootFormat = try loadImage()
        serial.reset()
        ioapic?.reset()
        for device in virtioDevices { device.transport.reset() }
    }

    /// Whether a stop for `reason` becomes a reboot: a guest reset when the config says
    /// so or the owner asked for it (`reboot()`), a triple fault under that policy.
    private func rebootsAfter(_ reason: StopReason) -> Bool {
        let ownerAsked = rebootRequested.exchange(false, ordering: .acquiringAndReleasing)
        switch reason {
        case .reset: return config.rebootOnReset || ownerAsked
        case .tripleFault: return config.rebootOnTripleFault
        default: return false
        }
    }

    // MARK: - Running

    /// Runs the guest until it stops for good, rebooting it on reset when the config says
    /// so. Returns why it stopped.
    public func run() throws -> StopReason {
        try start()
        return try waitForStop()
    }

    /// Starts every vCPU thread and returns. `paused` leaves them paused until `resume()`.
    public func start(paused: Bool = false) throws {
        try running.withLock { isRunning in
            guard !isRunning else { throw MachineError.invalidState("the machine is already running") }
            isRunning = true
        }
        // A machine started again after a stop continues where it stopped; the old
        // reason must not swallow the next stop.
        stopState.withLock { $0 = nil }
        hypercalls?.seal()  // no registrations while vCPUs may dispatch
        try startVCPUs(paused: paused)
    }

    private func startVCPUs(paused: Bool) throws {
        for runner in vcpus {
            runner.vcpu.requestImmediateExit(false)
            try runner.start(paused: paused)
        }
    }

    /// Blocks until the guest stops for good (handling reboots) and returns the reason.
    public func waitForStop() throws -> StopReason {
        while true {
            waitForStopSignal()
            let reason = stopState.withLock { $0 } ?? .vmmError("stopped without a reason")
            for runner in vcpus { runner.requestStop() }
            for runner in vcpus { runner.waitStopped() }
            if rebootsAfter(reason) {
                do {
                    try reloadForBoot()
                    reboots.add(1, ordering: .relaxed)
                    // An owner's kill that arrived while the reset was handled wins.
                    let killed = stopState.withLock { s -> Bool in
                        guard s != .killed else { return true }
                        s = nil
                        return false
                    }
                    if killed {
                        running.withLock { $0 = false }
                        return .killed
                    }
                    try startVCPUs(paused: false)
                    continue
                } catch {
                    running.withLock { $0 = false }
                    return .vmmError("reboot failed: \(error)")
                }
            }
            running.withLock { $0 = false }
            return reason
        }
    }

    /// How often a running machine with an in-kernel LAPIC is probed for "every vCPU
    /// halted with interrupts off" (which KVM waits out in the kernel, forever).
    static let haltProbeInterval: DispatchTimeInterval = .milliseconds(250)

    private func waitForStopSignal() {
        guard config.inKernelIRQChip else { return stopped.wait() }
        var lastProgress = vcpus.map(progress)
        while stopped.wait(timeout: .now() + Self.haltProbeInterval) == .timedOut {
            // A vCPU that made exits since the last look is not halted: only quiet vCPUs
            // are probed, so the probe costs nothing while a guest works. Where the host
            // never returns from vmcall, every vCPU is looked at (one kick each per
            // interval): a vCPU stuck on one still takes interrupts, and their handlers
            // may exit, so it need not look quiet (`EmulationAssist.finishStalledHypercall`).
            let now = vcpus.map(progress)
            let quiet = vcpus.indices.filter { now[$0] == lastProgress[$0] }
            lastProgress = now
            let probed = emulationAssist?.host.hypercallsHang == true ? Array(vcpus.indices) : quiet
            guard !probed.isEmpty else { continue }
            let answers = probed.map { vcpus[$0].probeHalted() }
            if quiet.count == vcpus.count, answers.allSatisfy({ $0 == true }) { stop(.halt(vcpu: 0)) }
            lastProgress = vcpus.map(progress)  // the probe's own kicks are not progress
        }
    }

    /// Exits `runner` handled so far, not counting kicks.
    private func progress(_ runner: VCPURunner) -> UInt64 {
        runner.counters.total &- runner.counters.count(.interrupted)
    }

    /// Stops the machine with `reason` unless it is already stopping; every vCPU is kicked
    /// out of the guest. Safe from any thread, including a vCPU's own.
    public func stop(_ reason: StopReason) {
        let first = stopState.withLock { current -> Bool in
            // A kill overrides a reset not yet turned into a reboot (see waitForStop), so
            // a guest that keeps resetting can still be stopped; the waiter is already awake.
            if reason == .killed && current == .reset { current = reason; return false }
            guard current == nil else { return false }
            current = reason
            return true
        }
        guard first else { return }
        for runner in vcpus { runner.requestStop() }
        stopped.signal()
    }

    /// Forcibly stops the guest (`.killed`).
    public func kill() { stop(.killed) }

    /// Restarts a running guest from power-on (the owner's hard reset), whatever
    /// `rebootOnReset` says; guest memory is kept.
    public func reboot() {
        rebootRequested.store(true, ordering: .releasing)
        stop(.reset)
    }

    /// Pauses every vCPU and returns once all are out of the guest.
    public func pause() { for runner in vcpus { runner.pause() } }

    /// Resumes every paused vCPU.
    public func resume() { for runner in vcpus { runner.resume() } }

    /// Pauses one vCPU (libvmmapi's `vm_suspend_cpu`).
    public func suspendVCPU(_ id: Int) throws {
        guard vcpus.indices.contains(id) else { throw MachineError.invalidState("no vCPU \(id)") }
        vcpus[id].pause()
    }

    /// Resumes one vCPU (libvmmapi's `vm_resume_cpu`).
    public func resumeVCPU(_ id: Int) throws {
        guard vcpus.indices.contains(id) else { throw MachineError.invalidState("no vCPU \(id)") }
        vcpus[id].resume()
    }

    /// Asks the guest to power off, as a power button would. This machine has no ACPI
    /// power-button event source yet, so the request cannot reach the guest's OS: it
    /// stops the machine as a power-off (what the guest would have ended with).
    public func requestPowerOff() { stop(.powerOff) }

    func platformEvent(_ event: PlatformEvent) {
        switch event {
        case .powerOff: stop(.powerOff)
        case .reset: stop(.reset)
        case .debugExit(let value): stop(.debugExit(value: value))
        }
    }
}

/// Errors from building or driving a machine.
public enum MachineError: Error, Equatable, CustomStringConvertible {
    case invalidConfig(String)
    case invalidState(String)
    /// What this host or the architecture cannot do (a debugger's read-only watchpoint on
    /// x86, a data breakpoint on a KVM that never delivers one).
    case unsupported(String)

    public var description: String {
        switch self {
        case .invalidConfig(let why): return "invalid machine configuration: \(why)"
        case .invalidState(let why): return why
        case .unsupported(let what): return "not supported: \(what)"
        }
    }
}
