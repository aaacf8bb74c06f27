import CSys
import CUserDB
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization
import VMMAPI
import VMMService
#if canImport(Glibc)
import Glibc
#endif

/// The HTTP/JSON API on a Unix socket, as a ServiceLifecycle service: it serves until
/// graceful shutdown (SIGTERM/SIGINT), then stops accepting, stops every worker and
/// removes the socket.
final class APIServer: Service {
    let socketPath: String
    let handleSocketPath: String
    let service: VMService
    let group: EventLoopGroup
    let metrics: DaemonMetrics
    let logger: Logger
    let limits: ConnectionLimits
    private let connections = ConnectionCounter()
    private let open = OpenConnections()
    private let listEncoder = VMListEncoder()
    /// Runs once both sockets listen (the host probes: start-up does not wait for them).
    let afterListening: @Sendable () -> Void

    init(socketPath: String, handleSocketPath: String, service: VMService, group: EventLoopGroup,
         metrics: DaemonMetrics, logger: Logger, limits: ConnectionLimits, afterListening: @escaping @Sendable () -> Void = {}) {
        self.socketPath = socketPath; self.handleSocketPath = handleSocketPath; self.service = service; self.group = group
        self.metrics = metrics; self.logger = logger; self.limits = limits; self.afterListening = afterListening
    }

    func run() async throws {
        try Self.removeStaleSocket(socketPath)
        let service = self.service, metrics = self.metrics, logger = self.logger, limits = self.limits
        let nonRoot = NonRootConnections(limit: limits.effectiveNonRootTotal)
        let apiLimiter = ConnectionLimiter(perUID: limits.perUID, total: nonRoot)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            // A client that shuts its sending side after a request still gets the answer
            // (APIHandler closes once it is written).
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            // isWritable turns false past the high mark: slow console readers lose output
            // instead of growing the daemon (see APIHandler.sendConsole).
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 256 << 10, high: APIHandler.maxQueuedConsoleBytes))
            .childChannelInitializer { [connections, open, listEncoder] channel in
                open.add(channel)
                let id = connections.next()
                return Self.peerCaller(of: channel).flatMap { caller in
                    // Counted from accept to close, by the peer's uid (SO_PEERCRED).
                    do throws(APIError) { try apiLimiter.admit(uid: caller.uid) } catch {
                        return Self.refuse(channel, error)
                    }
                    channel.closeFuture.whenComplete { _ in apiLimiter.release(uid: caller.uid) }
                    let deadline = ConnectionDeadline(idleSeconds: limits.idleSeconds, requestSeconds: limits.requestSeconds)
                    do { try channel.pipeline.syncOperations.addHandler(deadline) } catch {
                        return channel.eventLoop.makeFailedFuture(error)
                    }
                    return channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true).flatMapThrowing {
                        try channel.pipeline.syncOperations.addHandler(
                            APIHandler(service: service, caller: caller, connection: id, metrics: metrics,
                                       listEncoder: listEncoder, logger: logger, deadline: deadline))
                    }
                }
            }
            .bind(unixDomainSocketPath: socketPath).get()
        let broker: HandleBroker
        do {
            try Self.setSocketPermissions(socketPath, logger: logger)
            try Self.removeStaleSocket(handleSocketPath)
            broker = try HandleBroker(path: handleSocketPath, service: service, logger: logger,
                                      limiter: ConnectionLimiter(perUID: limits.perUID, total: nonRoot))
            try Self.setSocketPermissions(handleSocketPath, logger: logger)
        } catch {
            // A start that fails leaves no socket file behind.
            try? await channel.close().get()
            unlink(socketPath)
            throw error
        }
        logger.info("vmmd listening", metadata: ["socket": "\(socketPath)", "handles": "\(handleSocketPath)", "pid": "\(getpid())"])
        afterListening()
        await service.restore()

        try? await gracefulShutdown()
        logger.info("vmmd shutting down")
        broker.shutdown()
        try? await channel.close().get()
        await open.closeAll(on: group)
        await service.shutdown()
        // The workers' links closed on their loops too: let that settle before the loops stop.
        await OpenConnections.drain(group)
        unlink(socketPath)
        logger.info("vmmd stopped")
    }

    /// Answers a connection over its limits with the error, unasked, and closes it.
    static func refuse(_ channel: Channel, _ error: APIError) -> EventLoopFuture<Void> {
        channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(RefusedConnection(error)) }
    }

    /// SO_PEERCRED of the new connection, and the peer's groups from /proc.
    static func peerCaller(of channel: Channel) -> EventLoopFuture<Caller> {
        guard let provider = channel as? SocketOptionProvider else {
            return channel.eventLoop.makeFailedFuture(ServiceError.failed("no socket options on this channel"))
        }
        return provider.unsafeGetSocketOption(level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
            .map { (cred: csys_ucred) in
                Caller(uid: cred.uid, gid: cred.gid, pid: cred.pid,
                       groups: Caller.supplementaryGroups(pid: cred.pid, uid: cred.uid))
            }
    }

    /// A socket file left by a daemon that died is removed; a live one is an error.
    static func removeStaleSocket(_ path: String) throws {
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        guard (st.st_mode & S_IFMT) == S_IFSOCK else {
            throw ServiceError.failed("\(path) exists and is not a socket")
        }
        let probe = csys_connect_unix(path)
        if probe >= 0 {
            close(probe)
            throw ServiceError.failed("another vmmd is serving \(path)")
        }
        unlink(path)
    }

    /// Mode 0660, group `vmm` when that group exists: members of `vmm` may use the API.
    static func setSocketPermissions(_ path: String, logger: Logger) throws {
        var group: gid_t = 0
        if csys_group_id("vmm", &group) == 0 {
            if chown(path, uid_t.max, group) != 0 {
                logger.warning("cannot give the socket to group vmm", metadata: ["errno": "\(errno)"])
            }
        }
        guard chmod(path, 0o660) == 0 else { throw ServiceError.system("chmod(\(path))", errno) }
    }
}

/// Numbers API connections, for the `connection` lifetime.
final class ConnectionCounter: Sendable {
    private let counter = Atomic<UInt64>(0)
    func next() -> ConnectionToken { ConnectionToken(ConnectionID(counter.wrappingAdd(1, ordering: .relaxed).newValue)) }
}

/// ServiceLifecycle names each service with `"\(service)"` for its logs. String
/// interpolation of a value first asks whether it is TextOutputStreamable, then
/// CustomStringConvertible, then reflects over it; each answer is a dynamic cast that, on
/// a type's first use, scans the binary's protocol conformance records. Answering the
/// first takes it from ~0.9 to ~0.6 ms of vmmd's start-up CPU (perf over 30 starts; the
/// CustomStringConvertible conformance this replaces had saved nothing measurable).
extension APIServer: TextOutputStreamable {
    func write<Target: TextOutputStream>(to target: inout Target) { target.write("APIServer(\(socketPath))") }
}
