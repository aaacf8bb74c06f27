/// A managed VM's state, as the daemon sees it.
public enum VMState: String, Codable, Sendable, CaseIterable {
    /// The worker is being started and the image loaded.
    case creating
    /// Built, never started.
    case created
    case running
    case paused
    /// The guest stopped (see `last_exit`); `start` boots it again.
    case stopped
    /// The worker process died (see `last_exit.signal`); `start` starts a new one.
    case crashed
    /// The VM runs in its owner's own process through a brokered /dev/kvm handle; the
    /// daemon keeps its name and quota until the handle's connection closes.
    case external
    /// A persistent VM that could not be brought back when the daemon started (its
    /// kernel is gone, say; `last_exit` says why). It keeps its name and record until
    /// its owner destroys it.
    case failed
}

/// How the guest or its worker last ended.
public struct ExitInfo: Codable, Sendable, Equatable {
    /// poweroff, reset, halt, triple_fault, internal_error, debug_exit, vmm_error,
    /// killed, or crashed (the worker died).
    public var kind: String
    /// What `vmmctl run` would have exited with (crashed: 128 + signal).
    public var status: Int32
    public var message: String
    /// The signal that ended the worker, for `crashed`.
    public var signal: Int32?
    /// RFC 3339.
    public var at: String

    public init(kind: String, status: Int32, message: String, signal: Int32? = nil, at: String) {
        self.kind = kind; self.status = status; self.message = message; self.signal = signal; self.at = at
    }

    enum CodingKeys: String, CodingKey { case kind, status, message, signal, at }
}

/// `GET /v1/vms/{name}`.
public struct VMInfo: Codable, Sendable, Equatable {
    public var name: String
    /// Nil for a system VM.
    public var ownerUID: UInt32?
    public var state: VMState
    public var lifetime: Lifetime
    public var workerPID: Int32?
    /// RFC 3339.
    public var createdAt: String
    public var memoryMiB: UInt64
    public var vcpus: Int
    public var kernel: String
    public var initrd: String?
    public var cmdline: String
    public var debugExit: Bool
    public var hypercalls: Bool
    public var noReboot: Bool
    public var tripleFault: TripleFaultPolicy
    public var cpuTemplate: String
    public var bootFormat: String?
    public var lastExit: ExitInfo?
    public var disks: [DiskRequest] = []
    public var rng = false
    /// The snapshot the VM was built from (null for one that booted a kernel).
    public var restoredFrom: String?
    public var trackDirtyPages = false
    /// The network devices, each with the MAC the guest sees.
    public var net: [NetRequest] = []
    public var vsock: VsockRequest?

    public init(name: String, ownerUID: UInt32?, state: VMState, lifetime: Lifetime, workerPID: Int32?,
                createdAt: String, memoryMiB: UInt64, vcpus: Int, kernel: String, initrd: String?, cmdline: String,
                debugExit: Bool, hypercalls: Bool, noReboot: Bool, tripleFault: TripleFaultPolicy, cpuTemplate: String,
                bootFormat: String?, lastExit: ExitInfo?) {
        self.tripleFault = tripleFault
        self.cpuTemplate = cpuTemplate
        self.name = name; self.ownerUID = ownerUID; self.state = state; self.lifetime = lifetime
        self.workerPID = workerPID; self.createdAt = createdAt; self.memoryMiB = memoryMiB; self.vcpus = vcpus
        self.kernel = kernel; self.initrd = initrd; self.cmdline = cmdline; self.debugExit = debugExit
        self.hypercalls = hypercalls; self.noReboot = noReboot; self.bootFormat = bootFormat; self.lastExit = lastExit
    }

    enum CodingKeys: String, CodingKey {
        case name, ownerUID = "owner_uid", state, lifetime, workerPID = "worker_pid", createdAt = "created_at"
        case memoryMiB = "memory_mib", vcpus, kernel, initrd, cmdline, debugExit = "debug_exit", hypercalls
        case noReboot = "no_reboot", tripleFault = "triple_fault", cpuTemplate = "cpu_template", bootFormat = "boot_format", lastExit = "last_exit"
        case disks, rng, restoredFrom = "restored_from", trackDirtyPages = "track_dirty_pages"
        case net, vsock
    }

    /// Encodes every key, nulls included, so the shape is the same for every VM.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name); try c.encode(ownerUID, forKey: .ownerUID)
        try c.encode(state, forKey: .state); try c.encode(lifetime, forKey: .lifetime)
        try c.encode(workerPID, forKey: .workerPID); try c.encode(createdAt, forKey: .createdAt)
        try c.encode(memoryMiB, forKey: .memoryMiB); try c.encode(vcpus, forKey: .vcpus)
        try c.encode(kernel, forKey: .kernel); try c.encode(initrd, forKey: .initrd)
        try c.encode(cmdline, forKey: .cmdline); try c.encode(debugExit, forKey: .debugExit)
        try c.encode(hypercalls, forKey: .hypercalls); try c.encode(noReboot, forKey: .noReboot)
        try c.encode(tripleFault, forKey: .tripleFault); try c.encode(cpuTemplate, forKey: .cpuTemplate)
        try c.encode(bootFormat, forKey: .bootFormat); try c.encode(lastExit, forKey: .lastExit)
        try c.encode(disks, forKey: .disks); try c.encode(rng, forKey: .rng)
        try c.encode(restoredFrom, forKey: .restoredFrom); try c.encode(trackDirtyPages, forKey: .trackDirtyPages)
        try c.encode(net, forKey: .net); try c.encode(vsock, forKey: .vsock)
    }
}

/// `GET /v1/vms`.
public struct VMList: Codable, Sendable {
    public var vms: [VMInfo]
    public init(vms: [VMInfo]) { self.vms = vms }
}

/// The actions of `POST /v1/vms/{name}/actions/{action}`.
public enum VMAction: String, Codable, Sendable, CaseIterable {
    case start, pause, resume, reset, poweroff, kill
}
