import FoundationEssentials
import VMMAPI
#if canImport(Glibc)
import Glibc
#endif

/// The daemon's descriptors as a shared resource. Every VM holds several (its guest
/// memory, images and disks, the worker's link and pidfd), so a user within its memory
/// quota could still create enough small VMs to use them all and lock everyone out.
/// Unprivileged users may take the daemon only up to `unprivilegedShare` of its
/// descriptor limit; the rest stays for root (and for what VMs already running need).
enum DescriptorBudget {
    static let unprivilegedShare = 0.75

    /// Open descriptors of this process (/proc/self/fd) and its soft RLIMIT_NOFILE.
    static func usage() -> (open: Int, limit: Int)? {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max,
              let open = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count else { return nil }
        return (open, Int(limit.rlim_cur))
    }

    /// Throws `quota_exceeded` when an unprivileged user's new VM would start from past
    /// the unprivileged share.
    static func checkUnprivileged(uid: UInt32) throws(APIError) {
        guard uid != 0, let (open, limit) = usage() else { return }
        let share = Int(Double(limit) * unprivilegedShare)
        guard open < share else {
            throw APIError(.quotaExceeded, "vmmd has \(open) of its \(limit) descriptors open; unprivileged users may use \(share): try again when VMs are gone")
        }
    }
}
