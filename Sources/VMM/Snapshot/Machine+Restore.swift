import Boot
import Devices
import GuestMemory
import Hypercalls
import KVM
import Logging
import Snapshot
#if canImport(Glibc)
import Glibc
#endif

/// How `Machine.restore` builds a machine from a snapshot.
public struct RestoreOptions: Sendable {
    public enum Memory: Sendable, Equatable {
        /// Map the memory file copy-on-write (MAP_PRIVATE): nothing is read at restore,
        /// pages come in as the guest touches them, and every machine restored from the
        /// same file shares its unchanged pages (the page cache). The default.
        case copyOnWrite
        /// Copy the snapshot's data into fresh guest memory first (a snapshot on slow or
        /// removable storage; a daemon whose guest memory must outlive the worker).
        case copy
    }

    public enum Clock: Sendable, Equatable {
        /// The guest's clocks (kvmclock, TSC) continue from where they stopped.
        case continued
        /// The guest's clocks move on by the wall time that passed since the snapshot.
        case advanced
    }

    public var memory: Memory = .copyOnWrite
    public var clock: Clock = .continued
    /// The restored VM's name (a clone's own); the snapshot's when nil.
    public var name: String?
    public var serialOutput: any SerialOutput = NullOutput()
    public var logger = DeferredLogHandler.logger(label: "swift-vmm")
    /// The host ends of the devices, in the snapshot's order — disk images, taps, the
    /// vsock listener — as the caller opened them (a clone needs its own tap and socket);
    /// each nil reopens what the snapshot recorded.
    public var disks: [DiskConfig]?
    public var networks: [NetworkConfig]?
    public var vsock: VsockConfig?
    /// Calls a library user offers besides the built-ins (the snapshot's must all be there).
    public var hypercallRegistry = HypercallRegistry()
    /// (bytes copied, bytes to copy) for `.copy`.
    public var progress: (@Sendable (UInt64, UInt64) -> Void)?

    public init() {}
}

/// What the machine's init applies instead of loading an image.
struct RestorePlan {
    let top: StateFile
    let vcpus: [VCPUState]
    let clockAdvance: UInt64
    let bootFormat: BootImageFormat
    let generation: UInt64
    let sinceRestore: [[UInt64]]?
    /// The host the snapshot's emulation assist was made for; nil: it had none.
    let assistHost: HostEmulation?
}

extension Machine {
    /// Builds a machine from the snapshot in `directory` and the snapshots it was taken
    /// on top of (bhyve's restore): nothing runs until `start()`.
    public static func restore(from directory: String, options: RestoreOptions = RestoreOptions(),
                               kvm: KVMSystem? = nil) throws -> Machine {
        let chain = try SnapshotChain.open(directory: directory, using: SnapshotChain.openReadOnly)
        return try restore(from: chain, options: options, kvm: kvm)
    }

    /// Builds a machine from an open snapshot chain. `memory`, when given (a daemon's
    /// memfds), receives a copy of the snapshot's memory (`options.memory` must be `.copy`).
    public static func restore(from chain: SnapshotChain, options: RestoreOptions = RestoreOptions(),
                               kvm: KVMSystem? = nil, memory provided: GuestMemory? = nil) throws -> Machine {
        let described = chain.machine
        let top = chain.top.state
        var config = try MachineConfig(described, chain: chain, options: options)
        // Memory mapped from a file is told apart from the file's pages by the dirty logs.
        config.trackDirtyPages = described.trackDirtyPages || (options.memory == .copyOnWrite && provided == nil)
        var vcpus: [VCPUState] = []
        for index in 0 ..< described.cpus { vcpus.append(try VCPUState(try top.require(VCPUState.section(index)))) }
        let (memory, sinceRestore) = try restoredMemory(chain, options: options, provided: provided)
        guard memory.ramSize == described.memoryMiB << 20 else {
            throw SnapshotError.mismatch("the memory file lays out \(memory.ramSize >> 20) MiB of RAM, the machine has \(described.memoryMiB) MiB")
        }
        let advance = options.clock == .advanced ? try KVMClock.elapsed(since: try top.require("clock")) : 0
        let format = BootImageFormat(rawValue: described.bootFormat) ?? .pvhELF
        let assistHost = try EmulationAssist.recordedHost(in: top)
        config.emulationAssist = assistHost == nil ? .off : .on
        let plan = RestorePlan(top: top, vcpus: vcpus, clockAdvance: advance, bootFormat: format,
                               generation: described.generation + 1, sinceRestore: sinceRestore, assistHost: assistHost)
        return try Machine(config: config, kvm: kvm, memory: memory, restoring: plan)
    }

    /// The guest memory of a restore: the base snapshot's file mapped copy-on-write (or
    /// copied), each diff's pages laid over it in order. For a copy-on-write mapping, also
    /// the pages that are no longer the file's (the diffs' pages).
    static func restoredMemory(_ chain: SnapshotChain, options: RestoreOptions,
                               provided: GuestMemory?) throws -> (GuestMemory, [[UInt64]]?) {
        let layout = chain.top.memory.segments
        let base = chain.layers[0]
        let copy = options.memory == .copy || provided != nil
        let memory: GuestMemory
        if let provided {
            memory = provided
            for segment in memory.segments { try segment.discard() }   // a reused memfd must not show old pages
        } else if copy {
            memory = try GuestMemory(segments: try layout.map {
                try MemorySegment(name: $0.name, guestBase: GuestAddress($0.guestBase), size: $0.size)
            })
        } else {
            memory = try GuestMemory(segments: try layout.map { place in
                let fd = dup(base.memoryFD)
                guard fd >= 0 else { throw SnapshotError.system(operation: "dup(\(base.label)/\(SnapshotFiles.memory))", errno: errno) }
                return try MemorySegment(name: place.name, guestBase: GuestAddress(place.guestBase), size: place.size,
                                         privateFile: fd, offset: place.fileOffset)
            })
        }
        // Indexes, not zip: a restore runs in a fresh process, where each new generic type
        // (Zip2Sequence, Set<String>) costs ~0.1 ms of metadata and conformance lookups.
        let matches = memory.segments.count == layout.count && memory.segments.indices.allSatisfy {
            memory.segments[$0].guestBase.raw == layout[$0].guestBase && memory.segments[$0].size == layout[$0].size
        }
        guard matches else { throw SnapshotError.mismatch("the guest memory given does not have the snapshot's layout") }
        var done: UInt64 = 0
        let baseRanges: [Range<UInt64>] = copy
            ? try layout.flatMap { try SnapshotFileIO.dataExtents(base.memoryFD, from: $0.fileOffset, to: $0.fileOffset + $0.size, what: base.label) }
            : []
        let diffs = chain.diffLayers.map { layer, pages in
            (layer, pages.runs.map { ($0.first * GuestMemory.pageSize) ..< ($0.end * GuestMemory.pageSize) })
        }
        let total = (baseRanges + diffs.flatMap(\.1)).reduce(0) { $0 + ($1.upperBound - $1.lowerBound) }
        if copy {
            try SnapshotMemory.read(base.memoryFD, ranges: baseRanges, into: memory, layout: layout, done: &done, total: total,
                                    progress: options.progress)
        }
        for (layer, ranges) in diffs {
            try SnapshotMemory.read(layer.memoryFD, ranges: ranges, into: memory, layout: layout, done: &done, total: total,
                                    progress: options.progress)
        }
        guard !copy else { return (memory, nil) }
        // Empty until a diff marks pages: readers of these bitmaps take a short one as
        // the pages past its end not changed, and most restores have no diff.
        var since: [[UInt64]] = layout.map { _ in [] }
        for (_, ranges) in diffs {
            for (i, place) in layout.enumerated() {
                let local = ranges.compactMap { r -> Range<UInt64>? in
                    let lower = max(r.lowerBound, place.fileOffset), upper = min(r.upperBound, place.fileOffset + place.size)
                    return lower < upper ? (lower - place.fileOffset) ..< (upper - place.fileOffset) : nil
                }
                PageBitmap.marking(local, pages: Int(place.size / GuestMemory.pageSize), into: &since[i])
            }
        }
        return (memory, since)
    }

    /// Applies a restore plan to a machine just built from it (its vCPUs have the
    /// snapshot's CPUID, nothing is loaded): KVM's interrupt controllers and PIT when it
    /// has them, then every vCPU (whose local APIC wins over anything KVM's IOAPIC restore
    /// delivered), the clock, the hypercall table and the devices — the split irqchip's
    /// IOAPIC among them, whose restore delivers nothing. Every section must be used by
    /// something: state for a component this machine does not have is refused.
    func applyRestore(_ plan: RestorePlan) throws {
        // A few dozen names: an array, not a Set<String> (see restoredMemory).
        var used: [String] = [MachineDescription.sectionName, MemoryDescription.sectionName, "boot.kernel", "boot.initrd"]
        let clock = KVMClock(vm: vm)
        clock.advance = plan.clockAdvance
        let components = try stateComponents(clock: clock)
        func restore(_ name: String, _ component: any SnapshotStateful) throws {
            guard let section = plan.top.section(name) else {
                throw SnapshotError.missingSection("\(name) (this machine has it; the snapshot's machine did not)")
            }
            try component.restore(from: section)
            used.append(name)
        }
        for (name, component) in components where name == "irqchip" || name == "pit" { try restore(name, component) }
        let xsave = snapshots.state.withLock { $0.xsave }
        for (index, state) in plan.vcpus.enumerated() {
            try state.apply(to: vcpus[index].vcpu, advance: plan.clockAdvance, xsave: xsave)
            used.append(VCPUState.section(index))
        }
        for (name, component) in components where name != "irqchip" && name != "pit" { try restore(name, component) }
        if let stray = plan.top.sections.first(where: { !used.contains($0.name) }) {
            throw SnapshotError.unexpectedSection(stray.name)
        }
        snapshots.state.withLock { s in
            s.baseline = plan.top.id
            s.generation = plan.generation
            s.sinceRestore = plan.sinceRestore
        }
        if config.trackDirtyPages { memory.writeLog.enable() }
        for device in virtioDevices { device.transport.resumeAfterRestore() }
    }

    /// The emulation assist a restored machine gets: the snapshot's, for the host it
    /// recorded (its CPUID and breakpoint were made for that host), or none.
    static func restoredEmulationAssist(_ plan: RestorePlan, memory: GuestMemory) -> EmulationAssist? {
        plan.assistHost.map { EmulationAssist(memory: memory, host: $0) }
    }

    /// The snapshot's description of this machine.
    func description(generation: UInt64) -> MachineDescription {
        var d = MachineDescription(
            writer: Machine.version, createdAt: realtimeNanoseconds(), name: config.name, memoryMiB: config.memoryMiB,
            cpus: config.cpus,
            topology: config.topology.map { ($0.sockets, $0.coresPerSocket, $0.threadsPerCore) },
            cpuTemplate: config.cpuTemplate.name, commandLine: config.commandLine, effectiveCommandLine: commandLine,
            bootFormat: bootFormat.rawValue, debugExit: config.debugExit, hypercalls: config.hypercalls,
            rebootOnReset: config.rebootOnReset, rebootOnTripleFault: config.rebootOnTripleFault,
            inKernelIRQChip: config.inKernelIRQChip, acpi: config.acpi, trackDirtyPages: config.trackDirtyPages,
            virtioNotification: config.virtioNotification.rawValue, virtioOnCommandLine: config.virtioOnCommandLine,
            disks: config.disks.map {
                .init(path: $0.path, readOnly: $0.readOnly, serial: $0.serial, direct: $0.backend.direct, size: $0.backend.size)
            },
            rng: config.rng,
            networks: config.networks.map { .init(tap: $0.tap.name, mac: $0.mac.bytes) },
            vsock: config.vsock.map { .init(cid: $0.guestCID, path: $0.path) },
            generation: generation)
        d.irqchip = config.irqchip.rawValue
        return d
    }

    /// How many restores lie between this machine and its first boot, and its random
    /// instance ID: what the `vm_generation` hypercall answers.
    public var generation: (count: UInt64, instanceID: [UInt8]) {
        snapshots.state.withLock { ($0.generation, $0.instanceID) }
    }
}

extension MachineConfig {
    /// The configuration a snapshot's machine was built with, plus what only the
    /// restoring side knows (its output, its name, its disks).
    init(_ d: MachineDescription, chain: SnapshotChain, options: RestoreOptions) throws {
        self.init()
        name = options.name ?? d.name
        memoryMiB = d.memoryMiB
        cpus = d.cpus
        if let t = d.topology { topology = try CPUTopology(sockets: t.sockets, coresPerSocket: t.cores, threadsPerCore: t.threads) }
        cpuTemplate = try CPUTemplate.named(d.cpuTemplate)
        commandLine = d.commandLine
        debugExit = d.debugExit
        hypercalls = d.hypercalls
        rebootOnReset = d.rebootOnReset
        rebootOnTripleFault = d.rebootOnTripleFault
        inKernelIRQChip = d.inKernelIRQChip
        guard let mode = IRQChipMode(rawValue: d.irqchip) else {
            throw SnapshotError.malformed(section: MachineDescription.sectionName, "irqchip '\(d.irqchip)'")
        }
        irqchip = mode
        acpi = d.acpi
        trackDirtyPages = d.trackDirtyPages
        guard let notification = VirtioNotification(rawValue: d.virtioNotification) else {
            throw SnapshotError.malformed(section: MachineDescription.sectionName, "virtio notification '\(d.virtioNotification)'")
        }
        virtioNotification = notification
        virtioOnCommandLine = d.virtioOnCommandLine
        rng = d.rng
        guard let image = chain.section("boot.kernel") else { throw SnapshotError.missingSection("boot.kernel") }
        kernel = image.payload
        initrd = chain.section("boot.initrd")?.payload
        serialOutput = options.serialOutput
        logger = options.logger
        hypercallRegistry = options.hypercallRegistry
        if let given = options.disks {
            guard given.count == d.disks.count else {
                throw SnapshotError.mismatch("the snapshot's machine had \(d.disks.count) disks; \(given.count) were given")
            }
            disks = given
        } else {
            disks = try d.disks.map { disk in
                do {
                    return DiskConfig(backend: try BlockBackend.open(path: disk.path, readOnly: disk.readOnly, direct: disk.direct),
                                      readOnly: disk.readOnly, serial: disk.serial, path: disk.path)
                } catch {
                    throw SnapshotError.mismatch("the disk \(disk.path) of the snapshot cannot be opened: \(error)")
                }
            }
        }
        for i in disks.indices where disks[i].backend.size != d.disks[i].size {
            let disk = disks[i], recorded = d.disks[i]
            throw SnapshotError.mismatch("the disk \(disk.path.isEmpty ? recorded.path : disk.path) has \(disk.backend.size) bytes; the guest knew it with \(recorded.size)")
        }
        if let given = options.networks {
            guard given.count == d.networks.count else {
                throw SnapshotError.mismatch("the snapshot's machine had \(d.networks.count) network devices; \(given.count) were given")
            }
            networks = given
        } else {
            networks = try d.networks.map { net in
                guard let mac = MACAddress(bytes: net.mac) else { throw SnapshotError.malformed(section: MachineDescription.sectionName, "a MAC") }
                do { return NetworkConfig(tap: try TapDevice.open(name: net.tap), mac: mac) } catch {
                    throw SnapshotError.mismatch("the tap \(net.tap) of the snapshot cannot be opened: \(error)")
                }
            }
        }
        if let recorded = d.vsock {
            if let given = options.vsock {
                vsock = given
            } else {
                do {
                    vsock = VsockConfig(guestCID: recorded.cid, backend: try VsockUnixBackend(path: recorded.path), path: recorded.path)
                } catch {
                    throw SnapshotError.mismatch("the vsock socket \(recorded.path) of the snapshot cannot be listened on (give another): \(error)")
                }
            }
        } else if options.vsock != nil {
            throw SnapshotError.mismatch("the snapshot's machine had no vsock device")
        }
    }
}
