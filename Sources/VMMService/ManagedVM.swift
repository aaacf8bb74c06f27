import Synchronization
import VMMAPI
import WorkerProtocol
#if canImport(Glibc)
import Glibc
#endif

/// Identifies a VM: names are unique per owner.
public struct VMKey: Hashable, Sendable, CustomStringConvertible {
    public let owner: Owner
    public let name: String
    public var description: String { "\(name) (\(owner))" }
}

/// An API connection, for the `connection` lifetime.
public struct ConnectionID: Hashable, Sendable {
    public let raw: UInt64
    public init(_ raw: UInt64) { self.raw = raw }
}

/// One VM the daemon manages: its request, the memory it owns, its worker (when one is
/// running) and everything the API reports about it. Worker messages and process exits
/// arrive on other threads; all mutable state is behind `state`.
final class ManagedVM: Sendable {
    let key: VMKey
    let request: CreateVMRequest
    let lifetime: Lifetime
    /// Whose permissions the kernel and initrd were opened with.
    let opener: Caller
    let createdAt: String
    let console = ConsoleLog()
    let memory: GuestMemoryFiles
    /// The kernel (and initrd) as opened at creation, kept for later workers.
    let imageFDs: [Int32]

    struct State {
        var phase: VMState = .creating
        var worker: WorkerProcess?
        var bootFormat: String?
        var lastExit: ExitInfo?
        var setupFailure: String?
        var destroying = false
        /// Bumped on every phase change (and worker exit), for waiters.
        var generation: UInt64 = 0
        var readyWaiter: CheckedContinuation<Void, Error>?
        var changeWaiters: [(after: UInt64, CheckedContinuation<VMState, Never>)] = []
        var statsWaiters: [UInt32: CheckedContinuation<[StatisticLine], Error>] = [:]
        var nextStatsID: UInt32 = 0
        var exitWaiters: [CheckedContinuation<Void, Never>] = []
        /// pidfd of the creator, for the `process` lifetime.
        var creatorPidfd: Int32?
    }
    let state = Mutex(State())

    init(key: VMKey, request: CreateVMRequest, lifetime: Lifetime, opener: Caller, memory: GuestMemoryFiles,
         imageFDs: [Int32], createdAt: String = Timestamp.now()) {
        self.key = key; self.request = request; self.lifetime = lifetime; self.opener = opener
        self.memory = memory; self.imageFDs = imageFDs; self.createdAt = createdAt
    }

    /// What the worker needs to build this VM.
    var setup: WorkerSetup {
        WorkerSetup(name: key.name, memoryMiB: request.memoryMiB, cpus: UInt32(request.vcpus),
                    commandLine: request.cmdline, debugExit: request.debugExit, hypercalls: request.hypercalls,
                    rebootOnReset: !request.noReboot, hasInitrd: request.initrd != nil, memory: memory.segments)
    }

    var phase: VMState { state.withLock { $0.phase } }

    func info() -> VMInfo {
        state.withLock { s in
            VMInfo(name: key.name, ownerUID: key.owner.uid, state: s.phase, lifetime: lifetime,
                   workerPID: s.worker?.pid, createdAt: createdAt, memoryMiB: request.memoryMiB,
                   vcpus: request.vcpus, kernel: request.kernel, initrd: request.initrd, cmdline: request.cmdline,
                   debugExit: request.debugExit, hypercalls: request.hypercalls, noReboot: request.noReboot,
                   bootFormat: s.bootFormat, lastExit: s.lastExit)
        }
    }

    // MARK: - From the worker

    func handle(_ message: WorkerMessage) {
        switch message {
        case .console(let bytes):
            console.append(bytes)
        case .ready(let format):
            let waiter = state.withLock { s -> CheckedContinuation<Void, Error>? in
                s.bootFormat = format
                setPhase(.created, &s)
                defer { s.readyWaiter = nil }
                return s.readyWaiter
            }
            waiter?.resume()
        case .setupFailed(let why):
            // The worker exits next; the exit completes the failure.
            state.withLock { $0.setupFailure = why }
        case .state(let run):
            let phase: VMState = run == .paused ? .paused : run == .running ? .running : .stopped
            resumeChangeWaiters(state.withLock { s in setPhase(phase, &s); return takeChangeWaiters(&s) })
        case .stopped(let kind, let status, let message):
            resumeChangeWaiters(state.withLock { s in
                s.lastExit = ExitInfo(kind: kind, status: status, message: message, at: Timestamp.now())
                setPhase(.stopped, &s)
                return takeChangeWaiters(&s)
            })
        case .statistics(let id, let lines):
            state.withLock { $0.statsWaiters.removeValue(forKey: id) }?.resume(returning: lines)
        }
    }

    /// What a worker's exit releases: everyone who was waiting on it.
    private struct ExitWaiters {
        var ready: CheckedContinuation<Void, Error>?
        var stats: [CheckedContinuation<[StatisticLine], Error>] = []
        var changes: [(CheckedContinuation<VMState, Never>, VMState)] = []
        var exits: [CheckedContinuation<Void, Never>] = []
        var failure: String?
    }

    /// The worker process has exited: reap it, and either finish a destroy, fail a
    /// creation, or record a crash.
    func workerExited(_ worker: WorkerProcess) {
        let (status, signal) = worker.reap()
        worker.release()
        let waiters = state.withLock { s -> ExitWaiters in
            guard s.worker === worker else { return ExitWaiters() }
            s.worker = nil
            if s.phase != .creating && s.readyWaiter == nil && !s.destroying {
                let what = signal.map { "the worker was killed by signal \($0)" } ?? "the worker exited with status \(status ?? -1)"
                s.lastExit = ExitInfo(kind: "crashed", status: signal.map { 128 + $0 } ?? status ?? -1,
                                      message: what, signal: signal, at: Timestamp.now())
                setPhase(.crashed, &s)
            }
            s.generation += 1
            var w = ExitWaiters(ready: s.readyWaiter, stats: Array(s.statsWaiters.values), exits: s.exitWaiters,
                                failure: s.setupFailure)
            s.readyWaiter = nil
            s.statsWaiters = [:]
            s.exitWaiters = []
            w.changes = takeChangeWaiters(&s)
            return w
        }
        let reason = waiters.failure ?? signal.map { "the worker was killed by signal \($0)" }
            ?? "the worker exited with status \(status ?? -1)"
        let readyError = waiters.failure != nil ? APIError(.imageRejected, reason, field: "kernel") : APIError(.internalError, reason)
        waiters.ready?.resume(throwing: readyError)
        for w in waiters.stats { w.resume(throwing: APIError(.invalidState, "the worker exited")) }
        resumeChangeWaiters(waiters.changes)
        for w in waiters.exits { w.resume() }
    }

    // MARK: - Waiting

    private func setPhase(_ phase: VMState, _ s: inout State) {
        s.phase = phase
        s.generation += 1
    }

    private func takeChangeWaiters(_ s: inout State) -> [(CheckedContinuation<VMState, Never>, VMState)] {
        var ready: [(CheckedContinuation<VMState, Never>, VMState)] = []
        s.changeWaiters.removeAll { w in
            guard s.generation > w.after else { return false }
            ready.append((w.1, s.phase))
            return true
        }
        return ready
    }

    private func resumeChangeWaiters(_ waiters: [(CheckedContinuation<VMState, Never>, VMState)]) {
        for (w, phase) in waiters { w.resume(returning: phase) }
    }

    /// Waits until the ready message (or the worker's exit) after a spawn.
    func waitUntilReady() async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, Error>) in
            let resumeNow = state.withLock { s -> Bool in
                if s.phase != .creating { return true }
                s.readyWaiter = c
                return false
            }
            if resumeNow { c.resume() }
        }
    }

    var generation: UInt64 { state.withLock { $0.generation } }

    /// Waits for the next phase change after `generation`, at most `seconds`.
    func waitForChange(after generation: UInt64, seconds: Int = 10) async -> VMState? {
        let timeout = Task { [weak self] in
            try await Task.sleep(nanoseconds: UInt64(seconds) * 1_000_000_000)
            self?.expireChangeWaiters(after: generation)
        }
        defer { timeout.cancel() }
        let phase = await withCheckedContinuation { (c: CheckedContinuation<VMState, Never>) in
            let now = state.withLock { s -> VMState? in
                if s.generation > generation { return s.phase }
                s.changeWaiters.append((generation, c))
                return nil
            }
            if let now { c.resume(returning: now) }
        }
        return state.withLock { $0.generation } > generation ? phase : nil
    }

    private func expireChangeWaiters(after generation: UInt64) {
        let expired = state.withLock { s -> [(CheckedContinuation<VMState, Never>, VMState)] in
            var out: [(CheckedContinuation<VMState, Never>, VMState)] = []
            s.changeWaiters.removeAll { w in
                guard w.after == generation else { return false }
                out.append((w.1, s.phase))
                return true
            }
            return out
        }
        resumeChangeWaiters(expired)
    }

    /// Asks the worker for its statistics.
    func statistics() async throws -> [StatisticLine] {
        let timeout = Task { [weak self] in
            try await Task.sleep(nanoseconds: 5_000_000_000)
            self?.failStatsWaiters()
        }
        defer { timeout.cancel() }
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<[StatisticLine], Error>) in
            let worker = state.withLock { s -> WorkerProcess? in
                guard let w = s.worker, s.phase != .creating else { return nil }
                s.nextStatsID &+= 1
                s.statsWaiters[s.nextStatsID] = c
                w.send(.statisticsRequest(id: s.nextStatsID))
                return w
            }
            if worker == nil { c.resume(throwing: APIError(.invalidState, "\(key.name) has no running worker (state \(phase.rawValue))")) }
        }
    }

    private func failStatsWaiters() {
        let waiters = state.withLock { s -> [CheckedContinuation<[StatisticLine], Error>] in
            defer { s.statsWaiters = [:] }
            return Array(s.statsWaiters.values)
        }
        for w in waiters { w.resume(throwing: APIError(.internalError, "the worker did not answer")) }
    }

    /// Kills the worker (if any) and waits until it has been reaped.
    func killWorkerAndWait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let worker = state.withLock { s -> WorkerProcess? in
                s.destroying = true
                guard let w = s.worker else { return nil }
                s.exitWaiters.append(c)
                return w
            }
            if let worker { worker.kill() } else { c.resume() }
        }
    }

    /// Frees everything the VM holds (after its worker is gone).
    func release() {
        console.end()
        memory.close()
        for fd in imageFDs { close(fd) }
        if let pidfd = state.withLock({ s -> Int32? in defer { s.creatorPidfd = nil }; return s.creatorPidfd }) {
            close(pidfd)
        }
    }
}
