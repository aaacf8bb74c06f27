import CSys
import Dispatch
import FoundationEssentials
import KVM
import Logging
import Synchronization
import VMMAPI
#if canImport(Glibc)
import Glibc
#endif

/// The handle socket: the vmmctl-device model on Linux. A permitted user asks for a
/// named VM; the daemon checks policy and quota, records the name, the owner and a
/// `connection` lifetime, and hands back a /dev/kvm descriptor (SCM_RIGHTS). The client
/// then creates and runs the VM in its own process; when it closes the connection (or
/// exits), the record and its quota go.
///
/// Protocol, per connection: one JSON `HandleRequest` line; one JSON `HandleResponse`
/// line back, carrying the descriptor on success; then the connection stays open, idle,
/// for as long as the client holds the VM.
///
/// Plain blocking sockets on a thread per connection: NIO cannot pass descriptors, and
/// handles are few and long-lived.
public final class HandleBroker: Sendable {
    let path: String
    let listener: Int32
    let service: VMService
    let logger: Logger
    private let acceptor = Mutex<HostThread?>(nil)
    private let stopping = Atomic<Bool>(false)

    /// Largest request line accepted.
    static let maxRequest = 64 << 10
    /// Handle connections served at once; more are closed at once (each holds a thread),
    /// except root's.
    static let maxConnections = 256
    /// How long a client may take to send its request.
    static let requestTimeoutSeconds: Int32 = 5
    private let connections = Atomic<Int>(0)

    /// Handle connections per uid (root is not limited, so it always gets in).
    let limiter: ConnectionLimiter

    public init(path: String, service: VMService, logger: Logger, limiter: ConnectionLimiter) throws {
        unlink(path)
        let fd = csys_listen_unix(path, 64)
        guard fd >= 0 else { throw ServiceError.system("listening on \(path)", -fd) }
        self.path = path
        self.listener = fd
        self.service = service
        self.logger = logger
        self.limiter = limiter
        let thread = try HostThread(name: "handle-accept") { [self] in acceptLoop() }
        acceptor.withLock { $0 = thread }
    }

    public func shutdown() {
        stopping.store(true, ordering: .releasing)
        Glibc.shutdown(listener, Int32(SHUT_RDWR))
        acceptor.withLock { t -> HostThread? in defer { t = nil }; return t }?.join()
        close(listener)
        unlink(path)
    }

    private func acceptLoop() {
        while !stopping.load(ordering: .acquiring) {
            let fd = csys_accept(listener)
            guard fd >= 0 else {
                if stopping.load(ordering: .acquiring) { return }
                usleep(10_000)   // EMFILE and friends: back off, keep serving
                continue
            }
            // Root always gets in (its connections count, but are never refused).
            var pid: pid_t = 0, uid: uid_t = 0, gid: gid_t = 0
            let root = csys_peer_credentials(fd, &pid, &uid, &gid) == 0 && uid == 0
            guard connections.wrappingAdd(1, ordering: .relaxed).newValue <= Self.maxConnections || root else {
                connections.wrappingSubtract(1, ordering: .relaxed)
                close(fd)
                continue
            }
            do {
                try HostThread(name: "handle-conn") { [self] in
                    serve(HandleConnection(fd), fd)
                    connections.wrappingSubtract(1, ordering: .relaxed)
                }.detach()
            } catch {
                connections.wrappingSubtract(1, ordering: .relaxed)
                close(fd)
            }
        }
    }

    /// One client: request, answer, then hold the record until the connection ends.
    /// `connection` owns `fd`: every exit path closes it through `connection`.
    private func serve(_ connection: HandleConnection, _ fd: Int32) {
        defer { connection.close() }
        var pid: pid_t = 0, uid: uid_t = 0, gid: gid_t = 0
        guard csys_peer_credentials(fd, &pid, &uid, &gid) == 0 else { return }
        do { try limiter.admit(uid: uid) } catch {
            reply(fd, HandleResponse(error: error), descriptor: nil)
            return
        }
        defer { limiter.release(uid: uid) }
        _ = csys_set_receive_timeout(fd, Self.requestTimeoutSeconds)
        let caller = Caller(uid: uid, gid: gid, pid: pid, groups: Caller.supplementaryGroups(pid: pid, uid: uid))
        let request: HandleRequest
        do {
            let line = try readLine(fd)
            request = try decodeRequest(HandleRequest.self, from: line)
        } catch let error as APIError {
            reply(fd, HandleResponse(error: error), descriptor: nil)
            return
        } catch {
            return
        }
        let kvmFD = open("/dev/kvm", O_RDWR | O_CLOEXEC)
        guard kvmFD >= 0 else {
            reply(fd, HandleResponse(error: APIError(.internalError, "vmmd cannot open /dev/kvm: \(String(cString: strerror(errno)))")), descriptor: nil)
            return
        }
        defer { close(kvmFD) }
        let vm: ManagedVM
        do {
            vm = try service.openHandle(request, caller: caller, connection: connection)
        } catch {
            reply(fd, HandleResponse(error: error), descriptor: nil)
            return
        }
        reply(fd, HandleResponse(handle: .init(name: request.name, ownerUID: caller.uid)), descriptor: kvmFD)
        _ = csys_set_receive_timeout(fd, 0)
        logger.info("handle opened", metadata: ["vm": "\(vm.key)", "pid": "\(pid)"])
        // The client holds the VM while the connection stays open; anything it sends
        // now is ignored, EOF (or an error) ends it.
        var sink = [UInt8](repeating: 0, count: 256)
        while true {
            let n = read(fd, &sink, sink.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
        }
        logger.info("handle closed", metadata: ["vm": "\(vm.key)"])
        // The socket closes (the deferred connection.close()) after the record is gone.
        let service = self.service
        let done = DispatchSemaphore(value: 0)
        Task {
            await service.destroy(vm)
            done.signal()
        }
        done.wait()
    }

    private func readLine(_ fd: Int32) throws -> [UInt8] {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            let n = read(fd, &byte, 1)
            if n < 0 && errno == EINTR { continue }
            guard n == 1 else { throw ServiceError.system("reading a handle request", n == 0 ? ECONNRESET : errno) }
            if byte == 0x0A { return line }
            line.append(byte)
            guard line.count <= Self.maxRequest else {
                throw APIError(.payloadTooLarge, "handle requests are limited to \(Self.maxRequest) bytes")
            }
        }
    }

    private func reply(_ fd: Int32, _ response: HandleResponse, descriptor: Int32?) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard var bytes = try? [UInt8](encoder.encode(response)) else { return }
        bytes.append(0x0A)
        let fds = descriptor.map { [$0] } ?? []
        _ = csys_send_with_fds(fd, bytes, bytes.count, fds, Int32(fds.count))
    }
}
