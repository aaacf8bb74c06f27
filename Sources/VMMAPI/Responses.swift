/// `GET /v1/version`.
public struct VersionInfo: Codable, Sendable, Equatable {
    public var version: String
    public var api: String
    public init(version: String, api: String) { self.version = version; self.api = api }

    /// This build's version.
    public static let current = VersionInfo(version: "0.1.0", api: "v1")
}

/// `GET /v1/capabilities`: what the host's KVM and this daemon offer.
public struct CapabilitiesInfo: Codable, Sendable {
    public struct Capability: Codable, Sendable {
        public var name: String
        public var value: Int32
        public init(name: String, value: Int32) { self.name = name; self.value = value }
    }
    public var kvmAPIVersion: Int32
    public var kvm: [Capability]
    public var maxVCPUs: Int
    public var maxMemoryMiB: UInt64
    public var lifetimes: [Lifetime]
    public var actions: [VMAction]

    public init(kvmAPIVersion: Int32, kvm: [Capability], maxVCPUs: Int, maxMemoryMiB: UInt64) {
        self.kvmAPIVersion = kvmAPIVersion; self.kvm = kvm; self.maxVCPUs = maxVCPUs; self.maxMemoryMiB = maxMemoryMiB
        lifetimes = [.connection, .process, .persistent]
        actions = VMAction.allCases
    }

    enum CodingKeys: String, CodingKey {
        case kvmAPIVersion = "kvm_api_version", kvm, maxVCPUs = "max_vcpus", maxMemoryMiB = "max_memory_mib"
        case lifetimes, actions
    }
}

/// `GET /v1/vms/{name}/stats`: per scope ("vm", "vcpu0", ...), per source ("kvm" for
/// KVM's binary statistics, "vmm" for the VMM's counters, "hypercall" for calls), the
/// named values.
public struct StatsInfo: Codable, Sendable {
    public var name: String
    public var scopes: [String: [String: [String: UInt64]]]
    public init(name: String, scopes: [String: [String: [String: UInt64]]]) { self.name = name; self.scopes = scopes }
}
