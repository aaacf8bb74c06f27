import Synchronization
import VMMAPI
#if canImport(Glibc)
import Glibc
#endif

/// How many connections the daemon's sockets take, and how long they may sit idle.
/// Every connection is a descriptor of the daemon's; without these, one unprivileged
/// user holding idle or half-sent connections could take every descriptor the daemon
/// has and lock everyone out, root included.
public struct ConnectionLimits: Sendable, Equatable {
    /// Open connections one non-root uid may hold on one socket (the API, the handle
    /// socket), each counted separately.
    public var perUID = 64
    /// Open connections all non-root uids together may hold on the daemon's sockets.
    /// Root is never counted nor refused: whatever the others hold, it gets in. Nil:
    /// a quarter of the daemon's descriptor limit (RLIMIT_NOFILE), so that the rest
    /// stays for VMs (each holds a few) and for root.
    public var nonRootTotal: Int?
    /// An API connection with no request under way is closed after this long, unless
    /// it holds `connection`-lifetime VMs (it is meant to stay). A console follow is a
    /// request under way for as long as it streams.
    public var idleSeconds = 60
    /// A request's head and body must have arrived this long after its first byte.
    public var requestSeconds = 10

    public init() {}

    /// `nonRootTotal`, or its default from the descriptor limit.
    public var effectiveNonRootTotal: Int {
        if let nonRootTotal { return nonRootTotal }
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max else { return 4096 }
        return max(16, Int(limit.rlim_cur / 4))
    }
}

/// Counts the connections of one socket per uid, against `ConnectionLimits`, and all
/// non-root connections of the daemon together (`NonRootConnections`, shared by the
/// sockets).
public final class ConnectionLimiter: Sendable {
    public let perUID: Int
    private let total: NonRootConnections
    private let counts = Mutex<[UInt32: Int]>([:])

    public init(perUID: Int, total: NonRootConnections) {
        self.perUID = perUID; self.total = total
    }

    /// Takes a place for a new connection of `uid`, or says why there is none
    /// (`quota_exceeded`). Every admitted connection is `release`d once when it ends.
    public func admit(uid: UInt32) throws(APIError) {
        guard uid != 0 else { return }
        try counts.withLock { counts throws(APIError) in
            let held = counts[uid, default: 0]
            guard held < perUID else {
                throw APIError(.quotaExceeded, "uid \(uid) may hold \(perUID) connections to this socket at once")
            }
            guard total.take() else {
                throw APIError(.quotaExceeded, "vmmd holds as many connections of unprivileged users as it takes; try again later")
            }
            counts[uid] = held + 1
        }
    }

    public func release(uid: UInt32) {
        guard uid != 0 else { return }
        counts.withLock { counts in
            guard let held = counts[uid] else { return }
            counts[uid] = held > 1 ? held - 1 : nil
            total.give()
        }
    }
}

/// The daemon-wide count of non-root connections.
public final class NonRootConnections: Sendable {
    public let limit: Int
    private let open = Atomic<Int>(0)

    public init(limit: Int) { self.limit = limit }

    func take() -> Bool {
        if open.wrappingAdd(1, ordering: .relaxed).newValue <= limit { return true }
        open.wrappingSubtract(1, ordering: .relaxed)
        return false
    }

    func give() { open.wrappingSubtract(1, ordering: .relaxed) }
}
