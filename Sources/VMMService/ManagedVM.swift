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

/// One API connection as the service sees it: its id, and whether it has closed (set
/// by the server before it reports the close).
public final class ConnectionToken: Sendable {
    public let id: ConnectionID
    private let closed = Atomic<Bool>(false)
    public init(_ id: ConnectionID) { self.id = id }
    public var isClosed: Bool { closed.load(ordering: .acquiring) }
    func markClosed() { closed.store(true, ordering: .releasing) }
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
    /// The debugger client attached through `vmmctl gdb`, if any.
    let debugger = DebuggerRelay()
    /// What runs the VM.
    enum Backing: Sendable {
        /// A worker process of the daemon's, on guest memory the daemon holds, with the
        /// kernel (and initrd) as opened at creation, kept for later workers.
        case worker(memory: GuestMemoryFiles, images: [Int32])
        /// The owner's own process, through a brokered /dev/kvm descriptor: the daemon
        /// keeps only the name, the quota and the handle connection.
        case handle(connection: HandleConnection, clientPID: Int32)
        /// Nothing: a persistent VM whose record could not be restored. It holds its
        /// name (and quota) so that its owner sees it, and can destroy it.
        case unrestored
    }
    let backing: Backing

    struct State {
        var phase: VMState = .creating
        var worker: WorkerProcess?
        var bootFormat: String?
        var lastExit: ExitInfo?
        var setupFailure: String?
        var destroying = false
        /// How the current worker's start ended: nil while it is being built.
        var readiness: Result<Void, APIError>?
        var readyWaiter: CheckedContinuation<Void, Error>?
        /// Bumped on every phase change (and worker exit), for waiters.
        var generation: UInt64 = 0
        var nextWaiterID: UInt64 = 0
        var changeWaiters: [(id: UInt64, after: UInt64, CheckedContinuation<VMState?, Never>)] = []
        /// `release()` ran: no change will come, a new waiter returns at once.
        var released = false
        /// Waiters whose timer runs but who are not in `changeWaiters` yet, and whether
        /// their timer already fired (then they return at once instead of waiting).
        var arrivingWaiters: [UInt64: Bool] = [:]
        var statsWaiters: [UInt32: CheckedContinuation<[StatisticLine], Error>] = [:]
        var nextStatsID: UInt32 = 0
        var exitWaiters: [CheckedContinuation<Void, Never>] = []
        /// pidfd of the creator and its watch, for the `process` lifetime.
        var creatorPidfd: Int32?
        var creatorWatch: UInt64?
        /// The snapshot being written, waiting for the worker's answer.
        var snapshotWaiter: CheckedContinuation<Result<SnapshotReport, APIError>, Never>?
        /// The directory of the VM's last snapshot, or of the snapshot it was restored
        /// from: the parent of its next diff.
        var lastSnapshot: String?
    }
    let state = Mutex(State())
    /// Serialises the daemon's operations on this VM (create, start, actions, destroy).
    let operations = AsyncLock()

    init(key: VMKey, request: CreateVMRequest, lifetime: Lifetime, opener: Caller, backing: Backing,
         createdAt: String = Timestamp.now()) {
        self.key = key; self.request = request; self.lifetime = lifetime; self.opener = opener
        self.backing = backing; self.createdAt = createdAt
        if case .handle = backing { state.withLock { $0.phase = .external } }
        if let restore = request.restoreFrom { state.withLock { $0.lastSnapshot = restore.path } }
    }

    /// A persistent VM recorded on disk that did not come back, and why.
    static func unrestored(key: VMKey, request: CreateVMRequest, opener: Caller, createdAt: String, why: String) -> ManagedVM {
        let vm = ManagedVM(key: key, request: request, lifetime: .persistent, opener: opener, backing: .unrestored,
                           createdAt: createdAt)
        vm.state.withLock { s in
            s.phase = .failed
            s.lastExit = ExitInfo(kind: "vmm_error", status: 10, message: "not restored when vmmd started: \(why)", at: Timestamp.now())
        }
        return vm
    }

    /// The guest memory and images of a worker-backed VM.
    var workerResources: (memory: GuestMemoryFiles, images: [Int32])? {
        if case .worker(let memory, let images) = backing { return (memory, images) }
        return nil
    }

    /// What the worker needs to build this VM, and whom it runs as once sandboxed.
    func setup(memory: GuestMemoryFiles, sandboxUID: UInt32, sandboxGID: UInt32, hostFacts: HostFacts?,
               logLevel: String) -> WorkerSetup {
        var setup = WorkerSetup(name: key.name, memoryMiB: request.memoryMiB, cpus: UInt32(request.vcpus),
                    commandLine: request.cmdline, debugExit: request.debugExit, hypercalls: request.hypercalls,
                    rebootOnReset: !request.noReboot, hasInitrd: request.initrd != nil, memory: memory.segments,
                    sandboxUID: sandboxUID, sandboxGID: sandboxGID,
                    rebootOnTripleFault: request.tripleFault == .reboot, cpuTemplate: request.cpuTemplate,
                    emulationAssist: request.emulationAssist.rawValue,
                    disks: request.disks.map { .init(readOnly: $0.readOnly, serial: $0.serial) }, rng: request.rng)
        setup.networks = request.net.map { n in
            .init(mac: (n.mac ?? "").split(separator: ":").compactMap { UInt8($0, radix: 16) })
        }
        setup.vsockCID = request.vsock?.cid
        setup.hostFacts = hostFacts
        setup.logLevel = logLevel
        return setup.withSnapshot(request, layers: restoreLayers)
    }

    /// Snapshots in the chain this VM is restored from (their files lead `images`).
    var restoreLayers: Int {
        guard request.restoreFrom != nil, case .worker(_, let images) = backing else { return 0 }
        return (images.count - request.disks.count - request.net.count - (request.vsock == nil ? 0 : 1)) / 2
    }

    var phase: VMState { state.withLock { $0.phase } }

    func info() -> VMInfo {
        state.withLock { s in
            var info = VMInfo(name: key.name, ownerUID: key.owner.uid, state: s.phase, lifetime: lifetime,
                   workerPID: s.worker?.pid ?? handleClientPID, createdAt: createdAt, memoryMiB: request.memoryMiB,
                   vcpus: request.vcpus, kernel: request.kernel, initrd: request.initrd, cmdline: request.cmdline,
                   debugExit: request.debugExit, hypercalls: request.hypercalls, noReboot: request.noReboot,
                   tripleFault: request.tripleFault, cpuTemplate: request.cpuTemplate, bootFormat: s.bootFormat, lastExit: s.lastExit)
            info.disks = request.disks
            info.rng = request.rng
            info.restoredFrom = request.restoreFrom?.path
            info.trackDirtyPages = request.trackDirtyPages
            info.net = request.net
            info.vsock = request.vsock
            return info
        }
    }

    // MARK: - From the worker

    func handle(_ message: WorkerMessage) {
        switch message {
        case .console(let bytes):
            console.append(bytes)
        case .ready(let format):
            let (waiter, changes) = state.withLock { s in
                s.bootFormat = format
                setPhase(.created, &s)
                s.readiness = .success(())
                defer { s.readyWaiter = nil }
                return (s.readyWaiter, takeChangeWaiters(&s))
            }
            waiter?.resume()
            resumeChangeWaiters(changes)
        case .setupFailed(let why):
            // The worker exits next; the exit completes the failure.
            state.withLock { $0.setupFailure = why }
        case .state(let run):
            let phase: VMState = run == .paused ? .paused : run == .running ? .running : .stopped
            resumeChangeWaiters(state.withLock { s in
                // A guest that runs again (a start, a restart after a crash) has not ended yet.
                if phase == .running, s.phase != .paused { s.lastExit = nil }
                setPhase(phase, &s)
                return takeChangeWaiters(&s)
            })
        case .stopped(let kind, let status, let message):
            // Only the documented kinds reach clients: a worker cannot invent new ones.
            let known = ["poweroff", "reset", "halt", "triple_fault", "internal_error", "debug_exit", "vmm_error", "killed"]
            let exit = known.contains(kind) ? ExitInfo(kind: kind, status: status, message: message, at: Timestamp.now())
                : ExitInfo(kind: "vmm_error", status: status, message: "unknown stop '\(kind)': \(message)", at: Timestamp.now())
            resumeChangeWaiters(state.withLock { s in
                s.lastExit = exit
                setPhase(.stopped, &s)
                return takeChangeWaiters(&s)
            })
        case .statistics(let id, let lines):
            state.withLock { $0.statsWaiters.removeValue(forKey: id) }?.resume(returning: lines)
        case .snapshotTaken(let report):
            state.withLock { s -> CheckedContinuation<Result<SnapshotReport, APIError>, Never>? in
                defer { s.snapshotWaiter = nil }
                return s.snapshotWaiter
            }?.resume(returning: .success(report))
        case .snapshotFailed(let why):
            state.withLock { s -> CheckedContinuation<Result<SnapshotReport, APIError>, Never>? in
                defer { s.snapshotWaiter = nil }
                return s.snapshotWaiter
            }?.resume(returning: .failure(APIError(.invalidState, "the snapshot failed: \(why)")))
        case .debugData(let bytes):
            debugger.deliver(bytes)
        case .debugClosed:
            debugger.closed()
        }
    }

    /// What a worker's exit releases: everyone who was waiting on it.
    private struct ExitWaiters {
        var ready: CheckedContinuation<Void, Error>?
        var readyError = APIError(.internalError, "the worker exited")
        var stats: [CheckedContinuation<[StatisticLine], Error>] = []
        var changes: [(CheckedContinuation<VMState?, Never>, VMState)] = []
        var exits: [CheckedContinuation<Void, Never>] = []
        var snapshot: CheckedContinuation<Result<SnapshotReport, APIError>, Never>?
    }

    /// The worker process has exited: reap it, and either finish a destroy, fail a
    /// start, or record a crash.
    func workerExited(_ worker: WorkerProcess) {
        let (status, signal) = worker.reapAndRelease()
        let what = signal.map(Self.describeSignal) ?? "the worker exited with status \(status ?? -1)"
        // The debugger session lived in that worker.
        if state.withLock({ $0.worker === worker }) { debugger.closed() }
        let waiters = state.withLock { s -> ExitWaiters in
            guard s.worker === worker else { return ExitWaiters() }
            s.worker = nil
            var w = ExitWaiters()
            if s.readiness == nil {
                // It died before it was ready: the start fails, with the worker's reason.
                let error = s.setupFailure.map { APIError(.imageRejected, $0, field: "kernel") }
                    ?? APIError(.internalError, what)
                s.readiness = .failure(error)
                w.readyError = error
            }
            if !s.destroying {
                s.lastExit = ExitInfo(kind: "crashed", status: signal.map { 128 + $0 } ?? status ?? -1,
                                      message: s.setupFailure ?? what, signal: signal, at: Timestamp.now())
                setPhase(.crashed, &s)
            }
            s.generation += 1
            w.ready = s.readyWaiter
            s.readyWaiter = nil
            w.stats = Array(s.statsWaiters.values)
            s.statsWaiters = [:]
            w.exits = s.exitWaiters
            s.exitWaiters = []
            w.snapshot = s.snapshotWaiter
            s.snapshotWaiter = nil
            w.changes = takeChangeWaiters(&s)
            return w
        }
        waiters.ready?.resume(throwing: waiters.readyError)
        for w in waiters.stats { w.resume(throwing: APIError(.invalidState, "the worker exited")) }
        resumeChangeWaiters(waiters.changes)
        for w in waiters.exits { w.resume() }
        waiters.snapshot?.resume(returning: .failure(APIError(.internalError, "the worker exited while writing the snapshot")))
    }

    /// What a worker's death by `signal` means.
    static func describeSignal(_ signal: Int32) -> String {
        let what: String
        switch signal {
        case SIGSYS: what = "SIGSYS: it made a system call its sandbox forbids"
        case SIGKILL: what = "SIGKILL"
        case SIGSEGV: what = "SIGSEGV: a memory fault in the worker"
        case SIGBUS: what = "SIGBUS"
        case SIGABRT: what = "SIGABRT"
        case SIGILL: what = "SIGILL"
        case SIGTRAP: what = "SIGTRAP: a Swift runtime trap"
        default: what = "signal \(signal)"
        }
        return "the worker was killed by signal \(signal) (\(what))"
    }

    // MARK: - Waiting

    private func setPhase(_ phase: VMState, _ s: inout State) {
        s.phase = phase
        s.generation += 1
    }

    private func takeChangeWaiters(_ s: inout State) -> [(CheckedContinuation<VMState?, Never>, VMState)] {
        var ready: [(CheckedContinuation<VMState?, Never>, VMState)] = []
        s.changeWaiters.removeAll { w in
            guard s.generation > w.after else { return false }
            ready.append((w.2, s.phase))
            return true
        }
        return ready
    }

    private func resumeChangeWaiters(_ waiters: [(CheckedContinuation<VMState?, Never>, VMState)]) {
        for (w, phase) in waiters { w.resume(returning: phase) }
    }

    /// A new worker is about to start: its readiness is not known yet. Called before
    /// the spawn, because the worker's `ready` can arrive before the spawn returns.
    func workerStarting() {
        state.withLock { s in
            s.phase = .creating
            s.setupFailure = nil
            s.readiness = nil
            s.generation += 1
        }
    }

    /// The spawned worker (its messages may already have been handled).
    func workerStarted(_ worker: WorkerProcess) {
        state.withLock { $0.worker = worker }
    }

    /// Waits until the current worker is ready, or has died trying.
    func waitUntilReady() async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, Error>) in
            let known = state.withLock { s -> Result<Void, APIError>? in
                if let r = s.readiness { return r }
                if s.readyWaiter != nil { return .failure(APIError(.invalidState, "\(key.name) is already starting")) }
                s.readyWaiter = c
                return nil
            }
            if let known { c.resume(with: known) }
        }
    }

    var generation: UInt64 { state.withLock { $0.generation } }

    /// Waits for the next phase change after `generation`, at most `milliseconds`; nil
    /// when none came in time, or when the waiting task is cancelled (its client went
    /// away: a waiter must not outlive the connection that asked).
    func waitForChange(after generation: UInt64, milliseconds: Int = 10_000) async -> VMState? {
        let id = state.withLock { s -> UInt64 in
            s.nextWaiterID += 1
            s.arrivingWaiters[s.nextWaiterID] = false
            return s.nextWaiterID
        }
        let timeout = Task { [weak self] in
            try await Task.sleep(nanoseconds: UInt64(max(0, milliseconds)) * 1_000_000)
            self?.expireChangeWaiter(id)
        }
        defer { timeout.cancel() }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<VMState?, Never>) in
                let now = state.withLock { s -> VMState?? in
                    let timedOut = s.arrivingWaiters.removeValue(forKey: id) ?? false
                    if s.generation > generation { return .some(s.phase) }
                    if s.released || timedOut { return .some(nil) }
                    s.changeWaiters.append((id, generation, c))
                    return nil
                }
                if let now { c.resume(returning: now) }
            }
        } onCancel: {
            // As a timeout: ends the wait whether or not the waiter is listed yet.
            expireChangeWaiter(id)
        }
    }

    /// Requests waiting for this VM to change (`wait_for`), for /metrics.
    var changeWaiterCount: Int { state.withLock { $0.changeWaiters.count + $0.arrivingWaiters.count } }

    private func expireChangeWaiter(_ id: UInt64) {
        let expired = state.withLock { s -> CheckedContinuation<VMState?, Never>? in
            // A timer can fire before its waiter is in the list (a short timeout on a
            // loaded machine): the waiter then sees it when it arrives.
            if s.arrivingWaiters[id] != nil {
                s.arrivingWaiters[id] = true
                return nil
            }
            guard let i = s.changeWaiters.firstIndex(where: { $0.id == id }) else { return nil }
            return s.changeWaiters.remove(at: i).2
        }
        expired?.resume(returning: nil)
    }

    /// Asks the worker for its statistics.
    func statistics() async throws -> [StatisticLine] {
        let id = state.withLock { s -> UInt32 in s.nextStatsID &+= 1; return s.nextStatsID }
        let timeout = Task { [weak self] in
            try await Task.sleep(nanoseconds: 5_000_000_000)
            self?.failStatsWaiter(id)
        }
        defer { timeout.cancel() }
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<[StatisticLine], Error>) in
            let worker = state.withLock { s -> WorkerProcess? in
                guard let w = s.worker, s.readiness != nil, s.phase != .creating else { return nil }
                s.statsWaiters[id] = c
                return w
            }
            // Sent outside the lock: a failed write must never call back into it.
            if let worker { worker.send(.statisticsRequest(id: id)) } else {
                c.resume(throwing: APIError(.invalidState, "\(key.name) has no running worker (state \(phase.rawValue))"))
            }
        }
    }

    private func failStatsWaiter(_ id: UInt32) {
        state.withLock { $0.statsWaiters.removeValue(forKey: id) }?
            .resume(throwing: APIError(.internalError, "the worker did not answer"))
    }

    /// Marks the VM as going away and kills its worker (if any); waits until it has been
    /// reaped. After this no worker can be started for it.
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

    var isDestroying: Bool { state.withLock { $0.destroying } }

    private var handleClientPID: Int32? {
        if case .handle(_, let pid) = backing { return pid }
        return nil
    }

    /// Frees everything the VM holds (after its worker is gone).
    func release() {
        console.end()
        switch backing {
        case .worker(let memory, let images):
            memory.close()
            for fd in images { close(fd) }
            if let vsock = request.vsock { CallerFiles.removeSocket(vsock.socket, as: opener) }
        case .handle(let connection, _):
            // The client's /dev/kvm descriptor cannot be revoked; the connection can end.
            connection.shutdown()
        case .unrestored:
            break
        }
        if let pidfd = state.withLock({ s -> Int32? in defer { s.creatorPidfd = nil }; return s.creatorPidfd }) {
            close(pidfd)
        }
        // Whoever waits for a change (`wait_for`) hears now that there will be none.
        let waiters = state.withLock { s -> [CheckedContinuation<VMState?, Never>] in
            defer { s.changeWaiters = []; s.released = true }
            return s.changeWaiters.map(\.2)
        }
        for w in waiters { w.resume(returning: nil) }
    }
}

/// The socket of one handle client. The broker's thread owns it and closes it; others
/// may only shut it down. Both go through one lock, so a shutdown can never reach a
/// descriptor number that was closed and reused meanwhile.
final class HandleConnection: Sendable {
    private let fd: Mutex<Int32?>
    init(_ fd: Int32) { self.fd = Mutex(fd) }

    var descriptor: Int32? { fd.withLock { $0 } }

    func shutdown() {
        fd.withLock { fd in if let fd { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) } }
    }

    func close() {
        fd.withLock { fd in
            if let open = fd { _ = Glibc.close(open) }
            fd = nil
        }
    }
}
