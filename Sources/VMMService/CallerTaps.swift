import CSys
import FoundationEssentials
import VMMAPI
#if canImport(Glibc)
import Glibc
#endif

/// Opens a tap for a client: only one that exists already (vmmd, as root, would create
/// any name it is given) and that the caller owns — its owner (TUNSETOWNER) is the
/// caller, or its group (TUNSETGROUP) is one of the caller's groups: the rule the
/// kernel itself applies to an unprivileged TUNSETIFF. Root may open any tap.
enum CallerTaps {
    /// The tap `name` in vmmd's network namespace, attached with IFF_TAP | IFF_NO_PI |
    /// IFF_VNET_HDR.
    static func open(name: String, for caller: Caller) -> Result<Int32, APIError> {
        let sys = "/sys/class/net/\(name)"
        guard let flags = number(sys + "/tun_flags"), let index = number(sys + "/ifindex") else {
            return .failure(APIError(.imageRejected, "no tap named \(name)"))
        }
        guard flags & 0x0002 != 0 else { return .failure(APIError(.imageRejected, "\(name) is a tun, not a tap")) }
        if caller.uid != 0 {
            let owner = number(sys + "/owner") ?? -1, group = number(sys + "/group") ?? -1
            let ownsIt = owner >= 0 && UInt32(owner) == caller.uid
            let inGroup = group >= 0 && (UInt32(group) == caller.gid || caller.groups.contains(UInt32(group)))
            guard ownsIt || inGroup else {
                return .failure(APIError(.forbidden, "tap \(name) belongs to neither uid \(caller.uid) nor one of its groups (ip tuntap add \(name) mode tap user USER)"))
            }
        }
        let fd = csys_tap_open(name)
        guard fd >= 0 else { return .failure(APIError(.imageRejected, "tap \(name): \(String(cString: strerror(-fd)))")) }
        // The interface checked is the one attached: not one deleted and re-made meanwhile.
        guard number(sys + "/ifindex") == index else {
            close(fd)
            return .failure(APIError(.imageRejected, "tap \(name) changed while it was opened"))
        }
        return .success(fd)
    }

    private static func number(_ path: String) -> Int64? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        let t = text.filter { !$0.isWhitespace }   // sysfs: one number and a newline
        return t.hasPrefix("0x") ? Int64(t.dropFirst(2), radix: 16) : Int64(t)
    }
}
