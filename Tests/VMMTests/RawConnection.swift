import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A plain Unix-socket connection for tests that need what HTTP clients do not do:
/// garbage, half-sent heads, a half-close, or just holding a connection open.
final class RawConnection {
    private(set) var fd: Int32

    /// Connects to `path`; nil when the connect fails (refused, or the backlog is full).
    init?(path: String) {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        // A failed init still runs deinit: close here and forget the number, never twice.
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { close(); return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { close(); return nil }
    }

    deinit { close() }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    @discardableResult
    func send(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, bytes.count, Int32(MSG_NOSIGNAL)) } == bytes.count
    }

    func shutdownWrite() { _ = shutdown(fd, Int32(SHUT_WR)) }

    /// Everything the server sends within `seconds` (or until what came so far contains
    /// `until`), and whether it closed the connection (EOF or reset) in that time.
    func receive(for seconds: Double, until: String? = nil) -> (text: String, closed: Bool) {
        var out: [UInt8] = []
        let deadline = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let left = max(1, Int32(deadline.timeIntervalSinceNow * 1000))
            guard poll(&p, 1, left) > 0 else { continue }
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { return (String(decoding: out, as: UTF8.self), true) }
            out += buffer[0 ..< n]
            if let until, String(decoding: out, as: UTF8.self).contains(until) { break }
        }
        return (String(decoding: out, as: UTF8.self), false)
    }

    /// The body of a chunked response received so far (`text` from its status line on),
    /// chunk framing removed; a chunk cut short counts as far as it came.
    static func dechunked(_ text: String) -> String {
        guard let start = text.range(of: "\r\n\r\n") else { return "" }
        var rest = Substring(text[start.upperBound...])
        var body = ""
        while let line = rest.range(of: "\r\n"), let size = Int(rest[..<line.lowerBound], radix: 16), size > 0 {
            let data = rest[line.upperBound...]
            body += String(data.utf8.prefix(size)).map { String($0) } ?? ""
            guard data.utf8.count >= size + 2 else { break }
            rest = Substring(String(data.utf8.dropFirst(size + 2)) ?? "")
        }
        return body
    }

    /// Reads a chunked stream until its body so far contains `text`, for up to `seconds`.
    func stream(until text: String, within seconds: Double, after seen: inout String) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if Self.dechunked(seen).contains(text) { return true }
            let r = receive(for: 0.2)
            seen += r.text
            if r.closed { break }
        }
        return Self.dechunked(seen).contains(text)
    }
}
