/// How long a VM lives (FreeBSD's destroy-on-close and Gunyah's refcounted VM, done
/// three ways).
public enum Lifetime: String, Codable, Sendable, CaseIterable {
    /// Destroyed when the API connection that created it closes.
    case connection
    /// Destroyed when the process that created it exits (pidfd).
    case process
    /// Kept until destroyed; recorded in the state directory and re-created when the
    /// daemon starts again.
    case persistent
    /// A system VM from the daemon's configuration: no client owns it (not accepted in
    /// a create request).
    case system
}

/// Whether the VMM finishes what the host's instruction emulator refuses (the library's
/// `EmulationAssistMode`): `auto` turns it on only where the host needs it.
public enum EmulationAssistSetting: String, Codable, Sendable, CaseIterable {
    case auto, on, off
}

/// What a triple fault does to a VM.
public enum TripleFaultPolicy: String, Codable, Sendable, CaseIterable {
    case stop, reboot
}

/// `POST /v1/vms`: what to create. Every field the server does not know, every reserved
/// field or flag that is not zero, is refused (ABI rule: room to grow, nothing ignored).
public struct CreateVMRequest: Codable, Sendable, Equatable {
    public var name: String
    /// Guest RAM in MiB.
    public var memoryMiB: UInt64
    public var vcpus: Int
    /// Path of the kernel image, opened with the caller's permissions.
    public var kernel: String
    public var initrd: String?
    public var cmdline: String
    public var debugExit: Bool
    public var hypercalls: Bool
    /// End the guest with `reset` instead of rebooting it.
    public var noReboot: Bool
    /// What a triple fault does: stop the VM (default) or reboot it.
    public var tripleFault: TripleFaultPolicy
    /// The CPU template (`vmmctl cpu-templates`): "host" (default) or "emulation-safe".
    public var cpuTemplate: String
    /// `emulation_assist`: auto (default), on or off.
    public var emulationAssist: EmulationAssistSetting
    public var lifetime: Lifetime
    /// virtio-blk disks, in order (the first is /dev/vda).
    public var disks: [DiskRequest] = []
    /// A virtio-rng device.
    public var rng = false
    /// Log the pages that change, so that the VM's snapshots can be diffs.
    public var trackDirtyPages = false
    /// Build the VM from this snapshot instead of booting `kernel`: its shape is the
    /// snapshot's, so none of the fields that describe the machine may be given with it
    /// (but `net` and `vsock`, the host ends of those devices).
    public var restoreFrom: RestoreRequest?
    /// virtio-net devices on taps, in order.
    public var net: [NetRequest] = []
    /// A virtio-vsock device.
    public var vsock: VsockRequest?
    /// Start the guest right away.
    public var start: Bool
    /// No flag is defined yet: must be 0.
    public var flags: UInt64
    /// Must be 0.
    public var reserved: UInt64

    public init(name: String, memoryMiB: UInt64 = 128, vcpus: Int = 1, kernel: String, initrd: String? = nil,
                cmdline: String = "", debugExit: Bool = false, hypercalls: Bool = false, noReboot: Bool = false,
                tripleFault: TripleFaultPolicy = .stop, cpuTemplate: String = "host", lifetime: Lifetime = .persistent,
                start: Bool = true, flags: UInt64 = 0, reserved: UInt64 = 0, emulationAssist: EmulationAssistSetting = .auto) {
        self.tripleFault = tripleFault
        self.emulationAssist = emulationAssist
        self.cpuTemplate = cpuTemplate
        self.name = name; self.memoryMiB = memoryMiB; self.vcpus = vcpus; self.kernel = kernel; self.initrd = initrd
        self.cmdline = cmdline; self.debugExit = debugExit; self.hypercalls = hypercalls; self.noReboot = noReboot
        self.lifetime = lifetime; self.start = start; self.flags = flags; self.reserved = reserved
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, memoryMiB = "memory_mib", vcpus, kernel, initrd, cmdline, debugExit = "debug_exit"
        case hypercalls, noReboot = "no_reboot", tripleFault = "triple_fault", cpuTemplate = "cpu_template", lifetime, start, flags, reserved
        case emulationAssist = "emulation_assist"
        case disks, rng, trackDirtyPages = "track_dirty_pages", restoreFrom = "restore_from"
        case net, vsock
    }

    /// What a request with `restore_from` may also say: the rest is the snapshot's.
    /// The host ends of a network or vsock device may be given too (each clone of a
    /// snapshot needs a tap and a socket of its own); otherwise they are the snapshot's.
    static let restoreKeys: Set<CodingKeys> = [.name, .lifetime, .start, .flags, .reserved, .restoreFrom, .net, .vsock]

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        restoreFrom = try c.decodeIfGiven(RestoreRequest.self, forKey: .restoreFrom)
        if restoreFrom != nil, let given = CodingKeys.allCases.first(where: { c.contains($0) && !Self.restoreKeys.contains($0) }) {
            throw APIError(.invalidField, "\(given.stringValue) comes from the snapshot and cannot be given with restore_from", field: given.stringValue)
        }
        name = try c.decode(String.self, forKey: .name)
        memoryMiB = try c.decodeIfGiven(UInt64.self, forKey: .memoryMiB) ?? 128
        vcpus = try c.decodeIfGiven(Int.self, forKey: .vcpus) ?? 1
        kernel = restoreFrom == nil ? try c.decode(String.self, forKey: .kernel) : ""
        initrd = try c.decodeIfGiven(String.self, forKey: .initrd)
        cmdline = try c.decodeIfGiven(String.self, forKey: .cmdline) ?? ""
        debugExit = try c.decodeIfGiven(Bool.self, forKey: .debugExit) ?? false
        hypercalls = try c.decodeIfGiven(Bool.self, forKey: .hypercalls) ?? false
        noReboot = try c.decodeIfGiven(Bool.self, forKey: .noReboot) ?? false
        tripleFault = try c.decodeIfGiven(TripleFaultPolicy.self, forKey: .tripleFault) ?? .stop
        cpuTemplate = try c.decodeIfGiven(String.self, forKey: .cpuTemplate) ?? "host"
        emulationAssist = try c.decodeIfGiven(EmulationAssistSetting.self, forKey: .emulationAssist) ?? .auto
        lifetime = try c.decodeIfGiven(Lifetime.self, forKey: .lifetime) ?? .persistent
        start = try c.decodeIfGiven(Bool.self, forKey: .start) ?? true
        disks = try c.decodeIfGiven([DiskRequest].self, forKey: .disks) ?? []
        rng = try c.decodeIfGiven(Bool.self, forKey: .rng) ?? false
        trackDirtyPages = try c.decodeIfGiven(Bool.self, forKey: .trackDirtyPages) ?? false
        net = try c.decodeIfGiven([NetRequest].self, forKey: .net) ?? []
        vsock = try c.decodeIfGiven(VsockRequest.self, forKey: .vsock)
        flags = try c.decodeIfGiven(UInt64.self, forKey: .flags) ?? 0
        reserved = try c.decodeIfGiven(UInt64.self, forKey: .reserved) ?? 0
    }

    /// Limits a request is checked against.
    public static let maxNameLength = 64
    public static let maxMemoryMiB: UInt64 = 1 << 20
    public static let maxVCPUs = 254
    public static let maxCmdlineLength = 4095
    public static let maxPathLength = 4096

    /// Checks the values (the types were checked by decoding). Throws the first problem,
    /// naming its field.
    public func validate() throws(APIError) {
        try Self.validateName(name)
        guard (2 ... Self.maxMemoryMiB).contains(memoryMiB) else {
            throw APIError(.invalidField, "memory_mib must be between 2 and \(Self.maxMemoryMiB)", field: "memory_mib")
        }
        guard (1 ... Self.maxVCPUs).contains(vcpus) else {
            throw APIError(.invalidField, "vcpus must be between 1 and \(Self.maxVCPUs)", field: "vcpus")
        }
        if let restoreFrom {
            try Self.validatePath(restoreFrom.path, field: "restore_from.path")
        } else {
            try Self.validatePath(kernel, field: "kernel")
        }
        if let initrd { try Self.validatePath(initrd, field: "initrd") }
        // Lengths in characters (Unicode scalars), as JSON Schema's maxLength counts them:
        // the contract and the server agree on every string. A kernel that takes fewer
        // bytes of command line refuses a longer one when the image is loaded.
        guard cmdline.unicodeScalars.count <= Self.maxCmdlineLength, !cmdline.utf8.contains(0) else {
            throw APIError(.invalidField, "cmdline must be at most \(Self.maxCmdlineLength) characters with no NUL", field: "cmdline")
        }
        try DiskRequest.validate(disks)
        try NetRequest.validate(net)
        try vsock?.validate()
        guard lifetime != .system else {
            throw APIError(.invalidField, "lifetime 'system' is for VMs in the daemon's configuration; use connection, process or persistent", field: "lifetime")
        }
        guard flags == 0 else { throw APIError(.reservedNonZero, "flags: no flag is defined yet, must be 0", field: "flags") }
        guard reserved == 0 else { throw APIError(.reservedNonZero, "reserved must be 0", field: "reserved") }
    }

    /// Names: 1-64 characters of [A-Za-z0-9._-], not starting with '.' or '-' (they
    /// become file names in the state directory).
    public static func validateName(_ name: String) throws(APIError) {
        let bytes = Array(name.utf8)
        guard (1 ... maxNameLength).contains(bytes.count) else {
            throw APIError(.invalidField, "name must be 1 to \(maxNameLength) characters", field: "name")
        }
        let allowed = { (b: UInt8) in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2E || b == 0x5F || b == 0x2D
        }
        guard bytes.allSatisfy(allowed), bytes[0] != 0x2E, bytes[0] != 0x2D else {
            throw APIError(.invalidField, "name may only hold letters, digits, '.', '_' and '-', and must not start with '.' or '-'", field: "name")
        }
    }

    static func validatePath(_ path: String, field: String) throws(APIError) {
        // The first byte, not the first Character: "/" followed by a combining mark or an
        // emoji modifier is one grapheme, and String.hasPrefix would say it is no "/".
        guard path.utf8.first == UInt8(ascii: "/"), path.unicodeScalars.count <= maxPathLength, !path.utf8.contains(0) else {
            throw APIError(.invalidField, "\(field) must be an absolute path of at most \(maxPathLength) characters with no NUL", field: field)
        }
    }
}
