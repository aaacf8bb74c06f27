import CSys
#if canImport(Glibc)
import Glibc
#endif

/// The host side of a vsock device, as Firecracker's "hybrid vsock": one listening Unix
/// socket host processes connect to (they then write `CONNECT <port>\n`), and for a
/// connection the guest opens to host port P, a connection to the Unix socket `PATH_P`.
///
/// In `vmmctl run` the backend binds and connects itself (`VsockUnixBackend`); in a
/// sandboxed worker, which may open nothing, vmmd creates the listener with the owner's
/// permissions and makes each connection on the worker's behalf.
public protocol VsockHostBackend: AnyObject, Sendable {
    /// The listening Unix stream socket (the backend owns it; the device makes it
    /// non-blocking and accepts on it).
    var listener: Int32 { get }
    /// Connects to `PATH_port` for a connection the guest opened. Calls `completion`
    /// exactly once, on any thread (possibly before returning), with a connected
    /// stream socket the device then owns, or why it could not be made.
    func connect(port: UInt32, completion: @escaping @Sendable (Result<Int32, DeviceError>) -> Void)
}

/// A backend that binds `PATH` and connects to `PATH_P` itself (an unsandboxed VMM).
public final class VsockUnixBackend: VsockHostBackend {
    public let path: String
    public let listener: Int32

    /// Binds and listens on `path`. A socket file already there is replaced when nobody
    /// listens on it (left over from a VMM that died); anything else there is refused.
    public init(path: String, backlog: Int32 = 128) throws(DeviceError) {
        self.path = path
        listener = try Self.listen(path: path, backlog: backlog)
    }

    deinit {
        close(listener)
        unlink(path)
    }

    /// `socket`+`bind`+`listen` at `path`, replacing a stale socket.
    public static func listen(path: String, backlog: Int32) throws(DeviceError) -> Int32 {
        guard path.utf8.count < 108, !path.isEmpty else {
            throw .invalid("vsock socket path '\(path)' must be 1-107 bytes (sockaddr_un)")
        }
        let fd = csys_listen_unix_replacing_stale(path, backlog)
        if fd == -EADDRINUSE { throw .invalid("vsock socket \(path) exists and is not a stale socket") }
        guard fd >= 0 else { throw .system(operation: "listening on \(path)", errno: -fd) }
        return fd
    }

    public func connect(port: UInt32, completion: @escaping @Sendable (Result<Int32, DeviceError>) -> Void) {
        let target = "\(path)_\(port)"
        let fd = csys_connect_unix_nonblocking(target)
        completion(fd >= 0 ? .success(fd) : .failure(.system(operation: "connecting to \(target)", errno: -fd)))
    }
}

/// The line a host process sends first: `CONNECT <port>\n` (the command word in any
/// case: Kata writes it in lower case), answered with `OK <host port>\n`.
public enum VsockHandshake {
    /// The longest line accepted, newline included.
    public static let maxLine = 32

    /// The port of a `CONNECT` line (without its newline; a trailing CR is allowed);
    /// nil for anything else.
    public static func port(fromLine line: [UInt8]) -> UInt32? {
        var bytes = line[...]
        if bytes.last == UInt8(ascii: "\r") { bytes = bytes.dropLast() }
        let text = String(decoding: bytes, as: UTF8.self)
        let words = text.split(separator: " ", omittingEmptySubsequences: true)
        guard words.count == 2, words[0].lowercased() == "connect",
              words[1].utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
        return UInt32(words[1])
    }

    /// The answer to an accepted `CONNECT`.
    public static func ok(hostPort: UInt32) -> [UInt8] { Array("OK \(hostPort)\n".utf8) }
}
