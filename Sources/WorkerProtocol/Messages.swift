/// What the daemon tells a worker. The worker owns one machine and obeys these in order.
public enum DaemonMessage: Sendable, Equatable {
    /// First message, with descriptors attached (see `WorkerSetup`).
    case setup(WorkerSetup)
    /// Boot the guest (or boot it again from power-on after it stopped).
    case start
    case pause
    case resume
    /// Hard reset: the guest restarts from power-on, memory kept.
    case reset
    /// Ask the guest to power off.
    case powerOff
    /// Stop the guest now (reported as killed); the worker stays for a later start.
    case kill
    /// Bytes typed at the console, for COM1's receiver.
    case consoleInput([UInt8])
    /// Ask for statistics; the answer carries the same `id`.
    case statisticsRequest(id: UInt32)
    /// Test hook: the worker makes a system call its sandbox forbids (see the sandbox issue).
    case attemptForbiddenCall
    /// Write a snapshot into the files that arrive on the descriptor channel (state,
    /// memory, manifest); answered by `snapshotTaken` or `snapshotFailed`.
    case snapshot(SnapshotCommand)

    /// A debugger client connected (`vmmctl gdb`): stop the guest and serve it.
    case debugAttach
    /// Bytes from the debugger client, unparsed (the GDB remote protocol).
    case debugData([UInt8])
    /// The debugger client went away: remove its breakpoints, let the guest run.
    case debugDetach

    enum Tag: UInt8 {
        case setup = 1, start, pause, resume, reset, powerOff, kill, consoleInput, statisticsRequest, attemptForbiddenCall
        case snapshot
        case debugAttach, debugData, debugDetach
    }

    /// The payload (tag + fields), without the frame header.
    public func encoded() -> [UInt8] {
        var w = WireWriter()
        switch self {
        case .setup(let s): w.u8(Tag.setup.rawValue); s.encode(into: &w)
        case .start: w.u8(Tag.start.rawValue)
        case .pause: w.u8(Tag.pause.rawValue)
        case .resume: w.u8(Tag.resume.rawValue)
        case .reset: w.u8(Tag.reset.rawValue)
        case .powerOff: w.u8(Tag.powerOff.rawValue)
        case .kill: w.u8(Tag.kill.rawValue)
        case .consoleInput(let bytes): w.u8(Tag.consoleInput.rawValue); w.data(bytes)
        case .statisticsRequest(let id): w.u8(Tag.statisticsRequest.rawValue); w.u32(id)
        case .attemptForbiddenCall: w.u8(Tag.attemptForbiddenCall.rawValue)
        case .snapshot(let c):
            w.u8(Tag.snapshot.rawValue); w.bool(c.diff); w.string(c.parentPath); w.bool(c.stayPaused)
        case .debugAttach: w.u8(Tag.debugAttach.rawValue)
        case .debugData(let bytes): w.u8(Tag.debugData.rawValue); w.data(bytes)
        case .debugDetach: w.u8(Tag.debugDetach.rawValue)
        }
        return w.bytes
    }

    public static func decode(_ payload: [UInt8]) throws -> DaemonMessage {
        var r = WireReader(payload)
        let raw = try r.u8()
        guard let tag = Tag(rawValue: raw) else { throw WireError.unknownTag(raw) }
        let message: DaemonMessage
        switch tag {
        case .setup: message = .setup(try WorkerSetup.decode(from: &r))
        case .start: message = .start
        case .pause: message = .pause
        case .resume: message = .resume
        case .reset: message = .reset
        case .powerOff: message = .powerOff
        case .kill: message = .kill
        case .consoleInput: message = .consoleInput(try r.data())
        case .statisticsRequest: message = .statisticsRequest(id: try r.u32())
        case .attemptForbiddenCall: message = .attemptForbiddenCall
        case .snapshot: message = .snapshot(SnapshotCommand(diff: try r.bool(), parentPath: try r.string(), stayPaused: try r.bool()))
        case .debugAttach: message = .debugAttach
        case .debugData: message = .debugData(try r.data())
        case .debugDetach: message = .debugDetach
        }
        guard r.isAtEnd else { throw WireError.malformed("trailing bytes after \(tag)") }
        return message
    }
}

/// The guest's run state as a worker reports it.
public enum GuestRunState: UInt8, Sendable, Equatable {
    case running = 1, paused, stopped
}

/// One statistic in a worker's answer: `scope` is "vm", "vcpu0", "vcpu1", ...; `source`
/// is "kvm" (KVM's binary statistics) or "vmm" (the VMM's own counters).
public struct StatisticLine: Sendable, Equatable {
    public var scope: String
    public var source: String
    public var name: String
    public var value: UInt64
    public init(scope: String, source: String, name: String, value: UInt64) {
        self.scope = scope; self.source = source; self.name = name; self.value = value
    }
}

/// What a worker tells the daemon.
public enum WorkerMessage: Sendable, Equatable {
    /// The machine is built; the image loaded as `bootFormat`.
    case ready(bootFormat: String)
    /// The machine could not be built (bad image, bad option, KVM refused): the worker exits.
    case setupFailed(String)
    case state(GuestRunState)
    /// The guest stopped: `kind` is a stable word (poweroff, reset, halt, triple_fault,
    /// internal_error, debug_exit, vmm_error, killed), `status` what `vmmctl run` would
    /// exit with, `message` the one-line description.
    case stopped(kind: String, status: Int32, message: String)
    /// Bytes COM1 transmitted.
    case console([UInt8])
    case statistics(id: UInt32, [StatisticLine])
    /// The snapshot asked for is written (the files are complete; the daemon renames
    /// the state file into place).
    case snapshotTaken(SnapshotReport)
    case snapshotFailed(String)

    /// Bytes for the debugger client, unparsed by the daemon.
    case debugData([UInt8])
    /// The debugger session ended on the worker's side (the client detached or killed,
    /// or the guest ended): the daemon closes the client's connection.
    case debugClosed

    enum Tag: UInt8 { case ready = 1, setupFailed, state, stopped, console, statistics, snapshotTaken, snapshotFailed, debugData, debugClosed }

    public func encoded() -> [UInt8] {
        var w = WireWriter()
        switch self {
        case .ready(let f): w.u8(Tag.ready.rawValue); w.string(f)
        case .setupFailed(let m): w.u8(Tag.setupFailed.rawValue); w.string(m)
        case .state(let s): w.u8(Tag.state.rawValue); w.u8(s.rawValue)
        case .stopped(let kind, let status, let message):
            w.u8(Tag.stopped.rawValue); w.string(kind); w.i32(status); w.string(message)
        case .console(let bytes): w.u8(Tag.console.rawValue); w.data(bytes)
        case .statistics(let id, let lines):
            w.u8(Tag.statistics.rawValue); w.u32(id); w.u32(UInt32(lines.count))
            for l in lines { w.string(l.scope); w.string(l.source); w.string(l.name); w.u64(l.value) }
        case .snapshotTaken(let r):
            w.u8(Tag.snapshotTaken.rawValue); w.data(r.id); w.data(r.parent ?? []); w.u64(r.memoryBytes)
            w.u64(r.memoryFileBytes); w.u64(r.stateBytes); w.u64(r.durationNanoseconds); w.u8(r.state.rawValue)
        case .snapshotFailed(let m): w.u8(Tag.snapshotFailed.rawValue); w.string(m)
        case .debugData(let bytes): w.u8(Tag.debugData.rawValue); w.data(bytes)
        case .debugClosed: w.u8(Tag.debugClosed.rawValue)
        }
        return w.bytes
    }

    public static func decode(_ payload: [UInt8]) throws -> WorkerMessage {
        var r = WireReader(payload)
        let raw = try r.u8()
        guard let tag = Tag(rawValue: raw) else { throw WireError.unknownTag(raw) }
        let message: WorkerMessage
        switch tag {
        case .ready: message = .ready(bootFormat: try r.string())
        case .setupFailed: message = .setupFailed(try r.string())
        case .state:
            let s = try r.u8()
            guard let state = GuestRunState(rawValue: s) else { throw WireError.malformed("state \(s)") }
            message = .state(state)
        case .stopped: message = .stopped(kind: try r.string(), status: try r.i32(), message: try r.string())
        case .console: message = .console(try r.data())
        case .statistics:
            let id = try r.u32(), count = try r.u32()
            guard count <= 100_000 else { throw WireError.malformed("\(count) statistics") }
            var lines: [StatisticLine] = []
            for _ in 0 ..< count {
                lines.append(StatisticLine(scope: try r.string(), source: try r.string(), name: try r.string(), value: try r.u64()))
            }
            message = .statistics(id: id, lines)
        case .snapshotTaken:
            let id = try r.data(), parent = try r.data()
            guard id.count == 16, parent.isEmpty || parent.count == 16 else { throw WireError.malformed("snapshot IDs") }
            let memory = try r.u64(), file = try r.u64(), state = try r.u64(), duration = try r.u64(), raw = try r.u8()
            guard let run = GuestRunState(rawValue: raw) else { throw WireError.malformed("state \(raw)") }
            message = .snapshotTaken(SnapshotReport(id: id, parent: parent.isEmpty ? nil : parent, memoryBytes: memory,
                                                    memoryFileBytes: file, stateBytes: state, durationNanoseconds: duration, state: run))
        case .snapshotFailed: message = .snapshotFailed(try r.string())
        case .debugData: message = .debugData(try r.data())
        case .debugClosed: message = .debugClosed
        }
        guard r.isAtEnd else { throw WireError.malformed("trailing bytes after \(tag)") }
        return message
    }
}

/// How to write a snapshot (`DaemonMessage.snapshot`).
public struct SnapshotCommand: Sendable, Equatable {
    /// Only the pages changed since the machine's last snapshot or restore.
    public var diff: Bool
    /// For a diff: the parent's directory, as the diff records it.
    public var parentPath: String
    /// Leave the guest paused afterwards.
    public var stayPaused: Bool
    public init(diff: Bool, parentPath: String, stayPaused: Bool) {
        self.diff = diff; self.parentPath = parentPath; self.stayPaused = stayPaused
    }
}

/// A written snapshot (`WorkerMessage.snapshotTaken`).
public struct SnapshotReport: Sendable, Equatable {
    public var id: [UInt8]
    public var parent: [UInt8]?
    public var memoryBytes: UInt64
    public var memoryFileBytes: UInt64
    public var stateBytes: UInt64
    public var durationNanoseconds: UInt64
    /// Where the guest is afterwards.
    public var state: GuestRunState
    public init(id: [UInt8], parent: [UInt8]?, memoryBytes: UInt64, memoryFileBytes: UInt64, stateBytes: UInt64,
                durationNanoseconds: UInt64, state: GuestRunState) {
        self.id = id; self.parent = parent; self.memoryBytes = memoryBytes; self.memoryFileBytes = memoryFileBytes
        self.stateBytes = stateBytes; self.durationNanoseconds = durationNanoseconds; self.state = state
    }
}
