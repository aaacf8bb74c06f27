import Boot
import CSys
import Devices
import GuestMemory
import KVM
import Logging
import Snapshot
import Synchronization
import VMM
import WorkerProtocol
#if canImport(Glibc)
import Glibc
#endif

/// The worker's machine and the loop that obeys the daemon.
final class Worker: @unchecked Sendable {
    // @unchecked: `machine` and `link` are immutable and thread-safe; `phase` is behind a Mutex.
    let machine: Machine
    let link: FramedSocket
    let console: ConsoleForwarder
    /// Where later descriptors arrive (the files of a snapshot to write).
    let descriptorChannel: FramedSocket
    let debugger: WorkerDebugger

    /// Where the guest is, from the worker's side: `waiter` runs while it is started.
    enum Phase { case fresh, started, stopped }
    private let phase = Mutex(Phase.fresh)
    private var waiter: HostThread?

    init(setup: WorkerSetup, descriptors: [Int32], link: FramedSocket) throws {
        self.link = link
        // Unprivileged before the first guest-supplied byte is parsed.
        try Sandbox.dropPrivileges(uid: setup.sandboxUID, gid: setup.sandboxGID)
        var fds = descriptors[...]
        func next() -> Int32 { fds.popFirst() ?? -1 }
        let kvm = try KVMSystem(adopting: next())
        setup.hostFacts?.assume(on: kvm)
        var segments: [MemorySegment] = []
        for s in setup.memory {
            segments.append(try MemorySegment(name: s.name, kind: .systemRAM, guestBase: GuestAddress(s.guestBase),
                                              size: s.size, adoptingMemfd: next()))
        }
        let memory = segments.isEmpty ? nil : try GuestMemory(segments: segments)
        var snapshotFiles: [(state: Int32, memory: Int32)] = []
        var kernel: [UInt8] = [], initrd: [UInt8]?
        if let restore = setup.restore {
            for _ in 0 ..< restore.layers { snapshotFiles.append((next(), next())) }
        } else {
            kernel = try readAll(next())
            initrd = setup.hasInitrd ? try readAll(next()) : nil
        }
        let disks = try setup.disks.map { d in
            DiskConfig(backend: try BlockBackend(fd: next()), readOnly: d.readOnly, serial: d.serial)
        }
        let networks = try setup.networks.map { n in
            guard let mac = MACAddress(bytes: n.mac) else { throw WorkerError("a network device's MAC is not unicast") }
            return NetworkConfig(tap: try TapDevice(adopting: next()), mac: mac)
        }
        let broker = try setup.vsockCID.map { _ in try BrokeredVsockBackend(listener: next(), link: next()) }
        let vsock = setup.vsockCID.flatMap { cid in broker.map { VsockConfig(guestCID: cid, backend: $0) } }
        descriptorChannel = FramedSocket(fd: next())
        console = try ConsoleForwarder(link: link)
        if let restore = setup.restore {
            machine = try Self.restore(setup, restore, files: snapshotFiles, kvm: kvm, memory: memory,
                                       devices: (disks, networks, vsock), console: console)
        } else {
            var config = MachineConfig()
            config.logger.logLevel = Self.logLevel(setup)
            config.name = setup.name
            config.memoryMiB = setup.memoryMiB
            config.cpus = Int(setup.cpus)
            config.commandLine = setup.commandLine
            config.debugExit = setup.debugExit
            config.hypercalls = setup.hypercalls
            config.rebootOnReset = setup.rebootOnReset
            config.rebootOnTripleFault = setup.rebootOnTripleFault
            config.cpuTemplate = try CPUTemplate.named(setup.cpuTemplate)
            guard let assist = EmulationAssistMode(rawValue: setup.emulationAssist) else {
                throw MachineError.invalidConfig("unknown emulation assist mode \(setup.emulationAssist)")
            }
            config.emulationAssist = assist
            config.kernel = kernel
            config.initrd = initrd
            config.disks = disks
            config.rng = setup.rng
            config.networks = networks
            config.vsock = vsock
            config.trackDirtyPages = setup.trackDirtyPages
            config.serialOutput = console
            machine = try Machine(config: config, kvm: kvm, memory: memory)
        }
        debugger = WorkerDebugger(machine: machine, link: link)
        // What guest debugging can do here takes a probe VM, which the sandbox forbids later.
        _ = GuestDebugSupport.probe(kvm)
        // The machine is complete: from here on the worker only runs it.
        // Kept: the devices' descriptors, a snapshot's memory file mapped copy-on-write
        // (a full snapshot reads which of its pages hold data), the descriptor channel.
        try Sandbox.restrict(keeping: Set(machine.virtioDescriptors + machine.memory.segments.map(\.memfd) + [descriptorChannel.fd]
                                          + (broker.map { [$0.link.fd] } ?? [])))
    }

    /// The machine of a snapshot chain handed over as files (state, memory per snapshot,
    /// base first), its guest memory mapped from the base copy-on-write, or copied into
    /// the daemon's memfds.
    static func restore(_ setup: WorkerSetup, _ restore: WorkerSetup.Restore, files: [(state: Int32, memory: Int32)],
                        kvm: KVMSystem, memory: GuestMemory?,
                        devices: (disks: [DiskConfig], networks: [NetworkConfig], vsock: VsockConfig?),
                        console: ConsoleForwarder) throws -> Machine {
        var layers: [SnapshotLayer] = []
        for (i, f) in files.enumerated() {
            let label = "snapshot \(i + 1) of \(files.count)"
            let bytes: [UInt8]
            do { bytes = try SnapshotFileIO.readAll(f.state, what: label) } catch {
                close(f.state); close(f.memory)
                throw error
            }
            close(f.state)
            layers.append(try SnapshotLayer(state: try StateFile.parse(bytes, what: label), memoryFD: f.memory, label: label))
        }
        let chain = try SnapshotChain(layers: layers)
        guard chain.machine.memoryMiB == setup.memoryMiB, chain.machine.cpus == Int(setup.cpus),
              chain.machine.disks.count == devices.disks.count else {
            throw WorkerError("the snapshot is not the machine the daemon described")
        }
        guard restore.copy == (memory != nil) else { throw WorkerError("a copied restore needs guest memory, a mapped one none") }
        var options = RestoreOptions()
        options.logger.logLevel = logLevel(setup)
        options.name = setup.name
        options.memory = restore.copy ? .copy : .copyOnWrite
        options.clock = restore.advanceClock ? .advanced : .continued
        options.serialOutput = console
        options.disks = zip(devices.disks, chain.machine.disks).map { disk, recorded in
            DiskConfig(backend: disk.backend, readOnly: disk.readOnly, serial: disk.serial, path: recorded.path)
        }
        options.networks = devices.networks
        options.vsock = devices.vsock
        return try Machine.restore(from: chain, options: options, kvm: kvm, memory: memory)
    }

    /// The daemon's log level (an unknown name: info, swift-log's default).
    static func logLevel(_ setup: WorkerSetup) -> Logger.Level {
        Logger.Level(rawValue: setup.logLevel) ?? .info
    }

    /// Drops this process's mappings of its own code pages a little after the machine
    /// is built, once, on a thread of its own (HostThread "code-trim").
    ///
    /// Why: start-up runs most of the binary once (the Swift runtime's metadata scans,
    /// the image loader, the machine's construction, the guest's start), and the kernel
    /// maps 64 KiB around every page it faults in, so a fresh worker has ~5 MiB of code
    /// mapped. Those are clean pages of the page cache shared by every worker: counted in
    /// each one's RSS, though no worker owns them. What an idle VM runs afterwards (the
    /// vCPU's exit path, the console, the link) faults back in. Later, not at once: the
    /// daemon's start follows `ready` within a millisecond and would fault its code back,
    /// and a guest that lives a few milliseconds should not pay the faults at all.
    /// A debugger breakpoint or uprobe set in the worker's code before then lives in a
    /// private copy of its page and is dropped with it: attach probes after 200 ms.
    static func dropCodeMappingsSoon() {
        let trim = try? HostThread(name: "code-trim") {
            usleep(Self.codeTrimDelayMicroseconds)
            _ = csys_drop_code_mappings()
        }
        trim?.detach()
    }

    static let codeTrimDelayMicroseconds: UInt32 = 200_000

    /// Obeys the daemon until the link closes.
    func serve() {
        while true {
            let message: DaemonMessage
            do {
                guard let (payload, fds) = try link.receive() else { break }
                for fd in fds { close(fd) }   // only the setup carries descriptors
                message = try DaemonMessage.decode(payload)
            } catch {
                break   // a broken link is the end: the daemon will see us exit
            }
            handle(message)
        }
        machine.kill()
    }

    private func handle(_ message: DaemonMessage) {
        switch message {
        case .setup: break
        case .start: start(fromPowerOn: true)
        case .pause:
            machine.pause()
            report(.paused)
        case .resume:
            machine.resume()
            report(.running)
        case .reset:
            if phase.withLock({ $0 }) == .started {
                machine.reboot()   // also wakes paused vCPUs: the guest runs again
                report(.running)
            } else {
                start(fromPowerOn: true)
            }
        case .powerOff: machine.requestPowerOff()
        case .kill: machine.kill()
        case .consoleInput(let bytes): machine.serial.enqueueInput(bytes)
        case .statisticsRequest(let id):
            link.send(WorkerMessage.statistics(id: id, statisticLines(machine.statistics())).encoded())
        case .snapshot(let command): takeSnapshot(command)
        case .debugAttach: debugger.attach()
        case .debugData(let bytes): debugger.received(bytes)
        case .debugDetach: debugger.detach()
        case .attemptForbiddenCall:
            // Test hook (vmmd --test-hooks): a call the sandbox forbids must kill us.
            let fd = open("/etc/hostname", O_RDONLY)
            link.send(WorkerMessage.setupFailed("the sandbox let open(2) through (fd \(fd))").encoded())
        }
    }

    private func report(_ state: GuestRunState) { link.send(WorkerMessage.state(state).encoded()) }

    /// Writes a snapshot into the three files (state, memory, manifest) the daemon sent
    /// on the descriptor channel just before the request: pauses the guest, writes,
    /// resumes it unless it was paused or is to stay so.
    private func takeSnapshot(_ command: SnapshotCommand) {
        let fds: [Int32]
        do { fds = try descriptorChannel.receive()?.descriptors ?? [] } catch { fds = [] }
        defer { for fd in fds { close(fd) } }
        guard fds.count == 3 else {
            link.send(WorkerMessage.snapshotFailed("expected 3 files on the descriptor channel, got \(fds.count)").encoded())
            return
        }
        let wasPaused = machine.vcpus.allSatisfy { $0.state == .paused }
        let started = monotonicNanoseconds()
        machine.pause()
        var options = SnapshotOptions(kind: command.diff ? .diff : .full, parentPath: command.parentPath)
        options.sync = true
        let result = Result { try machine.snapshot(into: SnapshotFileSet(state: fds[0], memory: fds[1], manifest: fds[2]), options: options) }
        let staysPaused = wasPaused || command.stayPaused
        if !staysPaused { machine.resume() }
        report(staysPaused ? .paused : .running)
        switch result {
        case .success(let s):
            link.send(WorkerMessage.snapshotTaken(SnapshotReport(
                id: s.id.bytes, parent: s.parent?.bytes, memoryBytes: s.memoryBytesWritten, memoryFileBytes: s.memoryFileSize,
                stateBytes: UInt64(s.stateFileSize), durationNanoseconds: monotonicNanoseconds() - started,
                state: staysPaused ? .paused : .running)).encoded())
        case .failure(let error):
            link.send(WorkerMessage.snapshotFailed("\(error)").encoded())
        }
    }

    /// Boots the guest unless it is running; after a stop it starts again from power-on.
    private func start(fromPowerOn: Bool) {
        let previous = phase.withLock { p -> Phase in
            let old = p
            if p != .started { p = .started }
            return old
        }
        guard previous != .started else { return }
        waiter?.join()
        do {
            if previous == .stopped { try machine.reset() }
            try machine.start()
        } catch {
            phase.withLock { $0 = .stopped }
            let reason = StopReason.vmmError("\(error)")
            link.send(WorkerMessage.stopped(kind: reason.kind, status: reason.exitStatus, message: reason.description).encoded())
            return
        }
        report(.running)
        waiter = try? HostThread(name: "waiter") { [self] in
            let reason = (try? machine.waitForStop()) ?? .vmmError("waiting for the guest failed")
            phase.withLock { $0 = .stopped }
            debugger.machineEnded(reason)
            console.flush()
            link.send(WorkerMessage.stopped(kind: reason.kind, status: reason.exitStatus, message: reason.description).encoded())
        }
    }
}

struct WorkerError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Reads a whole file from a descriptor handed over by the daemon, and closes it.
/// pread from 0: the daemon keeps the same open file for later workers, so the shared
/// file offset must not matter.
func readAll(_ fd: Int32) throws -> [UInt8] {
    guard fd >= 0 else { throw WorkerError("a descriptor is missing") }
    defer { close(fd) }
    var result: [UInt8] = []
    // As large as the file (one read and the end), at most 1 MiB: zeroing and faulting in
    // a 1 MiB buffer for a small guest cost more than the read (~0.3 ms per worker).
    var st = stat()
    let size = fstat(fd, &st) == 0 && st.st_size > 0 ? Int(st.st_size) : 0
    var chunk = [UInt8](repeating: 0, count: min(max(size + 1, 4096), 1 << 20))
    while true {
        let n = pread(fd, &chunk, chunk.count, off_t(result.count))
        if n < 0 && errno == EINTR { continue }
        guard n >= 0 else { throw WorkerError("reading an image failed: \(String(cString: strerror(errno)))") }
        if n == 0 { return result }
        result += chunk[0 ..< n]
        guard result.count <= 1 << 30 else { throw WorkerError("image larger than 1 GiB") }
    }
}

/// Flattens machine statistics into lines for the daemon.
func statisticLines(_ s: MachineStatistics) -> [StatisticLine] {
    var lines = s.kvm.filter { $0.values.count == 1 }.map { StatisticLine(scope: "vm", source: "kvm", name: $0.name, value: $0.value) }
    lines += [
        StatisticLine(scope: "vm", source: "vmm", name: "unclaimed_port_reads", value: s.unclaimedPortReads),
        StatisticLine(scope: "vm", source: "vmm", name: "unclaimed_port_writes", value: s.unclaimedPortWrites),
        StatisticLine(scope: "vm", source: "vmm", name: "unclaimed_mmio_reads", value: s.unclaimedMMIOReads),
        StatisticLine(scope: "vm", source: "vmm", name: "unclaimed_mmio_writes", value: s.unclaimedMMIOWrites),
        StatisticLine(scope: "vm", source: "vmm", name: "reboots", value: s.reboots),
    ]
    lines += s.hypercalls.map { StatisticLine(scope: "vm", source: "hypercall", name: $0.name, value: $0.count) }
    lines += s.assisted.map { StatisticLine(scope: "vm", source: "emulation_assist", name: $0.name, value: $0.count) }
    for device in s.devices {
        lines += device.counters.map { StatisticLine(scope: device.name, source: "virtio", name: $0.name, value: $0.value) }
    }
    for v in s.vcpus {
        let scope = "vcpu\(v.id)"
        lines += v.kvm.filter { $0.values.count == 1 }.map { StatisticLine(scope: scope, source: "kvm", name: $0.name, value: $0.value) }
        lines += v.exits.map { StatisticLine(scope: scope, source: "vmm", name: "exits_" + $0.kind, value: $0.count) }
    }
    return lines
}

/// CLOCK_MONOTONIC in nanoseconds.
func monotonicNanoseconds() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) &* 1_000_000_000 &+ UInt64(t.tv_nsec)
}
