import FoundationEssentials
import VMMAPI
import VMMService

/// The daemon's configuration file (`--config`, JSON). Unknown keys are refused like
/// everywhere else in the API.
///
///     {
///       "system_vms": [ { "name": "infra", "kernel": "/srv/vm/infra.elf", "memory_mib": 64 } ],
///       "quotas": {
///         "default": { "vms": 8, "memory_mib": 4096, "vcpus": 16 },
///         "uids": { "1000": { "vms": 2, "memory_mib": 512 } }
///       },
///       "connections": { "per_uid": 64, "non_root_total": 5000, "idle_seconds": 60, "request_seconds": 10 }
///     }
///
/// System VMs take the fields of a create request except `lifetime` (they have the
/// `system` lifetime: no client owns them, they start with the daemon, only root may
/// act on them). Quotas limit each non-root uid: a limit missing from a uid's entry is the
/// default's, and the default's memory limit, unless given, is the host's RAM (a missing
/// VM or vCPU limit is none).
struct DaemonConfig: Decodable {
    var systemVMs: [CreateVMRequest] = []
    var quotas = QuotaPolicy.defaults
    var connections = ConnectionLimits()

    enum CodingKeys: String, CodingKey, CaseIterable { case systemVMs = "system_vms", quotas, connections }

    init() {}

    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let k = try decoder.container(keyedBy: CodingKeys.self)
        systemVMs = try k.decodeIfPresent([CreateVMRequest].self, forKey: .systemVMs) ?? []
        quotas = try k.decodeIfPresent(QuotaSection.self, forKey: .quotas)?.policy ?? QuotaPolicy.defaults
        connections = try k.decodeIfGiven(ConnectionSection.self, forKey: .connections)?.limits ?? ConnectionLimits()
    }

    static func load(_ path: String) throws -> DaemonConfig {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return try decodeRequest(DaemonConfig.self, from: [UInt8](data))
    }
}

/// `"quotas": {"default": {...}, "uids": {"UID": {...}}}`.
private struct QuotaSection: Decodable {
    var policy: QuotaPolicy

    enum CodingKeys: String, CodingKey, CaseIterable { case standard = "default", uids }

    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let k = try decoder.container(keyedBy: CodingKeys.self)
        var standard = try k.decodeIfPresent(QuotaEntry.self, forKey: .standard)?.quota ?? Quota()
        // Unless the configuration says otherwise, nobody's guests add up to more than the host's RAM.
        standard.memoryMiB = standard.memoryMiB ?? QuotaPolicy.hostMemoryMiB
        var perUID: [UInt32: Quota] = [:]
        for (key, entry) in try k.decodeIfPresent([String: QuotaEntry].self, forKey: .uids) ?? [:] {
            guard let uid = UInt32(key) else { throw APIError(.invalidField, "quotas.uids: '\(key)' is not a uid", field: "quotas.uids") }
            perUID[uid] = entry.quota
        }
        policy = QuotaPolicy(standard: standard, perUID: perUID)
    }
}

/// `{"vms": N, "memory_mib": M, "vcpus": C}`, each optional.
private struct QuotaEntry: Decodable {
    var quota: Quota

    enum CodingKeys: String, CodingKey, CaseIterable { case vms, memoryMiB = "memory_mib", vcpus }

    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let k = try decoder.container(keyedBy: CodingKeys.self)
        quota = Quota(vms: try k.decodeIfGiven(UInt32.self, forKey: .vms).map(Int.init),
                      memoryMiB: try k.decodeIfGiven(UInt64.self, forKey: .memoryMiB),
                      vcpus: try k.decodeIfGiven(UInt32.self, forKey: .vcpus).map(Int.init))
    }
}

/// `"connections": {"per_uid": N, "non_root_total": N, "idle_seconds": S, "request_seconds": S}`,
/// each optional (`ConnectionLimits` has the defaults).
private struct ConnectionSection: Decodable {
    var limits = ConnectionLimits()

    enum CodingKeys: String, CodingKey, CaseIterable {
        case perUID = "per_uid", nonRootTotal = "non_root_total", idleSeconds = "idle_seconds", requestSeconds = "request_seconds"
    }

    init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let k = try decoder.container(keyedBy: CodingKeys.self)
        func positive(_ key: CodingKeys) throws -> Int? {
            guard let v = try k.decodeIfGiven(UInt32.self, forKey: key) else { return nil }
            guard v > 0 else { throw APIError(.invalidField, "connections.\(key.rawValue) must be at least 1", field: "connections.\(key.rawValue)") }
            return Int(v)
        }
        if let v = try positive(.perUID) { limits.perUID = v }
        limits.nonRootTotal = try positive(.nonRootTotal)
        if let v = try positive(.idleSeconds) { limits.idleSeconds = v }
        if let v = try positive(.requestSeconds) { limits.requestSeconds = v }
    }
}
