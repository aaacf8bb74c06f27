import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import KVM
import Synchronization

/// One vCPU and the host thread that runs it, with an explicit state machine:
///
///     created ──start──▶ running ⇄ paused
///                           │  ▲      │
///                      stop │  │ restart
///                           ▼  │      │
///                          stopped ◀──┘
///
/// Other threads *request* a state (`pause`, `resume`, `stop`, `restart`) and kick the
/// vCPU out of `KVM_RUN`; only the vCPU's own thread changes `state`, at the top of its
/// loop. A stopped vCPU's thread parks rather than exits, so a reboot or a new run
/// reuses it: KVM pays a `synchronize_rcu()` whenever a vCPU is run by a new task.
/// The thread ends only with `terminate()`, when the machine goes away.
public final class VCPURunner: @unchecked Sendable {
    // @unchecked: `thread` is set once in start() before any kick can need it, and read
    // only by kick(); everything else is immutable or behind `control`/atomics.

    public enum State: String, Sendable { case created, running, paused, stopped }

    enum Request: UInt8 { case run = 0, pause = 1, stop = 2, terminate = 3 }

    struct Control {
        var state: State = .created
        var ackPending = false
    }

    public let vcpu: KVMVCPU
    public var id: UInt32 { vcpu.id }
    /// Exits by kind, for statistics.
    public let counters = ExitCounters()

    /// Halt probe: 0 idle, 1 asked, 2 "halted for good", 3 "alive" (see `probeHalted`).
    private let probe = Atomic<UInt8>(0)
    /// What other threads asked for; read on every loop iteration without a lock.
    private let requested = Atomic<UInt8>(Request.run.rawValue)
    private let control = Mutex(Control())
    private let wakeup = DispatchSemaphore(value: 0)
    private let acknowledged = DispatchSemaphore(value: 0)
    private var thread: HostThread?
    private let handler: ExitDispatcher
    /// Work for the parked vCPU thread (`onOwnThread`), and its completion.
    private let job = Mutex<(@Sendable () -> Void)?>(nil)
    private let jobDone = DispatchSemaphore(value: 0)
    /// One `onOwnThread` exchange at a time: the job slot holds one job and `jobDone`
    /// answers one wait, so two overlapping callers would lose a job and wait forever.
    private let jobTurn = DispatchSemaphore(value: 1)

    init(vcpu: KVMVCPU, handler: ExitDispatcher) {
        self.vcpu = vcpu
        self.handler = handler
    }

    /// The current state.
    public var state: State { control.withLock { $0.state } }

    /// Whether the vCPU is out of the guest and stays out until resumed: paused, or
    /// never started, or started but told to pause before it first ran (what a snapshot
    /// may read).
    var isParked: Bool {
        control.withLock { c in
            c.state == .paused || (c.state == .created && (thread == nil || requested.load(ordering: .acquiring) == Request.pause.rawValue))
        }
    }

    /// Starts the vCPU thread (created → running), or lets a stopped vCPU run again.
    /// `startPaused` leaves it paused until `resume`.
    func start(paused startPaused: Bool = false) throws {
        let request: Request = startPaused ? .pause : .run
        guard thread == nil else {
            control.withLock { c in
                requested.store(request.rawValue, ordering: .releasing)
                if c.state == .stopped || c.state == .paused { wakeup.signal() }
            }
            return
        }
        requested.store(request.rawValue, ordering: .releasing)
        VCPUKick.installHandler()
        thread = try HostThread(name: "vcpu\(id)") { [self] in loop() }
    }

    /// Asks the vCPU to pause and waits until it has (libvmmapi's `vm_suspend_cpu`).
    public func pause() {
        guard transition(to: .pause, doneIn: { $0 == .paused || $0 == .stopped || $0 == .created }) else { return }
        acknowledged.wait()
    }

    /// Asks the vCPU to pause without waiting for it: safe from any thread, a vCPU's own
    /// included (a debugger's all-stop starts on the thread that hit the breakpoint,
    /// which must not wait for the others). `pause()` afterwards waits until it has.
    func requestPause() {
        let mustKick = control.withLock { c -> Bool in
            let current = requested.load(ordering: .acquiring)
            guard current == Request.run.rawValue else { return false }
            requested.store(Request.pause.rawValue, ordering: .releasing)
            return c.state == .running
        }
        if mustKick { kick() }
    }

    /// Lets a paused vCPU run again (libvmmapi's `vm_resume_cpu`).
    public func resume() {
        control.withLock { c in
            guard c.state != .stopped, requested.load(ordering: .acquiring) == Request.pause.rawValue else { return }
            requested.store(Request.run.rawValue, ordering: .releasing)
            if c.state == .paused { wakeup.signal() }
        }
    }

    /// Asks the vCPU to stop (leave the guest and park). Does not wait; see `waitStopped`.
    func requestStop() {
        control.withLock { c in
            guard requested.load(ordering: .acquiring) != Request.terminate.rawValue else { return }
            requested.store(Request.stop.rawValue, ordering: .releasing)
            if c.state == .paused { wakeup.signal() }
        }
        kick()
    }

    /// Stops the vCPU and waits until its thread has parked outside the guest.
    func waitStopped() {
        guard thread != nil, transition(to: .stop, doneIn: { $0 == .stopped || $0 == .created }) else { return }
        acknowledged.wait()
    }

    /// Ends the vCPU thread for good and waits for it (machine teardown).
    func terminate() {
        control.withLock { _ in requested.store(Request.terminate.rawValue, ordering: .releasing) }
        wakeup.signal()
        kick()
        thread?.join()
    }

    /// Sets the request and kicks; returns whether the caller must wait for an ack (not when
    /// `done` holds for the current state). A predicate, not a `Set<State>`: a set's
    /// first use in a process instantiates its generic metadata and scans every protocol
    /// conformance record for `State: Hashable`, ~0.1 ms of a cold `vmmctl run`.
    private func transition(to request: Request, doneIn done: (State) -> Bool) -> Bool {
        let mustWait = control.withLock { c -> Bool in
            let current = requested.load(ordering: .acquiring)
            guard current != Request.terminate.rawValue,
                  request == .stop || current != Request.stop.rawValue else { return false }
            requested.store(request.rawValue, ordering: .releasing)
            if done(c.state) { return false }
            c.ackPending = true
            return true
        }
        if mustWait { kick() }
        return mustWait
    }

    /// Makes a running `KVM_RUN` return now (signal) or the next one return at once
    /// (`immediate_exit`). The request was published before, so the loop sees it.
    func kick() {
        vcpu.requestImmediateExit(true)
        if let thread, thread.handle != HostThread.current { VCPUKick.kick(thread.handle) }
    }

    /// Runs `body` on the vCPU's own thread while the vCPU is paused (`isParked`), and
    /// returns its result; a vCPU whose thread never started runs it on the caller's.
    /// A stopped vCPU is refused: `.stopped` is also the state of a thread that has ended.
    /// KVM wants vCPU ioctls from the thread that runs the vCPU (api.rst, "vcpu ioctls").
    func onOwnThread<T>(_ body: @escaping @Sendable (KVMVCPU) throws -> T) throws -> T {
        guard let thread, thread.handle != HostThread.current else { return try body(vcpu) }
        jobTurn.wait()
        defer { jobTurn.signal() }
        // Only a parked thread waits for jobs; a running one would take this one at its
        // next pause, and an exited one never.
        guard isParked else { throw MachineError.invalidState("vCPU \(id) is not paused") }
        let box = ResultBox<T>()
        let vcpu = self.vcpu
        job.withLock { $0 = { box.result = Result { try body(vcpu) } } }
        wakeup.signal()
        jobDone.wait()
        guard let result = box.result else { throw MachineError.invalidState("vCPU \(id) did not run the job") }
        return try result.get()
    }

    // MARK: - Halt detection

    /// Kicks the vCPU and asks it whether it can ever run again: true when it is halted
    /// with interrupts disabled, or still waiting for INIT/SIPI. Only an NMI or INIT from
    /// another vCPU could wake it, so when every vCPU answers true the machine is dead
    /// (bhyve's VM_SUSPEND_HALT). Returns nil if no answer came within `timeoutMS`.
    func probeHalted(timeoutMS: Int = 100) -> Bool? {
        guard state == .running else { return nil }
        probe.store(1, ordering: .releasing)
        kick()
        for _ in 0 ..< timeoutMS {
            switch probe.load(ordering: .acquiring) {
            case 2: probe.store(0, ordering: .relaxed); return true
            case 3: probe.store(0, ordering: .relaxed); return false
            default: usleepMS(1)
            }
        }
        probe.store(0, ordering: .relaxed)
        return nil
    }

    /// On the vCPU thread, outside KVM_RUN: the MP state and RFLAGS.IF decide. A vCPU
    /// the assist finds stuck in a `vmcall` the host never returns from is finished and alive.
    private func answerProbe() {
        if let assist = handler.assist, assist.finishStalledHypercall(on: vcpu) {
            probe.store(3, ordering: .releasing)
            return
        }
        let dead: Bool
        switch try? vcpu.mpState() {
        case .halted?:
            let interruptsOn = ((try? vcpu.registers([.rflags]))?.first ?? 0x200) & 0x200 != 0
            dead = !interruptsOn
        case .uninitialized?, .initReceived?:
            dead = true
        default:
            dead = false
        }
        probe.store(dead ? 2 : 3, ordering: .releasing)
    }

    // MARK: - The vCPU thread

    private enum Step { case run, wait, exit }  // `wait` covers both paused and parked-stopped

    private func loop() {
        VCPUKick.unblockOnCurrentThread()
        // The thread's own view of `state`, so that the common case (still running, no
        // request) costs one atomic load and no lock.
        var running = false
        while true {
            if !(running && requested.load(ordering: .acquiring) == Request.run.rawValue) {
                if running && requested.load(ordering: .acquiring) == Request.pause.rawValue { completePendingOperation() }
                // Before anyone is told the vCPU parked: its registers must read back as
                // what the next entry resumes from (a debugger reads and writes them).
                if requested.load(ordering: .acquiring) != Request.run.rawValue {
                    do { try vcpu.applyPendingSyncedRegisterWrites() } catch { handler.failed(error, on: self) }
                }
                let step = nextStep()
                running = step == .run
                switch step {
                case .exit: return
                case .wait:
                    wakeup.wait()
                    if let work = job.withLock({ j in defer { j = nil }; return j }) { work(); jobDone.signal() }
                    continue
                case .run: break
                }
            }
            do {
                let exit = try vcpu.runOnce()
                if case .interrupted = exit {
                    // Clear before re-reading `requested` at the top: a kick that lands after
                    // this store sets it again, so no request is missed.
                    vcpu.requestImmediateExit(false)
                    counters.bump(.interrupted)
                    if probe.load(ordering: .acquiring) == 1 { answerProbe() }
                    continue
                }
                handler.handle(exit, on: self)
            } catch {
                handler.failed(error, on: self)
            }
        }
    }

    /// Before a vCPU parks paused: KVM finishes the exit the VMM just handled (an `in`'s
    /// value into RAX, RIP past the instruction, registers written through the sync-regs
    /// area) only at the next KVM_RUN, and keeps that pending state where no KVM_GET_*
    /// can see it (api.rst, "KVM_RUN": re-enter with immediate_exit to complete it). A
    /// paused vCPU is one a snapshot may read, so it re-enters once with immediate_exit
    /// set: KVM completes the operation and returns EINTR without running the guest. A
    /// completion that ends in another exit (the next chunk of a string I/O) is handled
    /// like any other.
    private func completePendingOperation() {
        for _ in 0 ..< Self.maxCompletionExits {
            vcpu.requestImmediateExit(true)
            do {
                let exit = try vcpu.runOnce()
                if case .interrupted = exit { break }
                handler.handle(exit, on: self)
            } catch {
                handler.failed(error, on: self)
                break
            }
        }
        vcpu.requestImmediateExit(false)
    }

    /// Exits a completion may take at most (a 64 KiB `rep outsb` is 65536 exits).
    static let maxCompletionExits = 1 << 17

    private func nextStep() -> Step {
        control.withLock { c -> Step in
            switch Request(rawValue: requested.load(ordering: .acquiring)) ?? .terminate {
            case .run:
                c.state = .running
                return .run
            case .pause:
                c.state = .paused
                if c.ackPending { c.ackPending = false; acknowledged.signal() }
                return .wait
            case .stop:
                c.state = .stopped
                if c.ackPending { c.ackPending = false; acknowledged.signal() }
                return .wait
            case .terminate:
                c.state = .stopped
                return .exit
            }
        }
    }
}

/// A result handed from the vCPU thread to a caller waiting on a semaphore.
private final class ResultBox<T>: @unchecked Sendable {
    // @unchecked: written by the vCPU thread before `jobDone.signal()`, read after the wait.
    var result: Result<T, any Error>?
}

func usleepMS(_ ms: Int) { _ = usleep(useconds_t(ms * 1000)) }
