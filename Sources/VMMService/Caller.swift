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
    /// guards against a reused pid. Read on every connection, so parsed as bytes: the
    /// String-splitting parse it replaces was 7% of vmmd's CPU in vmm-bench's lifecycle run.
    public static func supplementaryGroups(pid: Int32, uid: UInt32) -> [UInt32] {
        guard pid > 0, let status = readProcFile("/proc/\(pid)/status") else { return [] }
        return groups(fromStatus: status[...], uid: uid)
    }

    /// The `Groups:` of a /proc/PID/status text when its `Uid:` line's first (real) uid
    /// is `uid`; empty otherwise. A field that is not a decimal uint32 ends the list there.
    static func groups(fromStatus status: ArraySlice<UInt8>, uid: UInt32) -> [UInt32] {
        var groups: [UInt32] = []
        var uidMatches = false
        var rest = status
        while !rest.isEmpty {
            let end = rest.firstIndex(of: UInt8(ascii: "\n")) ?? rest.endIndex
            let line = rest[rest.startIndex ..< end]
            rest = end < rest.endIndex ? rest[(end + 1)...] : []
            if line.starts(with: "Uid:".utf8) {
                uidMatches = numbers(line.dropFirst(4)).first == uid
            } else if line.starts(with: "Groups:".utf8) {
                groups = numbers(line.dropFirst(7))
            }
        }
        return uidMatches ? groups : []
    }

    /// The decimal numbers of `text`, separated by tabs and spaces.
    private static func numbers(_ text: ArraySlice<UInt8>) -> [UInt32] {
        var out: [UInt32] = []
        var value: UInt32 = 0, digits = 0
        for byte in text {
            if byte >= 0x30, byte <= 0x39 {
                let (times10, o1) = value.multipliedReportingOverflow(by: 10)
                let (sum, o2) = times10.addingReportingOverflow(UInt32(byte - 0x30))
                guard !o1, !o2 else { return out }
                value = sum
                digits += 1
            } else if byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") {
                if digits > 0 { out.append(value) }
                value = 0; digits = 0
            } else {
                return out
            }
        }
        if digits > 0 { out.append(value) }
        return out
    }

    /// A small /proc file's bytes (read(2) until the end), nil when it cannot be read.
    private static func readProcFile(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 1 << 20 {
            let n = read(fd, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { return nil }
            if n == 0 { return bytes }
            bytes += chunk[0 ..< n]
        }
        return nil   // not a status file: a cut-off one could end in half a gid
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
