import KVM
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Watches pidfds (workers, and the creators of `process`-lifetime VMs) on one thread
/// with poll(2), and calls back once when a process has exited. A pidfd becomes
/// readable when its process exits.
final class ProcessWatcher: Sendable {
    typealias Callback = @Sendable () -> Void

    /// Watches are keyed by a token, not by descriptor: a pidfd that is unwatched and
    /// closed while poll() runs may come back under the same number for another process.
    private struct State {
        var watched: [UInt64: (fd: Int32, callback: Callback)] = [:]
        var nextToken: UInt64 = 0
        var stopping = false
    }
    private let state = Mutex(State())
    /// Writing a byte wakes the poll so that it picks up a new set of descriptors.
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private let thread: Mutex<HostThread?> = Mutex(nil)

    init() throws {
        var pipeFDs: [Int32] = [-1, -1]
        guard pipe(&pipeFDs) == 0 else { throw ServiceError.system("pipe", errno) }
        for fd in pipeFDs {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, O_NONBLOCK)
        }
        wakeRead = pipeFDs[0]
        wakeWrite = pipeFDs[1]
        let t = try HostThread(name: "pidfd-watch") { [self] in loop() }
        thread.withLock { $0 = t }
    }

    /// Calls `callback` (on the watcher thread; keep it short) once `pidfd`'s process
    /// has exited. The descriptor stays the caller's.
    @discardableResult
    func watch(_ pidfd: Int32, _ callback: @escaping Callback) -> UInt64 {
        let token = state.withLock { s -> UInt64 in
            s.nextToken += 1
            s.watched[s.nextToken] = (pidfd, callback)
            return s.nextToken
        }
        wake()
        return token
    }

    /// Stops a watch without calling back. Call it before closing the descriptor.
    func unwatch(_ token: UInt64) {
        state.withLock { _ = $0.watched.removeValue(forKey: token) }
        wake()
    }

    func shutdown() {
        state.withLock { $0.stopping = true }
        wake()
        let t = thread.withLock { t -> HostThread? in defer { t = nil }; return t }
        t?.join()
        close(wakeRead)
        close(wakeWrite)
    }

    private func wake() {
        var b: UInt8 = 1
        _ = write(wakeWrite, &b, 1)
    }

    private func loop() {
        while true {
            let (watches, stopping) = state.withLock { s in (s.watched.map { ($0.key, $0.value.fd) }, s.stopping) }
            if stopping { return }
            var polls = [pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
            polls += watches.map { pollfd(fd: $0.1, events: Int16(POLLIN), revents: 0) }
            let n = poll(&polls, nfds_t(polls.count), -1)
            if n < 0 { continue }   // EINTR
            if polls[0].revents != 0 {
                var sink = [UInt8](repeating: 0, count: 64)
                while read(wakeRead, &sink, sink.count) > 0 {}
            }
            for (p, watch) in zip(polls.dropFirst(), watches) where p.revents & Int16(POLLIN) != 0 {
                // POLLNVAL (closed under us) is not an exit: that watch was removed.
                let entry = state.withLock { $0.watched.removeValue(forKey: watch.0) }
                entry?.callback()
            }
        }
    }
}
