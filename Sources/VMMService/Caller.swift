import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// Who is calling: the peer credentials of the API connection (SO_PEERCRED), with the
/// supplementary groups of that process.
public struct Caller: Sendable, Hashable, Codable {
    public var uid: UInt32
    public var gid: UInt32
    /// The connecting process (for the `process` lifetime). 0 when unknown.
    public var pid: Int32
    public var groups: [UInt32]

    public init(uid: UInt32, gid: UInt32, pid: Int32, groups: [UInt32]) {
        self.uid = uid; self.gid = gid; self.pid = pid; self.groups = groups
    }

    public var isRoot: Bool { uid == 0 }

    /// The daemon itself (system VMs, restoring persistent VMs' files as root).
    public static var daemon: Caller {
        Caller(uid: getuid(), gid: getgid(), pid: getpid(), groups: [])
    }

    /// The supplementary groups of `pid`, from /proc, if that process still has `uid`.
    /// SO_PEERCRED carries no groups and NIO does not expose the socket for
    /// SO_PEERGROUPS; /proc is read while the connection is open, and the uid check
    /// guards against a reused pid.
    public static func supplementaryGroups(pid: Int32, uid: UInt32) -> [UInt32] {
        guard pid > 0, let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return [] }
        var groups: [UInt32] = []
        var uidMatches = false
        for line in status.split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == "\t" || $0 == " " })
            if fields.first == "Uid:", fields.count >= 2 { uidMatches = UInt32(fields[1]) == uid }
            if fields.first == "Groups:" { groups = fields.dropFirst().compactMap { UInt32($0) } }
        }
        return uidMatches ? groups : []
    }
}

/// Who owns a VM: a user, or no one (a system VM from the daemon's configuration).
public enum Owner: Sendable, Hashable, CustomStringConvertible {
    case user(UInt32)
    case system

    public var uid: UInt32? {
        if case .user(let uid) = self { return uid }
        return nil
    }

    public var description: String {
        switch self {
        case .user(let uid): return "uid \(uid)"
        case .system: return "system"
        }
    }
}

/// Failures inside the service that are not the client's fault.
public enum ServiceError: Error, CustomStringConvertible {
    case system(String, Int32)
    case failed(String)

    public var description: String {
        switch self {
        case .system(let op, let e): return "\(op) failed: \(String(cString: strerror(e)))"
        case .failed(let what): return what
        }
    }
}
