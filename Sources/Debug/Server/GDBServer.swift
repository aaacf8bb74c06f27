import CSys
import Dispatch
import KVM
import Synchronization
import VMM
#if canImport(Glibc)
import Glibc
#endif

/// Serves gdb clients on a TCP or Unix socket, one at a time: a client that connects
/// while another is attached is turned away (its connection closed at once). Each client
/// gets a `GDBSession` over the same target; when it leaves, the machine runs on and the
/// next client may attach.
public final class GDBServer: @unchecked Sendable {
    // @unchecked: the lets are immutable; `current` and `accepting` are behind a Mutex.
    public let endpoint: GDBEndpoint
    /// The port actually bound (tcp with port 0), or nil for a Unix socket.
    public let boundPort: UInt16?
    let target: DebugTarget
    private let listener: Int32
    private let log: @Sendable (String) -> Void
    private let current = Mutex<GDBSession?>(nil)
    private let firstAttach = DispatchSemaphore(value: 0)
    private let afterFirstAttach = Mutex<(@Sendable () -> Void)?>(nil)
    private var acceptor: HostThread?

    /// Binds and listens; nothing is accepted until `start()`.
    public init(endpoint: GDBEndpoint, target: DebugTarget, log: @escaping @Sendable (String) -> Void) throws {
        self.endpoint = endpoint
        self.target = target
        self.log = log
        let fd: Int32
        switch endpoint {
        case .tcp(let host, let port): fd = csys_listen_tcp(host, port, 4)
        case .unix(let path):
            // A socket file left behind by an earlier run is replaced; anything else is refused.
            var st = stat()
            if lstat(path, &st) == 0 {
                guard st.st_mode & S_IFMT == S_IFSOCK else { throw DebugError("\(path) exists and is not a socket") }
                unlink(path)
            }
            fd = csys_listen_unix(path, 4)
        }
        guard fd >= 0 else { throw DebugError("cannot listen on \(endpoint): \(String(cString: strerror(-fd)))") }
        listener = fd
        if case .tcp = endpoint {
            let port = csys_local_port(fd)
            boundPort = port > 0 ? UInt16(port) : nil
        } else {
            boundPort = nil
        }
    }

    deinit { close(listener) }

    /// Where clients connect, with the bound port filled in.
    public var address: String {
        if case .tcp(let host, _) = endpoint, let boundPort { return "tcp:\(host):\(boundPort)" }
        return endpoint.description
    }

    /// Starts accepting clients. `afterFirstAttach` runs once, after the first client has
    /// attached (the machine stopped under it) and before anything it sends is handled:
    /// `vmmctl run --gdb-wait` starts the machine there.
    public func start(afterFirstAttach hook: (@Sendable () -> Void)? = nil) throws {
        afterFirstAttach.withLock { $0 = hook }
        acceptor = try HostThread(name: "gdb-accept") { [self] in acceptLoop() }
    }

    /// Blocks until the first client has attached.
    public func waitForFirstClient() {
        firstAttach.wait()
        firstAttach.signal()
    }

    /// Tells the attached client, if any, that the machine ended, and waits (up to
    /// `timeoutMS`) for its session to finish; then stops accepting.
    public func machineEnded(_ reason: StopReason, timeoutMS: Int = 2000) {
        if let session = current.withLock({ $0 }) {
            session.machineEnded(reason)
            session.waitUntilFinished(timeoutMS: timeoutMS)
        }
        stop()
    }

    /// Stops accepting; an attached client is disconnected (and the machine left running).
    public func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        current.withLock { $0 }?.disconnected()
        acceptor?.join()
        acceptor = nil
        if case .unix(let path) = endpoint { unlink(path) }
    }

    private func acceptLoop() {
        while true {
            let fd = csys_accept(listener)
            if fd < 0 {
                if -fd == ECONNABORTED || -fd == EMFILE || -fd == ENFILE || -fd == ENOBUFS || -fd == ENOMEM { continue }
                return  // the listener was shut down
            }
            if let busy = current.withLock({ $0 }), !busy.isFinished {
                log("gdb: a second client was turned away (one is attached)")
                close(fd)
                continue
            }
            _ = csys_set_no_delay(fd)
            serve(fd)
        }
    }

    /// Runs one client on its own threads: a reader feeding the session, and this one
    /// waiting for the session to end to close the connection.
    private func serve(_ fd: Int32) {
        let session = GDBSession(target: target, output: { bytes in Self.sendAll(fd, bytes) }, log: log)
        do {
            let hook = afterFirstAttach.withLock { h -> (@Sendable () -> Void)? in defer { h = nil }; return h }
            try session.start(afterAttach: hook)
        } catch {
            log("gdb: cannot attach: \(error)")
            close(fd)
            return
        }
        current.withLock { $0 = session }
        firstAttach.signal()
        log("gdb: client attached on \(address)")
        do {
            try HostThread(name: "gdb-conn") {
                let reader = try? HostThread(name: "gdb-read") {
                    var buffer = [UInt8](repeating: 0, count: 4096)
                    while true {
                        let n = read(fd, &buffer, buffer.count)
                        if n < 0 && errno == EINTR { continue }
                        guard n > 0 else { break }
                        session.received(Array(buffer[0 ..< n]))
                    }
                    session.disconnected()
                }
                session.waitUntilFinished()
                shutdown(fd, Int32(SHUT_RDWR))
                reader?.join()
                close(fd)
            }.detach()
        } catch {
            session.disconnected()
            session.waitUntilFinished()
            close(fd)
        }
    }

    /// Writes everything or gives up on a broken connection (no SIGPIPE).
    static func sendAll(_ fd: Int32, _ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let rest = offset == 0 ? bytes : Array(bytes[offset...])
            let n = send(fd, rest, rest.count, Int32(MSG_NOSIGNAL))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return }
            offset += n
        }
    }
}

/// What went wrong in the Debug module: a listener that could not be set up.
public struct DebugError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
