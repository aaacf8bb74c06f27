import Foundation
import Testing

/// Every long-running process the tests start (daemons, attached clients, helpers) is
/// registered here, and its owner ends it: `TestProcess` and `DaemonFixture` kill and
/// reap theirs when they go away, on failure paths too. Fixtures shared by a suite live
/// in statics, which Swift never deinitialises: they are marked `shared` and stopped
/// (SIGTERM, then SIGKILL) when the test process exits.
///
/// At that exit (atexit: after every test, of every suite), whatever is still running
/// is a leak: a registered process that was not shared, or any process whose command
/// line names one of this run's temporary directories (`testRunMarker`). They are
/// listed, killed, and the run fails (exit status 1).
enum SpawnedProcesses {
    /// In the name of every temporary directory a test gives a process (sockets, state):
    /// this test process's pid, or `VMM_TEST_RUN` when scripts/test.sh sets it, so that
    /// the script can find what is left even after a test process that died.
    static let testRunMarker = "vmmd-test-\(ProcessInfo.processInfo.environment["VMM_TEST_RUN"] ?? String(getpid()))-"

    private struct Entry { let what: String; let shared: Bool; let directory: URL? }
    nonisolated(unsafe) private static var entries: [Int32: Entry] = [:]
    private static let lock = NSLock()
    private static let installExitCheck: Void = {
        // A write to a helper that has already exited must fail, not kill the test run.
        signal(SIGPIPE, SIG_IGN)
        atexit { SpawnedProcesses.checkAtExit() }
    }()

    /// `directory`: removed once a shared process has been stopped at exit.
    static func register(_ pid: Int32, _ what: String, shared: Bool = false, directory: URL? = nil) {
        installExitCheck
        lock.lock(); entries[pid] = Entry(what: what, shared: shared, directory: directory); lock.unlock()
    }

    static func unregister(_ pid: Int32) {
        lock.lock(); entries[pid] = nil; lock.unlock()
    }

    /// Whether `pid` still runs (a zombie does not).
    static func isRunning(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        return !stat[stat.index(after: close)...].hasPrefix(" Z")
    }

    /// SIGTERM, up to `grace` seconds, then SIGKILL; true if it had to be killed.
    @discardableResult
    static func end(_ pid: Int32, grace: Double = 5) -> Bool {
        guard isRunning(pid) else { return false }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        while Date() < deadline {
            if !isRunning(pid) { return false }
            usleep(20_000)
        }
        kill(pid, SIGKILL)
        return true
    }

    /// Processes whose command line names this run's temporary directories.
    static func marked() -> [(Int32, String)] {
        let me = getpid()
        return ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { name in
            guard let pid = Int32(name), pid != me, isRunning(pid),
                  let raw = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return nil }
            let line = String(decoding: raw.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            return line.contains(testRunMarker) ? (pid, line) : nil
        }
    }

    private static func checkAtExit() {
        lock.lock(); let all = entries; lock.unlock()
        for (pid, entry) in all where entry.shared {
            end(pid)
            if let directory = entry.directory { try? FileManager.default.removeItem(at: directory) }
        }
        var leaks = all.filter { !$0.value.shared && isRunning($0.key) }.map { "\($0.key) \($0.value.what)" }
        for (pid, line) in marked() where all[pid] == nil { leaks.append("\(pid) \(line)") }
        guard !leaks.isEmpty else { return }
        let report = "error: processes the tests started are still running at the end of the run:\n"
            + leaks.map { "  \($0)\n" }.joined()
        FileHandle.standardError.write(Data(report.utf8))
        for (pid, _) in all where isRunning(pid) { kill(pid, SIGKILL) }
        for (pid, _) in marked() { kill(pid, SIGKILL) }
        _exit(1)
    }
}

/// A process a test starts and owns: killed and reaped when the test ends it (`stop`)
/// or when the value goes away, whatever path the test took.
final class TestProcess: @unchecked Sendable {
    // @unchecked: `process` is set once in init; the pipes are thread-safe handles.
    let process = Process()
    let stdin = Pipe()
    private let output = Collected()
    private let stdoutPipe = Pipe()

    /// Starts `executable` (as `setprivUID`, with no groups, when given). stdout (and
    /// stderr, unless `discardStderr`) is gathered; stdin stays open until `closeInput`
    /// or `stop`.
    init(setprivUID: UInt32? = nil, _ executable: String, _ arguments: [String], discardStderr: Bool = false) throws {
        if let uid = setprivUID {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            process.arguments = ["--reuid", "\(uid)", "--regid", "\(uid)", "--clear-groups", executable] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
        }
        process.environment = testChildEnvironment
        process.standardInput = stdin
        process.standardOutput = stdoutPipe
        process.standardError = discardStderr ? FileHandle.nullDevice : stdoutPipe
        let output = self.output
        stdoutPipe.fileHandleForReading.readabilityHandler = { output.add([UInt8]($0.availableData)) }
        try process.run()
        SpawnedProcesses.register(process.processIdentifier, ([executable] + arguments).joined(separator: " "))
    }

    deinit { stop() }

    var text: String { output.text }
    var pid: Int32 { process.processIdentifier }

    func write(_ text: String) { try? stdin.fileHandleForWriting.write(contentsOf: Data(text.utf8)) }
    func closeInput() { try? stdin.fileHandleForWriting.close() }

    /// The first line of output, once it is complete (nil if none came in time).
    func readLine(timeout: Double) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let cut = text.firstIndex(of: "\n") { return String(text[..<cut]) }
            usleep(20_000)
        }
        return nil
    }

    /// Waits up to `seconds` for the process to end by itself; its status, or nil.
    func wait(_ seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if !process.isRunning { return process.terminationStatus }
            usleep(20_000)
        }
        return process.isRunning ? nil : process.terminationStatus
    }

    /// Closes its input, gives it a moment to end, then SIGTERM and SIGKILL; reaps it.
    func stop() {
        closeInput()
        if process.isRunning, wait(1) == nil {
            SpawnedProcesses.end(pid)
            process.waitUntilExit()
        }
        stdoutPipe.fileHandleForReading.readabilityHandler = nil
        SpawnedProcesses.unregister(pid)
    }
}
