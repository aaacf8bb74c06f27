/// Section `machine`: what a machine was built from, so that a restore builds the same
/// one (and a daemon can check the size against a quota before it builds anything).
public struct MachineDescription: Sendable, Equatable {
    public static let sectionName = "machine"
    /// Version 2 added `irqchip`; a version-1 section is read as KVM's irqchip (the only
    /// kind there was).
    public static let version: UInt16 = 2

    /// One disk; the image itself is not in the snapshot: a restore reopens `path` (or
    /// what the caller names instead) and checks its size.
    public struct Disk: Sendable, Equatable {
        public var path: String
        public var readOnly: Bool
        public var serial: String
        public var direct: Bool
        /// The image's size in bytes when the snapshot was taken.
        public var size: UInt64
        public init(path: String, readOnly: Bool, serial: String, direct: Bool, size: UInt64) {
            self.path = path; self.readOnly = readOnly; self.serial = serial; self.direct = direct; self.size = size
        }
    }

    /// A virtio-net device: the tap it was on and the MAC the guest knows.
    public struct Network: Sendable, Equatable {
        public var tap: String
        public var mac: [UInt8]
        public init(tap: String, mac: [UInt8]) { self.tap = tap; self.mac = mac }
    }

    /// The virtio-vsock device: the guest's CID and the host's listening socket.
    public struct Vsock: Sendable, Equatable {
        public var cid: UInt64
        public var path: String
        public init(cid: UInt64, path: String) { self.cid = cid; self.path = path }
    }

    /// The swift-vmm version that wrote the snapshot.
    public var writer: String
    /// When the snapshot was taken (CLOCK_REALTIME, ns since the epoch).
    public var createdAt: UInt64
    public var name: String
    public var memoryMiB: UInt64
    public var cpus: Int
    /// sockets, cores, threads; nil for one socket of `cpus` cores.
    public var topology: (sockets: Int, cores: Int, threads: Int)?
    public var cpuTemplate: String
    /// The command line as configured, and as the kernel got it (with what the CPU
    /// template added).
    public var commandLine: String
    public var effectiveCommandLine: String
    /// "pvh-elf", "bzimage", "multiboot", ...
    public var bootFormat: String
    public var debugExit: Bool
    public var hypercalls: Bool
    public var rebootOnReset: Bool
    public var rebootOnTripleFault: Bool
    public var inKernelIRQChip: Bool
    /// Where the IOAPIC lived when `inKernelIRQChip`: "kernel" (KVM_CREATE_IRQCHIP) or
    /// "split" (KVM_CAP_SPLIT_IRQCHIP, the VMM's IOAPIC in its own section).
    public var irqchip: String = "kernel"
    public var acpi: Bool
    public var trackDirtyPages: Bool
    /// "ioeventfd" or "bus".
    public var virtioNotification: String
    public var virtioOnCommandLine: Bool
    public var disks: [Disk]
    public var rng: Bool
    public var networks: [Network]
    public var vsock: Vsock?
    /// How many restores separate this machine from its first boot (the guest can read
    /// it with the `vm_generation` hypercall).
    public var generation: UInt64

    public init(writer: String, createdAt: UInt64, name: String, memoryMiB: UInt64, cpus: Int,
                topology: (sockets: Int, cores: Int, threads: Int)?, cpuTemplate: String, commandLine: String,
                effectiveCommandLine: String, bootFormat: String, debugExit: Bool, hypercalls: Bool,
                rebootOnReset: Bool, rebootOnTripleFault: Bool, inKernelIRQChip: Bool, acpi: Bool,
                trackDirtyPages: Bool, virtioNotification: String, virtioOnCommandLine: Bool, disks: [Disk],
                rng: Bool, networks: [Network] = [], vsock: Vsock? = nil, generation: UInt64) {
        self.writer = writer; self.createdAt = createdAt; self.name = name; self.memoryMiB = memoryMiB
        self.cpus = cpus; self.topology = topology; self.cpuTemplate = cpuTemplate; self.commandLine = commandLine
        self.effectiveCommandLine = effectiveCommandLine; self.bootFormat = bootFormat; self.debugExit = debugExit
        self.hypercalls = hypercalls; self.rebootOnReset = rebootOnReset; self.rebootOnTripleFault = rebootOnTripleFault
        self.inKernelIRQChip = inKernelIRQChip; self.acpi = acpi; self.trackDirtyPages = trackDirtyPages
        self.virtioNotification = virtioNotification; self.virtioOnCommandLine = virtioOnCommandLine
        self.disks = disks; self.rng = rng; self.networks = networks; self.vsock = vsock; self.generation = generation
    }

    public static func == (a: MachineDescription, b: MachineDescription) -> Bool {
        a.section.payload == b.section.payload
    }

    /// Bounds a reader holds the section to.
    public static let maxMemoryMiB: UInt64 = 1 << 20
    public static let maxCPUs = 254
    public static let maxDisks = 32
    public static let maxString = 4096

    public var section: SnapshotSection {
        var e = SnapshotEncoder()
        e.string(writer); e.u64(createdAt); e.string(name); e.u64(memoryMiB); e.u32(UInt32(truncatingIfNeeded: cpus))
        e.bool(topology != nil)
        e.u32(UInt32(truncatingIfNeeded: topology?.sockets ?? 0)); e.u32(UInt32(truncatingIfNeeded: topology?.cores ?? 0))
        e.u32(UInt32(truncatingIfNeeded: topology?.threads ?? 0))
        e.string(cpuTemplate); e.string(commandLine); e.string(effectiveCommandLine); e.string(bootFormat)
        for flag in [debugExit, hypercalls, rebootOnReset, rebootOnTripleFault, inKernelIRQChip, acpi, trackDirtyPages] { e.bool(flag) }
        e.string(virtioNotification); e.bool(virtioOnCommandLine)
        e.count(disks.count)
        for d in disks { e.string(d.path); e.bool(d.readOnly); e.string(d.serial); e.bool(d.direct); e.u64(d.size) }
        e.bool(rng)
        e.count(networks.count)
        for n in networks { e.string(n.tap); e.data(n.mac) }
        e.bool(vsock != nil); e.u64(vsock?.cid ?? 0); e.string(vsock?.path ?? "")
        e.u64(generation)
        e.string(irqchip)
        return SnapshotSection(name: Self.sectionName, version: Self.version, payload: e.bytes)
    }

    public init(_ section: SnapshotSection) throws(SnapshotError) {
        var d = try section.decoder(supporting: [1, Self.version])
        let s = Self.maxString
        writer = try d.string(maxLength: s, "writer")
        createdAt = try d.u64()
        name = try d.string(maxLength: 64, "name")
        memoryMiB = try d.u64()
        cpus = Int(try d.u32())
        let hasTopology = try d.bool()
        let sockets = Int(try d.u32()), cores = Int(try d.u32()), threads = Int(try d.u32())
        topology = hasTopology ? (sockets, cores, threads) : nil
        cpuTemplate = try d.string(maxLength: 64, "cpu template")
        commandLine = try d.string(maxLength: s, "command line")
        effectiveCommandLine = try d.string(maxLength: s, "effective command line")
        bootFormat = try d.string(maxLength: 64, "boot format")
        debugExit = try d.bool(); hypercalls = try d.bool(); rebootOnReset = try d.bool()
        rebootOnTripleFault = try d.bool(); inKernelIRQChip = try d.bool(); acpi = try d.bool(); trackDirtyPages = try d.bool()
        virtioNotification = try d.string(maxLength: 64, "virtio notification")
        virtioOnCommandLine = try d.bool()
        let n = try d.count(max: Self.maxDisks, elementSize: 4 + 1 + 4 + 1 + 8, "disks")
        var disks: [Disk] = []
        for _ in 0 ..< n {
            disks.append(Disk(path: try d.string(maxLength: s, "disk path"), readOnly: try d.bool(),
                              serial: try d.string(maxLength: 64, "disk serial"), direct: try d.bool(), size: try d.u64()))
        }
        self.disks = disks
        rng = try d.bool()
        let nets = try d.count(max: Self.maxDisks, elementSize: 4 + 4, "network devices")
        var networks: [Network] = []
        for _ in 0 ..< nets {
            let tap = try d.string(maxLength: 15, "tap name"), mac = try d.data(maxLength: 6, "MAC")
            guard mac.count == 6 else { throw d.malformed("a MAC of \(mac.count) bytes") }
            networks.append(Network(tap: tap, mac: mac))
        }
        self.networks = networks
        let hasVsock = try d.bool(), cid = try d.u64(), path = try d.string(maxLength: 108, "vsock socket path")
        vsock = hasVsock ? Vsock(cid: cid, path: path) : nil
        generation = try d.u64()
        irqchip = section.version >= 2 ? try d.string(maxLength: 16, "irqchip") : "kernel"
        try d.finish()
        guard ["kernel", "split"].contains(irqchip) else { throw d.malformed("irqchip '\(irqchip)'") }
        guard (1 ... Self.maxMemoryMiB).contains(memoryMiB) else { throw d.malformed("memory of \(memoryMiB) MiB") }
        guard (1 ... Self.maxCPUs).contains(cpus) else { throw d.malformed("\(cpus) vCPUs") }
        if let t = topology {
            guard t.sockets >= 1, t.cores >= 1, t.threads >= 1, t.sockets * t.cores * t.threads == cpus else {
                throw d.malformed("topology \(t.sockets)x\(t.cores)x\(t.threads) for \(cpus) vCPUs")
            }
        }
    }
}
