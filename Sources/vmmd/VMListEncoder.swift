import FoundationEssentials
import Synchronization
import VMMAPI
import VMMService

/// Encodes `GET /v1/vms` answers, keeping each VM's JSON from the last answer and
/// encoding again only a VM whose `VMInfo` changed since.
///
/// Why: JSONEncoder spends ~30 µs on one VMInfo (its generic boxing and its sorted
/// keys), so a list of 1,000 idle VMs cost ~35 ms of daemon CPU per request, while
/// comparing an unchanged VMInfo with the one last encoded costs well under a
/// microsecond. The answer is byte for byte what `APIResponse.json(VMList(...))` gives:
/// the same encoder (`APIResponse.jsonEncoder`) writes no whitespace, and `vms` is
/// VMList's only key.
final class VMListEncoder: Sendable {
    private struct Key: Hashable {
        var ownerUID: UInt32?
        var name: String
    }

    private struct Entry {
        var info: VMInfo
        var json: [UInt8]
    }

    /// Every VM of each caller's last answer. An answer replaces what it covers (a root
    /// caller's every VM, a user's their own), so a destroyed VM's entry goes at the next
    /// answer that would have listed it, and what is kept is bounded by the quotas.
    private let entries = Mutex<[Key: Entry]>([:])

    /// The whole response for `infos` (what `VMService.list(caller:)` gave `caller`), in
    /// their order.
    func response(for infos: [VMInfo], caller: Caller) -> APIResponse {
        let known = entries.withLock { $0 }
        var current: [Key: Entry] = [:]
        current.reserveCapacity(infos.count)
        var body = Array(#"{"vms":["#.utf8)
        let encoder = APIResponse.jsonEncoder()
        for (index, info) in infos.enumerated() {
            let key = Key(ownerUID: info.ownerUID, name: info.name)
            let entry: Entry
            if let old = known[key], old.info == info {
                entry = old
            } else {
                do {
                    entry = Entry(info: info, json: [UInt8](try encoder.encode(info)))
                } catch {
                    return .error(APIError(.internalError, "cannot encode the response: \(error)"))
                }
            }
            current[key] = entry
            if index > 0 { body.append(UInt8(ascii: ",")) }
            body += entry.json
        }
        body += Array("]}\n".utf8)
        entries.withLock { stored in
            if caller.isRoot {
                stored = current
            } else {
                stored = stored.filter { $0.key.ownerUID != caller.uid }.merging(current) { _, new in new }
            }
        }
        return APIResponse(status: .ok, contentType: "application/json", body: body)
    }
}
