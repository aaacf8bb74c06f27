import CSys
import Dispatch
import KVM
import Synchronization

/// Starts worker processes from one thread that lives as long as the daemon.
///
/// A worker asks for SIGKILL when its parent dies (PR_SET_PDEATHSIG), and Linux sends
/// that signal when the *thread* that forked it exits, not the process. Spawning from
/// a pool thread (Swift concurrency, NIO, Dispatch), which the pool may retire after a
/// few idle seconds, would kill healthy workers; so every spawn happens here.
final class WorkerSpawner: Sendable {
    private struct Job {
        let executable: String
        let controlFD: Int32
        let logFD: Int32
        let done: CheckedContinuation<Int32, Never>
    }
    private let jobs = Mutex<(queue: [Job], stopping: Bool)>(([], false))
    private let wakeup = DispatchSemaphore(value: 0)
    private let thread = Mutex<HostThread?>(nil)

    init() throws {
        let t = try HostThread(name: "worker-spawner") { [self] in loop() }
        thread.withLock { $0 = t }
    }

    /// `csys_spawn_worker` on the spawner thread: the pid, or -errno.
    func spawn(executable: String, controlFD: Int32, logFD: Int32) async -> Int32 {
        await withCheckedContinuation { (c: CheckedContinuation<Int32, Never>) in
            let accepted = jobs.withLock { j -> Bool in
                guard !j.stopping else { return false }
                j.queue.append(Job(executable: executable, controlFD: controlFD, logFD: logFD, done: c))
                return true
            }
            if accepted { wakeup.signal() } else { c.resume(returning: -125) }   // ECANCELED
        }
    }

    func shutdown() {
        jobs.withLock { $0.stopping = true }
        wakeup.signal()
        let t = thread.withLock { t -> HostThread? in defer { t = nil }; return t }
        t?.join()
    }

    private func loop() {
        while true {
            wakeup.wait()
            let (batch, stopping) = jobs.withLock { j -> ([Job], Bool) in
                defer { j.queue = [] }
                return (j.queue, j.stopping)
            }
            for job in batch {
                job.done.resume(returning: csys_spawn_worker(job.executable, job.controlFD, job.logFD))
            }
            if stopping { return }
        }
    }
}
