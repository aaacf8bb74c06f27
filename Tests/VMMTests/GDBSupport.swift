import Foundation
import Testing

/// The real gdb (Debian's, from scripts/install-deps.sh), in batch mode.
enum GDBTool {
    static let path = "/usr/bin/gdb"
    static let available = FileManager.default.isExecutableFile(atPath: path)
    static let missing: Comment = "gdb is not installed: scripts/install-deps.sh installs it"

    /// Script lines that make the next `continue` end with gdb's `interrupt` (it sends 0x03
    /// to the stub, as Ctrl-C does) `seconds` in: a batch script cannot type Ctrl-C.
    static func interrupt(after seconds: Double) -> String {
        """
        python
        import threading
        threading.Timer(\(seconds), lambda: gdb.post_event(lambda: gdb.execute("interrupt"))).start()
        end
        """
    }

    /// Runs `gdb -batch -x script file` and returns what it printed.
    static func run(_ script: String, file: String, timeout: Double = 90) throws -> String {
        try #require(available, missing)
        let scriptURL = FileManager.default.temporaryDirectory.appendingPathComponent("gdb-\(getpid())-\(UUID().uuidString.prefix(6)).gdb")
        try Data(("set pagination off\nset confirm off\n" + script).utf8).write(to: scriptURL)
        defer { try? FileManager.default.removeItem(at: scriptURL) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = ["-nx", "-batch", "-x", scriptURL.path, file]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let collected = DataCollector(out.fileHandleForReading)
        let start = Date()
        while process.isRunning && Date().timeIntervalSince(start) < timeout { usleep(20_000) }
        if process.isRunning {
            process.terminate()
            usleep(200_000)
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
        return collected.text()
    }
}

/// Drains a pipe on its own thread, so that a chatty child never blocks on a full pipe.
final class DataCollector: @unchecked Sendable {
    private var data = Data()
    private let lock = NSLock()
    private let done = DispatchSemaphore(value: 0)

    init(_ handle: FileHandle) {
        Thread { [self] in
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                lock.lock(); data.append(chunk); lock.unlock()
            }
            done.signal()
        }.start()
    }

    func text() -> String {
        _ = done.wait(timeout: .now() + 5)
        lock.lock(); defer { lock.unlock() }
        return String(decoding: data, as: UTF8.self)
    }
}

/// `vmmctl run ... --gdb tcp:127.0.0.1:0` in the background: the port it picked, then
/// how it ended.
final class DebuggedRun {
    let process = Process()
    private let stdout: DataCollector
    private(set) var port: UInt16 = 0
    private let errLog: URL

    /// `nice`: at the lowest CPU priority (a Linux boot takes a core for a minute here).
    init(_ arguments: [String], wait: Bool = false, nice: Bool = false) throws {
        try #require(VMMCtl.exists, "vmmctl is not built at \(VMMCtl.path)")
        let run = ["run"] + arguments + ["--gdb", "tcp:127.0.0.1:0"] + (wait ? ["--gdb-wait"] : [])
        process.executableURL = URL(fileURLWithPath: nice ? "/usr/bin/nice" : VMMCtl.path)
        process.arguments = nice ? ["-n", "19", VMMCtl.path] + run : run
        let out = Pipe()
        errLog = FileManager.default.temporaryDirectory.appendingPathComponent("vmmctl-gdb-\(getpid())-\(UUID().uuidString.prefix(6)).log")
        FileManager.default.createFile(atPath: errLog.path, contents: nil)
        let err = try FileHandle(forWritingTo: errLog)
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        stdout = DataCollector(out.fileHandleForReading)
        let marker = "gdb stub listening on tcp:127.0.0.1:"
        for _ in 0 ..< 500 {
            let text = (try? String(contentsOf: errLog, encoding: .utf8)) ?? ""
            if let range = text.range(of: marker) {
                port = UInt16(text[range.upperBound...].prefix { $0.isNumber }) ?? 0
                break
            }
            guard process.isRunning else { break }
            usleep(10_000)
        }
        try #require(port != 0, "vmmctl did not say where the stub listens: \(errorOutput)")
    }

    var errorOutput: String { (try? String(contentsOf: errLog, encoding: .utf8)) ?? "" }

    /// Waits for vmmctl to end (killing it after `timeout`): its status and COM1 output.
    func finish(timeout: Double = 30) -> (status: Int32?, output: String, log: String) {
        let start = Date()
        while process.isRunning && Date().timeIntervalSince(start) < timeout { usleep(20_000) }
        let ended = !process.isRunning
        if !ended { process.terminate() }
        process.waitUntilExit()
        defer { try? FileManager.default.removeItem(at: errLog) }
        return (ended ? process.terminationStatus : nil, stdout.text(), errorOutput)
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
    }
}
