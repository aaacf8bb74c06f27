import CSys
#if canImport(Glibc)
import Glibc
#endif

extension Sandbox {
    /// Settles, before the filter goes on, the state glibc fills in lazily by reading
    /// files: once the filter is on, an `openat` kills the worker, so a lazy read on a
    /// path a guest or a vCPU count can drive is a crash waiting to happen.
    ///
    /// Found by tracing workers (strace -f) through every vCPU count up to the maximum,
    /// every action and the test guests, with the filter set to log instead of kill:
    /// - malloc sizes its arena limit by reading /sys/devices/system/cpu/online the
    ///   first time a thread needs a ninth arena (arena_get2), so any VM with more than
    ///   a few vCPUs died as soon as enough vCPU threads had allocated;
    /// - free() reads /proc/sys/vm/overcommit_memory the first time a thread's heap
    ///   shrinks (check_may_shrink_heap): a vsock connection's buffers freed on the
    ///   device thread killed its worker now and then. The host probes that used to run
    ///   here first (vmmd runs them now) had happened to trigger it before the filter;
    /// - the log handler's timestamps (localtime) stat and load /etc/localtime on every
    ///   call while TZ is unset (workers start with an empty environment), so a guest's
    ///   first `log` hypercall killed its worker. With TZ set, glibc sees the same value
    ///   as last time and keeps the zone it loaded here.
    ///
    /// What else runs lazily was checked and needs nothing here: thread creation and
    /// exit (mmap, mprotect, clone, set_robust_list, rseq, madvise: allowed), libdispatch
    /// and the Swift runtime read what they need at process start, and the worker uses
    /// no Dispatch queues or Swift concurrency (which would start a thread pool that
    /// reads /proc).
    static func settleLibraryState() throws {
        guard csys_settle_malloc_arenas() > 0 else { throw SandboxError("mallopt(M_ARENA_MAX) failed") }
        guard csys_settle_heap_shrink() == 0 else { throw SandboxError("settling malloc's heap trimming failed") }
        setenv("TZ", ":/etc/localtime", 1)
        tzset()
    }
}
