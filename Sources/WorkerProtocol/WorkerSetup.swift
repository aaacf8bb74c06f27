/// Everything a worker needs to build its machine, sent once as the first message with
/// the descriptors attached (SCM_RIGHTS), in this order: /dev/kvm, one memfd per
/// entry of `memory`, the kernel image and the initrd when `hasInitrd` — or, to restore
/// a snapshot, a state file and a memory file for each snapshot of its chain, base
/// first — then one image per entry of `disks`, one tap per entry of `networks`, with
/// `vsock` its listening socket and the worker's end of the vsock broker link
/// (`VsockBrokerMessage`), and last the descriptor channel (a socket on which later
/// descriptors arrive: the files of a snapshot to write).
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
    public var rebootOnTripleFault: Bool
    public var hasInitrd: Bool
    public var memory: [Segment]
    /// The unprivileged identity the worker drops to before the guest runs.
    public var sandboxUID: UInt32
    public var sandboxGID: UInt32
    /// The CPU template's name (`CPUTemplate.all`); the worker refuses one it does not know.
    public var cpuTemplate: String
    /// `EmulationAssistMode`'s raw value: auto, on or off; the worker refuses anything else.
    public var emulationAssist: String
    /// One virtio-blk disk (its image is a descriptor of the setup).
    public struct Disk: Sendable, Equatable {
        public var readOnly: Bool
        public var serial: String
        public init(readOnly: Bool, serial: String) { self.readOnly = readOnly; self.serial = serial }
    }
    public var disks: [Disk]
    /// A virtio-rng device.
    public var rng: Bool
    /// One virtio-net device (its tap is a descriptor of the setup).
    public struct Network: Sendable, Equatable {
        public var mac: [UInt8]
        public init(mac: [UInt8]) { self.mac = mac }
    }
    public var networks: [Network] = []
    /// The vsock device's guest CID (its listener and broker link are descriptors).
    public var vsockCID: UInt64?
    /// Log changed pages (diff snapshots).
    public var trackDirtyPages = false
    /// Build the machine from a snapshot chain (its files are descriptors of the setup).
    public struct Restore: Sendable, Equatable {
        /// Snapshots in the chain: a state file and a memory file each.
        public var layers: UInt32
        /// Copy the memory into the setup's memfds instead of mapping the file copy-on-write.
        public var copy: Bool
        /// Move the guest's clocks on by the wall time since the snapshot.
        public var advanceClock: Bool
        public init(layers: UInt32, copy: Bool, advanceClock: Bool) {
            self.layers = layers; self.copy = copy; self.advanceClock = advanceClock
        }
    }
    public var restore: Restore?
    /// The daemon's probe answers (nil: the worker probes this host itself).
    public var hostFacts: HostFacts?
    /// The least severe level the worker logs (swift-log's names: trace ... critical):
    /// the daemon's own `--log-level`, so that one setting quiets both.
    public var logLevel = "info"

    public init(name: String, memoryMiB: UInt64, cpus: UInt32, commandLine: String, debugExit: Bool,
                hypercalls: Bool, rebootOnReset: Bool, hasInitrd: Bool, memory: [Segment],
                sandboxUID: UInt32, sandboxGID: UInt32, rebootOnTripleFault: Bool = false, cpuTemplate: String = "host",
                emulationAssist: String = "auto", disks: [Disk] = [], rng: Bool = false) {
        self.emulationAssist = emulationAssist
        self.disks = disks; self.rng = rng
        self.rebootOnTripleFault = rebootOnTripleFault
        self.name = name; self.memoryMiB = memoryMiB; self.cpus = cpus; self.commandLine = commandLine
        self.debugExit = debugExit; self.hypercalls = hypercalls; self.rebootOnReset = rebootOnReset
        self.hasInitrd = hasInitrd; self.memory = memory; self.cpuTemplate = cpuTemplate
        self.sandboxUID = sandboxUID; self.sandboxGID = sandboxGID
    }

    /// How many descriptors travel with this setup.
    public var descriptorCount: Int {
        let boot = restore.map { 2 * Int($0.layers) } ?? 1 + (hasInitrd ? 1 : 0)
        return 1 + memory.count + boot + disks.count + networks.count + (vsockCID == nil ? 0 : 2) + 1
    }

    func encode(into w: inout WireWriter) {
        w.string(name); w.u64(memoryMiB); w.u32(cpus); w.string(commandLine)
        w.bool(debugExit); w.bool(hypercalls); w.bool(rebootOnReset); w.bool(rebootOnTripleFault); w.bool(hasInitrd)
        w.u32(UInt32(memory.count))
        for s in memory { w.string(s.name); w.u64(s.guestBase); w.u64(s.size) }
        w.u32(sandboxUID); w.u32(sandboxGID)
        w.string(cpuTemplate)
        w.u32(UInt32(disks.count))
        for d in disks { w.bool(d.readOnly); w.string(d.serial) }
        w.bool(rng)
        w.u32(UInt32(networks.count))
        for n in networks { w.data(n.mac) }
        w.bool(vsockCID != nil)
        w.u64(vsockCID ?? 0)
        w.string(emulationAssist)
        w.bool(trackDirtyPages)
        w.bool(restore != nil)
        w.u32(restore?.layers ?? 0); w.bool(restore?.copy ?? false); w.bool(restore?.advanceClock ?? false)
        w.bool(hostFacts != nil)
        (hostFacts ?? HostFacts()).encode(into: &w)
        w.string(logLevel)
    }

    static func decode(from r: inout WireReader) throws -> WorkerSetup {
        let name = try r.string(), memoryMiB = try r.u64(), cpus = try r.u32(), commandLine = try r.string()
        let debugExit = try r.bool(), hypercalls = try r.bool(), rebootOnReset = try r.bool()
        let rebootOnTripleFault = try r.bool(), hasInitrd = try r.bool()
        let count = try r.u32()
        guard count <= 8 else { throw WireError.malformed("\(count) memory segments") }
        var memory: [Segment] = []
        for _ in 0 ..< count { memory.append(Segment(name: try r.string(), guestBase: try r.u64(), size: try r.u64())) }
        let sandboxUID = try r.u32(), sandboxGID = try r.u32()
        let cpuTemplate = try r.string()
        let diskCount = try r.u32()
        guard diskCount <= 8 else { throw WireError.malformed("\(diskCount) disks") }
        var disks: [Disk] = []
        for _ in 0 ..< diskCount { disks.append(Disk(readOnly: try r.bool(), serial: try r.string())) }
        let rng = try r.bool()
        let networkCount = try r.u32()
        guard networkCount <= 8 else { throw WireError.malformed("\(networkCount) network devices") }
        var networks: [Network] = []
        for _ in 0 ..< networkCount {
            let mac = try r.data()
            guard mac.count == 6 else { throw WireError.malformed("a MAC of \(mac.count) bytes") }
            networks.append(Network(mac: mac))
        }
        let hasVsock = try r.bool(), cid = try r.u64()
        var setup = WorkerSetup(name: name, memoryMiB: memoryMiB, cpus: cpus, commandLine: commandLine, debugExit: debugExit,
                           hypercalls: hypercalls, rebootOnReset: rebootOnReset, hasInitrd: hasInitrd,
                           memory: memory, sandboxUID: sandboxUID, sandboxGID: sandboxGID,
                           rebootOnTripleFault: rebootOnTripleFault, cpuTemplate: cpuTemplate,
                           emulationAssist: try r.string(), disks: disks, rng: rng)
        setup.networks = networks
        setup.vsockCID = hasVsock ? cid : nil
        setup.trackDirtyPages = try r.bool()
        let restoring = try r.bool()
        let layers = try r.u32(), copy = try r.bool(), advance = try r.bool()
        if restoring {
            guard (1 ... 64).contains(layers) else { throw WireError.malformed("a snapshot chain of \(layers)") }
            setup.restore = Restore(layers: layers, copy: copy, advanceClock: advance)
        }
        let hasFacts = try r.bool(), facts = try HostFacts.decode(from: &r)
        setup.hostFacts = hasFacts ? facts : nil
        setup.logLevel = try r.string()
        return setup
    }
}
