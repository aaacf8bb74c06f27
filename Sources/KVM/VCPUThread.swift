import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// The host side of kicking a vCPU out of `KVM_RUN`: a signal with a no-op handler.
///
/// A kick is `immediate_exit = 1` (covers a vCPU about to enter) plus this signal sent
/// to the vCPU's thread (covers one already inside `KVM_RUN`, which returns EINTR).
/// The handler is installed without SA_RESTART so the ioctl is not restarted.
public enum VCPUKick {
    /// The signal used for kicks. SIGUSR1 by default; a library user that needs SIGUSR1
    /// may change it before the first vCPU thread starts.
    nonisolated(unsafe) public static var signal: Int32 = SIGUSR1

    private static let install: Void = {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        sigaction(VCPUKick.signal, &action, nil)
    }()

    /// Installs the handler once per process. Safe to call repeatedly.
    public static func installHandler() { _ = install }

    /// Unblocks the kick signal on the calling thread. A vCPU thread calls it first: it
    /// inherits its creator's signal mask, and runtimes (test runners, thread pools)
    /// often block everything on their threads.
    public static func unblockOnCurrentThread() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, signal)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }

    /// Sends the kick signal to `thread`.
    public static func kick(_ thread: pthread_t) {
        _ = pthread_kill(thread, signal)
    }
}

/// A joinable host thread running a Swift closure: what a vCPU runner lives on.
///
/// Plain pthreads rather than Foundation's Thread, so that a VM worker process does not
/// need Foundation (its resident size is part of the per-VM overhead).
public final class HostThread: @unchecked Sendable {
    // @unchecked: `handle` is written once by pthread_create before `spawn` returns.
    public private(set) var handle: pthread_t = 0
    private var joined = false

    private final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    /// Starts `body` on a new thread named `name` (15 characters at most, as Linux allows).
    public init(name: String, _ body: @escaping @Sendable () -> Void) throws {
        // SAFETY: the retained box is released exactly once, by the new thread.
        let threadName = String(name.prefix(15))
        let context = Unmanaged.passRetained(Box({ _ = ckvm_set_thread_name(threadName); body() })).toOpaque()
        let rc = pthread_create(&handle, nil, { raw in
            // SAFETY: raw is the Unmanaged<Box> passed above.
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<Box>.fromOpaque(context).release()
            throw KVMError(operation: "pthread_create", errno: rc)
        }
    }

    /// Waits for the thread to finish. Idempotent; must not be called from the thread itself.
    public func join() {
        guard !joined else { return }
        joined = true
        pthread_join(handle, nil)
    }

    /// Lets the thread end on its own: its resources go when it returns, and it can no
    /// longer be joined. For threads nobody waits for (one per connection, say).
    public func detach() {
        guard !joined else { return }
        joined = true
        pthread_detach(handle)
    }

    /// The calling thread's handle.
    public static var current: pthread_t { pthread_self() }
}
