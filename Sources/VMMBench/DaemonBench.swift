import Foundation
import NIOHTTP1
import VMMAPI
import VMMClient

/// vmmd under load: `vms` managed VMs, `concurrency` at a time, each created through
/// the API (hello guest, started), followed until the guest has powered off, then
/// destroyed; and the resident size of one worker beyond its guest memory.
struct DaemonBenchmark {
    let work: String
    let vms: Int
    let concurrency: Int
    /// Idle workers running at once while one's memory is read (their PSS shares).
    let idleWorkers: Int
    /// Idle VMs under the daemon while `GET /v1/vms` is timed (0: not measured).
    let idleVMs: Int

    struct Figures {
        var vmsPerSecond: Double
        var p50: Double, p99: Double          // ms, create → destroyed
        var createP50: Double, createP99: Double
        /// The create call with one client at a time (no queueing behind other VMs).
        var soloCreateP50: Double = 0
        var rssOverheadKiB: Int, privateKiB: Int, pssKiB: Int
        /// ms: `GET /v1/vms` with `idleVMs` VMs (median of 5), creating them all, destroying
        /// them all; and the daemon's worker processes left afterwards.
        var listMs: Double = 0, createAllMs: Double = 0, destroyAllMs: Double = 0, workersLeft = 0
        /// ms: the first of those GETs, which encodes every VM (the daemon keeps each VM's
        /// JSON until its VMInfo changes).
        var firstListMs: Double = 0
    }

    func run() async throws -> Figures {
        let bin = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
        for tool in ["vmmd", "vmm-worker"] where !FileManager.default.isExecutableFile(atPath: bin + "/" + tool) {
            die("\(bin)/\(tool) is missing: build everything first (swift build -c release)")
        }
        let socket = work + "/vmmd.sock"
        let daemon = Process()
        daemon.executableURL = URL(fileURLWithPath: bin + "/vmmd")
        daemon.arguments = ["--socket", socket, "--state-dir", work + "/state", "--log-level", "warning"]
        try daemon.run()
        defer { daemon.terminate(); daemon.waitUntilExit() }
        var up = false
        for _ in 0 ..< 200 where !up {
            if let c = try? await APIConnection.connect(socketPath: socket) { await c.close(); up = true } else { usleep(20_000) }
        }
        guard up else { die("vmmd did not start") }

        let hello = work + "/hello.elf"
        // One client at a time first: the create call's own latency.
        // The clients are PlainClients on threads: they share the two cores with vmmd.
        @Sendable func body(_ name: String) -> String {
            #"{"name":"\#(name)","kernel":"\#(hello)","memory_mib":32,"lifetime":"connection"}"#
        }
        // Warm-up: page cache for the worker binary and the guest.
        _ = try Self.plainLifecycle(socket: socket, name: "warm", body: body("warm"))
        var solo: [Double] = []
        for i in 0 ..< 30 { solo.append(try Self.plainLifecycle(socket: socket, name: "solo-\(i)", body: body("solo-\(i)")).1) }
        solo.sort()

        let t0 = Date()
        let results = try onThreads(concurrency, count: vms) { i in
            try Self.plainLifecycle(socket: socket, name: "bench-\(i)", body: body("bench-\(i)"))
        }
        let wall = Date().timeIntervalSince(t0)
        let totals = results.map(\.0).sorted(), creates = results.map(\.1).sorted()
        func pct(_ v: [Double], _ p: Double) -> Double { v[min(v.count - 1, Int(Double(v.count) * p))] }

        let (rss, priv, pss) = try await workerMemory(socket: socket, kernel: work + "/idle.elf")
        var figures = Figures(vmsPerSecond: Double(results.count) / wall, p50: pct(totals, 0.5), p99: pct(totals, 0.99),
                              createP50: pct(creates, 0.5), createP99: pct(creates, 0.99),
                              rssOverheadKiB: rss, privateKiB: priv, pssKiB: pss)
        figures.soloCreateP50 = pct(solo, 0.5)
        if idleVMs > 0 {
            try await manyIdleVMs(socket: socket, kernel: work + "/idle.elf", daemon: daemon.processIdentifier, into: &figures)
        }
        return figures
    }

    /// `idleVMs` idle VMs (16 MiB each, tied to this process, `concurrency` clients creating
    /// them), `GET /v1/vms` timed over them, then every one destroyed and the daemon's
    /// children counted.
    func manyIdleVMs(socket: String, kernel: String, daemon: Int32, into figures: inout Figures) async throws {
        figures.createAllMs = try await onClients(socket: socket) { c, i in
            let body = Array(#"{"name":"many-\#(i)","kernel":"\#(kernel)","memory_mib":16,"lifetime":"process"}"#.utf8)
            let created = try await c.request(.POST, "/v1/vms", body: body)
            guard created.status == 201 else { die("create many-\(i): \(created.status) \(created.text)") }
        }
        let c = try await APIConnection.connect(socketPath: socket)
        var times: [Double] = []
        // Timed to the last byte of the answer; the client's own JSON decoding (JSONDecoder
        // spends ~25 ms on 1,000 VMs) is outside, as with curl.
        for _ in 0 ..< 5 {
            let t = Date()
            let answer = try await c.request(.GET, "/v1/vms")
            times.append(Date().timeIntervalSince(t) * 1000)
            let list = try JSONDecoder().decode(VMList.self, from: Data(answer.body))
            guard answer.status == 200, list.vms.count >= idleVMs else {
                die("GET /v1/vms: \(answer.status), listed \(list.vms.count) VMs, expected \(idleVMs)")
            }
        }
        figures.listMs = median(times)
        figures.firstListMs = times[0]
        await c.close()
        figures.destroyAllMs = try await onClients(socket: socket) { c, i in
            let destroyed = try await c.request(.DELETE, "/v1/vms/many-\(i)")
            guard destroyed.status == 204 else { die("destroy many-\(i): \(destroyed.status)") }
        }
        try await Task.sleep(nanoseconds: 200_000_000)
        // Workers are children of whichever daemon thread spawned them.
        let threads = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(daemon)/task")) ?? []
        figures.workersLeft = threads.reduce(0) { count, tid in
            count + ((try? String(contentsOfFile: "/proc/\(daemon)/task/\(tid)/children", encoding: .utf8)) ?? "")
                .split(separator: " ").count
        }
    }

    /// `body(connection, i)` for every i below `idleVMs`, spread over `concurrency`
    /// clients with a connection each; returns the milliseconds it all took.
    func onClients(socket: String, _ body: @escaping @Sendable (APIConnection, Int) async throws -> Void) async throws -> Double {
        let next = Counter()
        let t0 = Date()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0 ..< concurrency {
                group.addTask {
                    let c = try await APIConnection.connect(socketPath: socket)
                    while let i = next.take(below: idleVMs) { try await body(c, i) }
                    await c.close()
                }
            }
            try await group.waitForAll()
        }
        return Date().timeIntervalSince(t0) * 1000
    }

    /// RSS beyond guest memory (memfd pages) of an idle VM's worker, from smaps, with
    /// its dirty private part (what no other worker can share: heap, stacks, written
    /// data) and PSS (its share of pages it maps together with `idleWorkers` - 1 other
    /// idle workers).
    func workerMemory(socket: String, kernel: String) async throws -> (Int, Int, Int) {
        let c = try await APIConnection.connect(socketPath: socket)
        var pid: Int32 = 0
        for name in (1 ... idleWorkers).map({ "idle-\($0)" }) {
            let body = Array(#"{"name":"\#(name)","kernel":"\#(kernel)","memory_mib":64,"lifetime":"connection"}"#.utf8)
            let info = try await c.call(.POST, "/v1/vms", json: body, as: VMInfo.self)
            guard let p = info.workerPID else { die("no worker pid") }
            pid = p
        }
        try await Task.sleep(nanoseconds: 500_000_000)
        sh(["sync"])   // freshly built binaries have dirty page-cache pages that smaps shows as private
        let smaps = (try? String(contentsOfFile: "/proc/\(pid)/smaps", encoding: .utf8)) ?? ""
        var rss = 0, guest = 0, priv = 0, pss = 0, inGuest = false
        for line in smaps.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            if let first = f.first, first.contains("-"), !first.hasSuffix(":") {
                inGuest = line.contains("/memfd:vmm:")
                continue
            }
            guard f.count >= 2, let kib = Int(f[1]) else { continue }
            switch f[0] {
            case "Rss:": rss += kib; if inGuest { guest += kib }
            case "Private_Dirty:": if !inGuest { priv += kib }
            case "Pss:": if !inGuest { pss += kib }
            default: break
            }
        }
        await c.close()
        return (rss - guest, priv, pss)
    }
}

/// Hands out VM numbers to the concurrent clients.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func take(below limit: Int) -> Int? {
        lock.lock(); defer { lock.unlock() }
        guard value < limit else { return nil }
        value += 1
        return value - 1
    }
}
