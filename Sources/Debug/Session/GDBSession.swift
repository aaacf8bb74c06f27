import Dispatch
import KVM
import Synchronization
import VMM

/// One gdb client on one machine: the GDB remote serial protocol in all-stop mode.
///
/// Bytes from the client, stops announced by the target and the machine's end arrive as
/// events on an inbox, from any thread; one session thread handles them in order, so
/// the protocol state needs no lock. Replies go out through `output` on that thread.
/// The session ends when the client disconnects, detaches or kills, or the machine
/// ends; it always leaves the machine running without breakpoints (detach), unless the
/// client killed it.
public final class GDBSession: @unchecked Sendable {
    // @unchecked: `Protocol` state is touched only on the session thread; the rest are
    // immutable or thread-safe.
    public enum Event: Sendable {
        case bytes([UInt8])
        case stopPending
        case machineEnded(StopReason)
        case disconnected
    }

    /// Largest packet the client may send (advertised as PacketSize).
    public static let packetSize = 0x4000
    /// Client bytes queued but not yet handled, past which the client is cut off.
    static let maxQueuedBytes = 1 << 20

    let target: DebugTarget
    private let output: @Sendable ([UInt8]) -> Void
    private let log: @Sendable (String) -> Void
    private let inbox = Mutex<(events: [Event], bytes: Int)>(([], 0))
    private let wake = DispatchSemaphore(value: 0)
    private let done = DispatchSemaphore(value: 0)
    private var thread: HostThread?
    private var state: ProtocolState

    /// Whether the session thread has finished.
    public var isFinished: Bool { finished.load(ordering: .acquiring) }
    private let finished = Atomic<Bool>(false)

    /// - Parameters:
    ///   - output: sends bytes to the client (called on the session thread only).
    ///   - log: one line per notable event (attach, detach, protocol errors).
    public init(target: DebugTarget, output: @escaping @Sendable ([UInt8]) -> Void,
                log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.target = target
        self.output = output
        self.log = log
        state = ProtocolState(threads: target.threadCount)
    }

    /// Attaches to the target, stops every vCPU (gdb expects a stopped target when it
    /// connects), runs `afterAttach`, and starts the session thread.
    public func start(afterAttach: (() -> Void)? = nil) throws {
        let line = try target.attach(onStop: { [weak self] in self?.post(.stopPending) })
        log(line)
        state.lastStop = target.interrupt(thread: 0)
        state.initialStop = true
        afterAttach?()
        do {
            // Waited for through `done`, not joined.
            thread = try HostThread(name: "gdb") { [self] in run() }
            thread?.detach()
        } catch {
            target.detach()
            throw error
        }
    }

    /// Bytes the client sent.
    public func received(_ bytes: [UInt8]) { post(.bytes(bytes)) }

    /// The machine stopped for good (powered off, killed, ...).
    public func machineEnded(_ reason: StopReason) { post(.machineEnded(reason)) }

    /// The client went away.
    public func disconnected() { post(.disconnected) }

    /// Waits for the session thread to end; false on timeout.
    @discardableResult
    public func waitUntilFinished(timeoutMS: Int? = nil) -> Bool {
        guard thread != nil else { return true }
        if let timeoutMS {
            guard done.wait(timeout: .now() + .milliseconds(timeoutMS)) == .success else { return false }
        } else {
            done.wait()
        }
        done.signal()  // later callers return at once too
        return true
    }

    private func post(_ event: Event) {
        let overflow = inbox.withLock { box -> Bool in
            if case .bytes(let b) = event {
                guard box.bytes + b.count <= Self.maxQueuedBytes else { return true }
                box.bytes += b.count
            }
            box.events.append(event)
            return false
        }
        if overflow {
            log("gdb: the client sends faster than it is answered: disconnecting it")
            inbox.withLock { $0.events.append(.disconnected) }
        }
        wake.signal()
    }

    private func run() {
        while !state.closed {
            wake.wait()
            let events = inbox.withLock { box -> [Event] in
                defer { box = ([], 0) }
                return box.events
            }
            for event in events where !state.closed { handle(event) }
        }
        if !state.killed { target.detach() }
        finished.store(true, ordering: .releasing)
        done.signal()
    }

    // MARK: - Events

    private func handle(_ event: Event) {
        switch event {
        case .bytes(let bytes):
            for item in state.reader.feed(bytes) where !state.closed { handle(item) }
        case .stopPending:
            guard state.running, state.ended == nil, let stop = target.takeStop() else { return }
            stopped(stop)
        case .machineEnded(let reason):
            guard state.ended == nil else { return }
            state.ended = reason
            log("gdb: the machine ended (\(reason))")
            // gdb waits for a stop reply only while the target runs; either way the
            // connection is over.
            if state.running { send(exitReply(reason)) }
            state.closed = true
        case .disconnected:
            log("gdb: client disconnected")
            state.closed = true
        }
    }

    private func handle(_ item: PacketReader.Item) {
        switch item {
        case .ack: break
        case .nack:
            if let last = state.lastSent { output(last) }  // the client asks for it again
        case .interrupt:
            guard state.running, state.ended == nil else { return }
            stopped(target.interrupt(thread: state.focus))
        case .badChecksum:
            if !state.noAck { output([PacketCodec.nack]) }
        case .tooLong:
            if !state.noAck { output([PacketCodec.ack]) }
            reply("E01")
        case .packet(let raw):
            if !state.noAck { output([PacketCodec.ack]) }
            if state.running && state.ended == nil {
                // In all-stop mode a client only sends ^C while the target runs.
                complain("gdb: packet ignored while the target runs: \(Self.printable(raw.prefix(40)))")
                return
            }
            execute(GDBCommand.parse(raw))
        }
    }

    private func stopped(_ stop: DebugStop) {
        state.running = false
        state.lastStop = stop
        state.initialStop = false
        state.generalThread = stop.vcpu
        state.focus = stop.vcpu
        send(stopReply(stop))
    }

    // MARK: - Replies

    private func send(_ payload: [UInt8], compress: Bool = true) {
        let framed = PacketCodec.frame(compress ? PacketCodec.runLengthEncode(payload) : payload)
        state.lastSent = framed
        output(framed)
    }

    private func reply(_ text: String) { send(Array(text.utf8)) }

    private func stopReply(_ stop: DebugStop) -> [UInt8] {
        // SIGINT for a Ctrl-C; SIGTRAP for everything else, the stop at attach included.
        let signal: UInt8 = stop.reason == .interrupted && !state.initialStop ? 2 : 5
        var out = Array("T".utf8) + PacketCodec.hexByte(signal)
        out += Array("thread:".utf8) + PacketCodec.hexNumber(UInt64(stop.vcpu + 1)) + [UInt8(ascii: ";")]
        switch stop.reason {
        case .softwareBreakpoint: if state.clientSwBreak { out += Array("swbreak:;".utf8) }
        case .hardwareBreakpoint: if state.clientHwBreak { out += Array("hwbreak:;".utf8) }
        case .watchpoint(let kind, let address):
            let name = kind == .write ? "watch" : kind == .read ? "rwatch" : "awatch"
            out += Array("\(name):".utf8) + PacketCodec.hexNumber(address) + [UInt8(ascii: ";")]
        case .singleStep, .interrupted: break
        }
        if let file = try? target.registers(thread: stop.vcpu) {
            for n in RegisterFile.expedited {
                out += PacketCodec.hexByte(UInt8(n)) + [UInt8(ascii: ":")] + PacketCodec.hex(file.value(of: n)) + [UInt8(ascii: ";")]
            }
        }
        return out
    }

    /// `W` with the status `vmmctl run` would end with, or `X09` for a killed machine.
    private func exitReply(_ reason: StopReason) -> [UInt8] {
        if reason == .killed { return Array("X09".utf8) }
        return Array("W".utf8) + PacketCodec.hexByte(UInt8(truncatingIfNeeded: reason.exitStatus))
    }

    // MARK: - Commands

    private func execute(_ command: GDBCommand) {
        if let ended = state.ended {
            // The machine is gone: only the questions gdb asks on the way out are answered.
            switch command {
            case .haltReason: send(exitReply(ended))
            case .detach: reply("OK"); state.closed = true
            case .kill: state.closed = true
            default: reply("E01")
            }
            return
        }
        switch command {
        case .haltReason:
            if let stop = state.lastStop { send(stopReply(stop)) } else { reply("S05") }
        case .supported(let features):
            state.clientSwBreak = features.contains("swbreak+")
            state.clientHwBreak = features.contains("hwbreak+")
            reply("PacketSize=\(String(Self.packetSize, radix: 16));QStartNoAckMode+;qXfer:features:read+;swbreak+;hwbreak+;vContSupported+")
        case .startNoAckMode:
            reply("OK")
            state.noAck = true
        case .readFeatures(let annex, let offset, let length):
            guard annex == "target.xml" else { return reply("E00") }
            let all = TargetDescription.bytes
            let start = min(offset, all.count), end = min(start + length, all.count)
            send(Array((end == all.count ? "l" : "m").utf8) + PacketCodec.escape(Array(all[start ..< end])), compress: false)
        case .readRegisters:
            guard let file = registers(state.generalThread) else { return }
            send(PacketCodec.hex(file.all))
        case .writeRegisters(let bytes):
            guard var file = registers(state.generalThread) else { return }
            guard let parts = file.setAll(bytes) else { return reply("E01") }
            write(file, parts)
        case .readRegister(let n):
            guard n < RegisterFile.layout.count else { return reply("E01") }
            guard let file = registers(state.generalThread) else { return }
            send(PacketCodec.hex(file.value(of: n)))
        case .writeRegister(let n, let bytes):
            guard n < RegisterFile.layout.count, bytes.count == RegisterFile.layout[n].bytes else { return reply("E01") }
            guard var file = registers(state.generalThread) else { return }
            let parts = file.set(n, bytes)
            write(file, parts)
        case .readMemory(let address, let length):
            do {
                send(PacketCodec.hex(try target.readMemory(at: address, count: length, thread: state.generalThread)))
            } catch {
                reply("E0e")
            }
        case .writeMemory(let address, let bytes):
            do {
                if !bytes.isEmpty { try target.writeMemory(bytes, at: address, thread: state.generalThread) }
                reply("OK")
            } catch {
                reply("E0e")
            }
        case .resume(let step, let address):
            let thread = state.resumeThread
            if let address, !setProgramCounter(address, thread: thread) { return }
            var actions = Array(repeating: step ? ResumeAction.stay : .run, count: state.threads)
            if step { actions[thread] = .step }
            resume(actions, focus: thread)
        case .vContQuery:
            reply("vCont;c;C;s;S;t")
        case .vCont(let list):
            var actions: [ResumeAction] = []
            var focus: Int?
            for i in 0 ..< state.threads {
                let action = list.first { a in a.thread == nil || a.thread == .all || a.thread == .any || a.thread == .id(i + 1) }
                switch action?.kind {
                case .continue?: actions.append(.run)
                case .step?: actions.append(.step); if focus == nil { focus = i }
                case .stop?, nil: actions.append(.stay)
                }
            }
            for a in list { if case .id(let t)? = a.thread, focus == nil, (1 ... state.threads).contains(t) { focus = t - 1 } }
            guard actions.contains(where: { $0 != .stay }) else { return reply("OK") }
            resume(actions, focus: focus ?? state.focus)
        case .setThread(let operation, let thread):
            guard let index = resolve(thread) else { return reply("E02") }
            switch operation {
            case UInt8(ascii: "g"): state.generalThread = index ?? state.generalThread
            case UInt8(ascii: "c"): state.continueThread = index
            default: return reply("E01")
            }
            reply("OK")
        case .threadAlive(let thread):
            guard case .id(let t) = thread, (1 ... state.threads).contains(t) else { return reply("E02") }
            reply("OK")
        case .firstThreadInfo:
            reply("m" + (1 ... state.threads).map { String($0, radix: 16) }.joined(separator: ","))
        case .nextThreadInfo:
            reply("l")
        case .currentThread:
            reply("QC" + String(state.generalThread + 1, radix: 16))
        case .attached:
            reply("1")  // gdb detaches (never kills) when it quits
        case .threadExtraInfo(let thread):
            guard case .id(let t) = thread, (1 ... state.threads).contains(t) else { return reply("E02") }
            send(PacketCodec.hex(target.describe(thread: t - 1)))
        case .monitor(let command):
            for line in target.monitor(command).split(separator: "\n", omittingEmptySubsequences: false) where !line.isEmpty {
                send(Array("O".utf8) + PacketCodec.hex(String(line) + "\n"))
            }
            reply("OK")
        case .insertPoint(let type, let address, let kind):
            guard let point = Self.point(type, address, kind) else { return reply("E01") }
            do {
                try target.insert(point, thread: state.generalThread)
                reply("OK")
            } catch let error as MachineError {
                if case .unsupported = error { reply("") } else { complain("gdb: \(point): \(error)"); reply("E03") }
            } catch {
                complain("gdb: \(point): \(error)")
                reply("E0e")
            }
        case .removePoint(let type, let address, let kind):
            guard let point = Self.point(type, address, kind) else { return reply("E01") }
            target.remove(point)
            reply("OK")
        case .detach:
            reply("OK")
            log("gdb: client detached")
            state.closed = true
        case .kill, .vKill:
            if command == .vKill { reply("OK") }
            log("gdb: client killed the machine")
            target.detach()
            target.kill()
            state.killed = true
            state.closed = true
        case .symbolLookup:
            reply("OK")
        case .unsupported:
            reply("")
        case .malformed(let why):
            complain("gdb: malformed packet: \(why)")
            reply("E01")
        }
    }

    /// Logs a client's mistake, at most `maxComplaints` times a session: a client cannot
    /// fill the log.
    private func complain(_ line: String) {
        state.complaints += 1
        if state.complaints <= Self.maxComplaints { log(Self.printable(line.utf8)) }
        if state.complaints == Self.maxComplaints { log("gdb: further complaints about this client are not logged") }
    }

    static let maxComplaints = 20

    /// Client bytes fit for a log line: printable ASCII, the rest as '.'.
    static func printable<C: Sequence>(_ bytes: C) -> String where C.Element == UInt8 {
        String(decoding: bytes.map { (0x20 ..< 0x7F).contains($0) ? $0 : UInt8(ascii: ".") }, as: UTF8.self)
    }

    private func registers(_ thread: Int) -> RegisterFile? {
        do { return try target.registers(thread: thread) } catch {
            complain("gdb: reading the registers of thread \(thread + 1): \(error)")
            reply("E02")
            return nil
        }
    }

    private func write(_ file: RegisterFile, _ parts: RegisterFile.Parts) {
        do {
            try target.setRegisters(file, parts: parts, thread: state.generalThread)
            reply("OK")
        } catch {
            complain("gdb: writing the registers of thread \(state.generalThread + 1): \(error)")
            reply("E02")
        }
    }

    private func setProgramCounter(_ address: UInt64, thread: Int) -> Bool {
        guard var file = registers(thread) else { return false }
        file.set(16, RegisterFile.littleEndian(address, 8))
        do {
            try target.setRegisters(file, parts: .general, thread: thread)
            return true
        } catch {
            reply("E02")
            return false
        }
    }

    private func resume(_ actions: [ResumeAction], focus: Int) {
        do {
            state.focus = focus
            state.running = true
            _ = try target.resume(actions)  // false: a waiting stop is announced instead
        } catch {
            state.running = false
            log("gdb: resuming: \(error)")
            reply("E02")
        }
    }

    /// nil for an unknown thread; `.some(nil)` for "any/all" (keep the current one).
    private func resolve(_ thread: ThreadID) -> Int?? {
        switch thread {
        case .all, .any: return .some(nil)
        case .id(let t): return (1 ... state.threads).contains(t) ? .some(t - 1) : nil
        }
    }

    static func point(_ type: Int, _ address: UInt64, _ kind: Int) -> DebugPoint? {
        switch type {
        case 0: return .software(address: address)
        case 1: return .hardware(address: address)
        case 2, 3, 4:
            guard kind > 0 else { return nil }
            return .watch(type == 2 ? .write : type == 3 ? .read : .access, address: address, length: kind)
        default: return nil
        }
    }
}

/// What the session thread knows about the conversation.
struct ProtocolState {
    let threads: Int
    var reader = PacketReader(maxPayload: GDBSession.packetSize)
    var noAck = false
    var running = false
    var closed = false
    var killed = false
    var ended: StopReason?
    var lastStop: DebugStop?
    var initialStop = false
    var lastSent: [UInt8]?
    var clientSwBreak = false, clientHwBreak = false
    var complaints = 0
    /// `Hg`: the vCPU registers and memory are read from.
    var generalThread = 0
    /// `Hc`: the vCPU `c`/`s` apply to (nil: all / whichever).
    var continueThread: Int?
    /// The vCPU a Ctrl-C stop is reported on: the one last resumed or stopped.
    var focus = 0

    init(threads: Int) { self.threads = max(threads, 1) }

    var resumeThread: Int { continueThread ?? generalThread }
}
