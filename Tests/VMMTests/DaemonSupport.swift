import Foundation
import Testing

/// A vmmd started for one test: its own socket, state directory and log, in a fresh
/// temporary directory. Stopped (SIGTERM) by `stop()` or when the fixture goes away.
final class DaemonFixture: @unchecked Sendable {
    static let vmmd = packageRoot.appendingPathComponent(".build/debug/vmmd").path
    static let vmmctl = packageRoot.appendingPathComponent(".build/debug/vmmctl").path

    let directory: URL
    let socket: String
    let stateDirectory: String
    let logPath: String
    private(set) var process: Process?

    /// Extra vmmd arguments (e.g. --test-hooks).
    let extraArguments: [String]

    /// Shared by the tests of a suite (held in a static, never deinitialised): stopped
    /// when the test process exits (`SpawnedProcesses`).
    let shared: Bool

    /// A command vmmd is started through (it must exec it), e.g. `prlimit --nofile=N:N`.
    let launcher: [String]

    init(stateDirectory: String? = nil, config: String? = nil, arguments: [String] = [], shared: Bool = false,
         launcher: [String] = []) throws {
        extraArguments = arguments
        self.shared = shared
        self.launcher = launcher
        try #require(FileManager.default.isExecutableFile(atPath: Self.vmmd), "vmmd is not built: run `swift build` first")
        directory = FileManager.default.temporaryDirectory.appendingPathComponent(SpawnedProcesses.testRunMarker + String(UUID().uuidString.prefix(8)))
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // Other uids (setpriv tests) must reach the socket.
        chmod(directory.path, 0o755)
        socket = directory.appendingPathComponent("vmmd.sock").path
        self.stateDirectory = stateDirectory ?? directory.appendingPathComponent("state").path
        logPath = directory.appendingPathComponent("vmmd.log").path
        try start(config: config)
    }

    func start(config: String? = nil) throws {
        let p = Process()
        let arguments = ["--socket", socket, "--state-dir", stateDirectory] + (config.map { ["--config", $0] } ?? []) + extraArguments
        p.executableURL = URL(fileURLWithPath: launcher.first ?? Self.vmmd)
        p.arguments = launcher.isEmpty ? arguments : Array(launcher.dropFirst()) + [Self.vmmd] + arguments
        p.environment = testChildEnvironment
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        p.standardOutput = log
        p.standardError = log
        try p.run()
        process = p
        SpawnedProcesses.register(p.processIdentifier, "vmmd --socket \(socket)", shared: shared, directory: directory)
        // Ready when the API answers.
        for _ in 0 ..< 200 {
            if api("GET", "/v1/version").status == 200 {
                // The host probe runs once the sockets listen and holds a VM's descriptors
                // meanwhile: a descriptor baseline taken before it ends is three too high.
                for _ in 0 ..< 400 where !self.log.contains("host probe") { usleep(25_000) }
                return
            }
            usleep(25_000)
        }
        Issue.record("vmmd did not come up; log:\n\(self.log)")
    }

    var pid: Int32 { process?.processIdentifier ?? -1 }
    var handleSocket: String { directory.appendingPathComponent("vmmd-handle.sock").path }

    /// A config file in the fixture's directory.
    static func writeConfig(_ json: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("vmmd-config-\(getpid())-\(UUID().uuidString.prefix(8)).json")
        try Data(json.utf8).write(to: path)
        return path.path
    }

    /// The worker of VM `name`, and the inode of its low-RAM memfd (from /proc/PID/maps).
    func workerAndMemfd(_ name: String, query: String = "") -> (pid: Int, inode: String)? {
        guard let pid = vm(name, query: query)?["worker_pid"] as? Int,
              let maps = try? String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8) else { return nil }
        for line in maps.split(separator: "\n") where line.contains("/memfd:vmm:\(name):ram-low") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if fields.count >= 5 { return (pid, String(fields[4])) }
        }
        return nil
    }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// SIGTERM, then waits; returns the exit status.
    @discardableResult
    func stop() -> Int32 {
        guard let p = process, p.isRunning else { return process?.terminationStatus ?? -1 }
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        process = nil
        SpawnedProcesses.unregister(p.processIdentifier)
        return p.terminationStatus
    }

    deinit {
        if let p = process {
            if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
            SpawnedProcesses.unregister(p.processIdentifier)
        }
        try? FileManager.default.removeItem(at: directory)
    }

    /// One request with curl; `asUID` runs curl as another user (setpriv).
    @discardableResult
    func api(_ method: String, _ path: String, json: String? = nil, data: String? = nil, asUID: UInt32? = nil,
             record template: String? = nil) -> (status: Int, body: String) {
        var args = ["-s", "--max-time", "30", "--unix-socket", socket, "-X", method, "-w", "\n%{http_code}"]
        if let json { args += ["-H", "Content-Type: application/json", "--data-binary", json] }
        if let data { args += ["--data-binary", data] }
        args.append("http://vmm" + path)
        let r = asUID.map { runProcess("/usr/bin/setpriv", ["--reuid", "\($0)", "--regid", "\($0)", "--clear-groups", "/usr/bin/curl"] + args) }
            ?? runProcess("/usr/bin/curl", args)
        let out = r.stdout
        guard let cut = out.lastIndex(of: "\n") else { return (0, out) }
        let status = Int(out[out.index(after: cut)...]) ?? 0
        let body = String(out[..<cut])
        if let template { ContractRecorder.shared.record(method: method, path: template, status: status, body: body) }
        return (status, body)
    }

    /// `vmmctl ... --socket` as root (or another uid).
    func ctl(_ args: [String], asUID: UInt32? = nil) -> (status: Int32, stdout: String, all: String) {
        let full = args + ["--socket", socket]
        let r = asUID.map { runProcess("/usr/bin/setpriv", ["--reuid", "\($0)", "--regid", "\($0)", "--clear-groups", Self.vmmctl] + full) }
            ?? runProcess(Self.vmmctl, full)
        return (r.status, r.stdout, r.output)
    }

    /// The daemon's open descriptors.
    var descriptorCount: Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
    }

    /// The descriptor count once it has held still for 200 ms (at most 5 s): a baseline
    /// taken while a destroyed VM's worker link and pidfd are still being closed, or while
    /// the host probe holds its VM, is too high.
    var settledDescriptorCount: Int {
        var last = descriptorCount, still = 0
        for _ in 0 ..< 100 where still < 4 {
            usleep(50_000)
            let now = descriptorCount
            still = now == last ? still + 1 : 0
            last = now
        }
        return last
    }

    /// Polls `condition` for up to `seconds`.
    func eventually(_ seconds: Double = 5, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(20_000)
        }
        return condition()
    }

    func vmNames(asUID: UInt32? = nil) -> [String] {
        let r = api("GET", "/v1/vms", asUID: asUID)
        guard r.status == 200, let object = try? JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [String: Any],
              let vms = object["vms"] as? [[String: Any]] else { return [] }
        return vms.compactMap { $0["name"] as? String }
    }

    func vm(_ name: String, query: String = "") -> [String: Any]? {
        let r = api("GET", "/v1/vms/\(name)\(query)")
        guard r.status == 200 else { return nil }
        return try? JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [String: Any]
    }

    /// A create request body.
    static func createBody(_ name: String, guest: String, lifetime: String = "persistent", extra: String = "") throws -> String {
        #"{"name":"\#(name)","kernel":"\#(try TestGuests.path(guest))","memory_mib":16,"lifetime":"\#(lifetime)"\#(extra)}"#
    }
}

/// Responses seen by the contract test, checked against docs/api/openapi.yaml.
final class ContractRecorder: @unchecked Sendable {
    static let shared = ContractRecorder()
    private let lock = NSLock()
    private var lines: [String] = []

    func record(method: String, path: String, status: Int, body: String) {
        let parsed: Any = body.isEmpty ? NSNull() : ((try? JSONSerialization.jsonObject(with: Data(body.utf8))) ?? body)
        let entry: [String: Any] = ["method": method.lowercased(), "path": path, "status": status, "body": parsed]
        guard let data = try? JSONSerialization.data(withJSONObject: entry), let line = String(data: data, encoding: .utf8) else { return }
        lock.lock(); lines.append(line); lock.unlock()
    }

    func drain() -> String {
        lock.lock(); defer { lines = []; lock.unlock() }
        return lines.joined(separator: "\n") + "\n"
    }
}
