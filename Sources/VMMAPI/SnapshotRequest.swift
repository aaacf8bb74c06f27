/// `PUT /v1/vms/{name}/snapshot`: where to write a snapshot of a running or paused VM.
/// The VM is paused for the write and resumed afterwards unless `paused` says to leave
/// it paused (a paused VM stays paused either way).
public struct SnapshotRequest: Codable, Sendable, Equatable {
    /// An absolute path of a directory that does not exist or is empty; created and
    /// written with the caller's permissions.
    public var path: String
    /// Write only the pages changed since the VM's last snapshot (or the snapshot it was
    /// restored from), naming that one as the parent. Needs dirty-page tracking (a VM
    /// created with `track_dirty_pages`, or restored copy-on-write).
    public var diff: Bool
    /// Leave the VM paused once the snapshot is written.
    public var paused: Bool
    public var flags: UInt64
    public var reserved: UInt64

    public init(path: String, diff: Bool = false, paused: Bool = false) {
        self.path = path; self.diff = diff; self.paused = paused; flags = 0; reserved = 0
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case path, diff, paused, flags, reserved }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        path = try c.decode(String.self, forKey: .path)
        diff = try c.decodeIfGiven(Bool.self, forKey: .diff) ?? false
        paused = try c.decodeIfGiven(Bool.self, forKey: .paused) ?? false
        flags = try c.decodeIfGiven(UInt64.self, forKey: .flags) ?? 0
        reserved = try c.decodeIfGiven(UInt64.self, forKey: .reserved) ?? 0
    }

    public func validate() throws(APIError) {
        try CreateVMRequest.validatePath(path, field: "path")
        guard path.utf8.count > 1 else { throw APIError(.invalidField, "path must name a directory, not /", field: "path") }
        guard flags == 0 else { throw APIError(.reservedNonZero, "flags: no flag is defined yet, must be 0", field: "flags") }
        guard reserved == 0 else { throw APIError(.reservedNonZero, "reserved must be 0", field: "reserved") }
    }
}

/// The answer to a snapshot request.
public struct SnapshotInfo: Codable, Sendable, Equatable {
    public struct Parent: Codable, Sendable, Equatable {
        public var id: String
        public var path: String
        public init(id: String, path: String) { self.id = id; self.path = path }
    }

    public var id: String
    public var path: String
    /// "full" or "diff".
    public var kind: String
    public var parent: Parent?
    /// Bytes of guest memory written (the memory file's data; the rest are holes).
    public var memoryBytes: UInt64
    /// The memory file's length (the guest's RAM).
    public var memoryFileBytes: UInt64
    public var stateBytes: UInt64
    public var durationMs: Double
    /// The VM afterwards.
    public var vm: VMInfo

    public init(id: String, path: String, kind: String, parent: Parent?, memoryBytes: UInt64, memoryFileBytes: UInt64,
                stateBytes: UInt64, durationMs: Double, vm: VMInfo) {
        self.id = id; self.path = path; self.kind = kind; self.parent = parent; self.memoryBytes = memoryBytes
        self.memoryFileBytes = memoryFileBytes; self.stateBytes = stateBytes; self.durationMs = durationMs; self.vm = vm
    }

    enum CodingKeys: String, CodingKey {
        case id, path, kind, parent, memoryBytes = "memory_bytes", memoryFileBytes = "memory_file_bytes"
        case stateBytes = "state_bytes", durationMs = "duration_ms", vm
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id); try c.encode(path, forKey: .path); try c.encode(kind, forKey: .kind)
        try c.encode(parent, forKey: .parent); try c.encode(memoryBytes, forKey: .memoryBytes)
        try c.encode(memoryFileBytes, forKey: .memoryFileBytes); try c.encode(stateBytes, forKey: .stateBytes)
        try c.encode(durationMs, forKey: .durationMs); try c.encode(vm, forKey: .vm)
    }
}

/// `restore_from` in `POST /v1/vms`: build the VM from a snapshot instead of a kernel.
/// Its shape (memory, vCPUs, devices, command line...) is the snapshot's.
public struct RestoreRequest: Codable, Sendable, Equatable {
    public enum Memory: String, Codable, Sendable, CaseIterable {
        /// Map the snapshot's memory file copy-on-write: nothing is read at restore, and
        /// clones of one snapshot share its pages until they write them.
        case copyOnWrite = "copy_on_write"
        /// Copy the snapshot's memory into the VM's own guest memory first.
        case copy
    }

    public enum Clock: String, Codable, Sendable, CaseIterable {
        /// The guest's clocks continue from where they stopped.
        case `continue`
        /// The guest's clocks move on by the wall time since the snapshot.
        case advance
    }

    /// The snapshot's directory (absolute; its parents are found from it).
    public var path: String
    public var memory: Memory
    public var clock: Clock

    public init(path: String, memory: Memory = .copyOnWrite, clock: Clock = .continue) {
        self.path = path; self.memory = memory; self.clock = clock
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case path, memory, clock }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        path = try c.decode(String.self, forKey: .path)
        memory = try c.decodeIfGiven(Memory.self, forKey: .memory) ?? .copyOnWrite
        clock = try c.decodeIfGiven(Clock.self, forKey: .clock) ?? .continue
    }
}
