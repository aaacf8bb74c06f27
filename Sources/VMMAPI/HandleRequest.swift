/// What a library user asks the handle socket for (one JSON line): a named VM it will
/// create and run in its own process with the /dev/kvm descriptor it gets back
/// (FreeBSD's `vm_openf` with a create flag, brokered). The same ABI rules as the HTTP
/// API: unknown fields and non-zero reserved fields are refused.
public struct HandleRequest: Codable, Sendable, Equatable {
    public var name: String
    /// Guest RAM the client intends to use (counted against its quota).
    public var memoryMiB: UInt64
    public var vcpus: Int
    /// No flag is defined yet: must be 0.
    public var flags: UInt64
    /// Must be 0.
    public var reserved: UInt64

    public init(name: String, memoryMiB: UInt64 = 128, vcpus: Int = 1, flags: UInt64 = 0, reserved: UInt64 = 0) {
        self.name = name; self.memoryMiB = memoryMiB; self.vcpus = vcpus; self.flags = flags; self.reserved = reserved
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, memoryMiB = "memory_mib", vcpus, flags, reserved
    }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        memoryMiB = try c.decodeIfGiven(UInt64.self, forKey: .memoryMiB) ?? 128
        vcpus = try c.decodeIfGiven(Int.self, forKey: .vcpus) ?? 1
        flags = try c.decodeIfGiven(UInt64.self, forKey: .flags) ?? 0
        reserved = try c.decodeIfGiven(UInt64.self, forKey: .reserved) ?? 0
    }

    /// The same value checks as a create request.
    public func validate() throws(APIError) {
        try asCreateRequest.validate()
    }

    /// The record the daemon keeps: no kernel (the client loads its own), `connection`
    /// lifetime (the handle's connection).
    public var asCreateRequest: CreateVMRequest {
        CreateVMRequest(name: name, memoryMiB: memoryMiB, vcpus: vcpus, kernel: "/", lifetime: .connection,
                        start: false, flags: flags, reserved: reserved)
    }
}

/// The answer line: the handle, or an error. With `handle`, the /dev/kvm descriptor
/// travels in the same message (SCM_RIGHTS).
public struct HandleResponse: Codable, Sendable {
    public struct Handle: Codable, Sendable, Equatable {
        public var name: String
        public var ownerUID: UInt32
        public init(name: String, ownerUID: UInt32) { self.name = name; self.ownerUID = ownerUID }
        enum CodingKeys: String, CodingKey { case name, ownerUID = "owner_uid" }
    }
    public var handle: Handle?
    public var error: APIError?
    public init(handle: Handle? = nil, error: APIError? = nil) { self.handle = handle; self.error = error }
}
