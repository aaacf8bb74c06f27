/// Where a gdb stub listens: `tcp:HOST:PORT` (an IPv4 address; port 0 picks a free
/// one) or `unix:PATH`.
public enum GDBEndpoint: Equatable, Sendable, CustomStringConvertible {
    case tcp(host: String, port: UInt16)
    case unix(path: String)

    public init?(parsing text: String) {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard !path.isEmpty, path.utf8.count < 108 else { return nil }  // sun_path
            self = .unix(path: path)
        } else if text.hasPrefix("tcp:") {
            let rest = text.dropFirst(4)
            guard let colon = rest.lastIndex(of: ":"), let port = UInt16(rest[rest.index(after: colon)...]) else { return nil }
            let host = String(rest[..<colon])
            let parts = host.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 4, parts.allSatisfy({ UInt8($0) != nil }) else { return nil }
            self = .tcp(host: host, port: port)
        } else {
            return nil
        }
    }

    public var description: String {
        switch self {
        case .tcp(let host, let port): return "tcp:\(host):\(port)"
        case .unix(let path): return "unix:\(path)"
        }
    }
}
