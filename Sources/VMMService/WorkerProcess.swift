import CSys
import Logging
import NIOCore
import NIOPosix
import Synchronization
import WorkerProtocol
#if canImport(Glibc)
import Glibc
#endif

/// One running `vmm-worker` process: its pid, a pidfd to wait on and signal it without
/// pid-reuse races, and the NIO channel of the control link.
final class WorkerProcess: Sendable {
    let pid: Int32
    let channel: Channel
    /// The daemon's end of the descriptor channel (SCM_RIGHTS after the setup: the files
    /// of a snapshot to write), closed with the worker.
    private let descriptorChannel: Mutex<Int32?>
    /// The pidfd, nil once released: a signal or wait must never reach a descriptor
    /// number that has since been reused for another process's pidfd.
    private let pidfdState: Mutex<Int32?>

    private init(pid: Int32, pidfd: Int32, channel: Channel, descriptorChannel: Int32) {
        self.pid = pid; self.channel = channel
        pidfdState = Mutex(pidfd)
        self.descriptorChannel = Mutex(descriptorChannel)
    }

    /// For the watcher, which is registered before anything can release it.
    var pidfd: Int32 { pidfdState.withLock { $0 } ?? -1 }

    /// Starts a worker, sends it `setup` with `descriptors` (SCM_RIGHTS) and wires its
    /// link into `group`. The descriptors stay the caller's (the kernel duplicates them
    /// into the worker).
    static func spawn(executable: String, spawner: WorkerSpawner, setup: WorkerSetup, descriptors: [Int32], group: EventLoopGroup,
                      onMessage: @escaping @Sendable (WorkerMessage) -> Void,
                      onClose: @escaping @Sendable (String?) -> Void) async throws -> WorkerProcess {
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            throw ServiceError.system("socketpair", errno)
        }
        var side: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &side) == 0 else {
            let e = errno
            close(pair[0]); close(pair[1])
            throw ServiceError.system("socketpair", e)
        }
        defer { close(side[1]) }   // the worker's end travels with the setup
        let pid = await spawner.spawn(executable: executable, controlFD: pair[1], logFD: STDERR_FILENO)
        close(pair[1])
        guard pid > 0 else {
            close(pair[0]); close(side[0])
            throw ServiceError.system("spawning \(executable)", -pid)
        }
        let pidfd = csys_pidfd_open(pid)
        guard pidfd >= 0 else {
            // Without a pidfd we cannot supervise it: make sure it does not run on.
            Glibc.kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            close(pair[0]); close(side[0])
            throw ServiceError.system("pidfd_open", -pidfd)
        }
        func abandon() {
            _ = csys_pidfd_send_signal(pidfd, SIGKILL)
            var code: Int32 = 0, status: Int32 = 0
            _ = csys_pidfd_wait(pidfd, 0, &code, &status)
            close(pidfd)
        }
        // The setup goes out before NIO takes the socket over: NIO cannot pass descriptors.
        do {
            try FramedSocket(fd: pair[0]).send(DaemonMessage.setup(setup).encoded(), descriptors: descriptors + [side[1]])
        } catch {
            close(pair[0]); close(side[0])
            abandon()
            throw ServiceError.failed("sending the setup to the worker: \(error)")
        }
        let channel: Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(WorkerFrameDecoder()))
                        try channel.pipeline.syncOperations.addHandler(WorkerLinkHandler(onMessage: onMessage, onClose: onClose))
                    }
                }
                .withConnectedSocket(pair[0]).get()
        } catch {
            // NIO closes the socket when setting the channel up fails after it took
            // it over; closing it here too could close a reused number. At worst this
            // path (an event loop shutting down) leaks one descriptor.
            close(side[0])
            abandon()
            throw error
        }
        return WorkerProcess(pid: pid, pidfd: pidfd, channel: channel, descriptorChannel: side[0])
    }

    /// Sends a message; a dead link is noticed through `onClose` and the pidfd.
    func send(_ message: DaemonMessage) {
        let frame = WorkerFrame.frame(message.encoded())
        channel.writeAndFlush(ByteBuffer(bytes: frame), promise: nil)
    }

    /// Sends `fds` on the descriptor channel (before the message that uses them). The
    /// descriptors stay the caller's.
    func sendDescriptors(_ fds: [Int32]) throws {
        try descriptorChannel.withLock { fd in
            guard let fd else { throw ServiceError.failed("the worker has exited") }
            try FramedSocket(fd: fd).send([1], descriptors: fds)
        }
    }

    func kill() {
        pidfdState.withLock { fd in
            if let fd { _ = csys_pidfd_send_signal(fd, SIGKILL) }
        }
    }

    /// Reaps the exited worker and closes the pidfd: (exit status, nil) or (nil, signal).
    /// Once only; later calls (and kills) do nothing.
    func reapAndRelease() -> (status: Int32?, signal: Int32?) {
        let result = pidfdState.withLock { fd -> (Int32?, Int32?) in
            guard let pidfd = fd else { return (nil, nil) }
            fd = nil
            var code: Int32 = 0, status: Int32 = 0
            let rc = csys_pidfd_wait(pidfd, Int32(WNOHANG), &code, &status)
            close(pidfd)
            guard rc == 1 else { return (nil, nil) }
            return code == CLD_EXITED ? (status, nil) : (nil, status)
        }
        descriptorChannel.withLock { fd in
            if let open = fd { close(open) }
            fd = nil
        }
        channel.close(promise: nil)
        return result
    }
}
