import Foundation
import VMMAPI

/// The daemon's configuration file (`--config`, JSON). Unknown keys are refused like
/// everywhere else in the API.
///
///     { "system_vms": [ { "name": "infra", "kernel": "/srv/vm/infra.elf", "memory_mib": 64 } ] }
///
/// System VMs take the fields of a create request except `lifetime` (they have the
/// `system` lifetime: no client owns them, they start with the daemon, only root may
/// act on them).
struct DaemonConfig: Decodable {
    var systemVMs: [CreateVMRequest] = []

    enum CodingKeys: String, CodingKey, CaseIterable { case systemVMs = "system_vms" }

    init() {}

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: AnyKey.self)
        for key in c.allKeys where CodingKeys(rawValue: key.stringValue) == nil {
            throw APIError(.unknownField, "unknown key '\(key.stringValue)' in the configuration", field: key.stringValue)
        }
        let k = try decoder.container(keyedBy: CodingKeys.self)
        systemVMs = try k.decodeIfPresent([CreateVMRequest].self, forKey: .systemVMs) ?? []
    }

    static func load(_ path: String) throws -> DaemonConfig {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return try JSONDecoder().decode(DaemonConfig.self, from: data)
    }

    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}
