import CSys
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// vmmd's start: from its exec to the API socket accepting a connection, whole process,
/// as wall time and as the CPU time its threads used by then (the sum of
/// /proc/PID/task/*/schedstat, in ns: rusage is not available for a process still running,
/// and /proc's tick counts are 10 ms coarse). Each run gets a fresh state directory.
struct DaemonStartBenchmark {
    let vmmd: String
    let work: String
    let runs: Int

    struct Figures { var wallMs: [Double] = [], cpuMs: [Double] = [] }

    func run() throws -> Figures {
        var figures = Figures()
        for i in 0 ..< runs {
            let dir = work + "/start-\(i)"
            try? FileManager.default.removeItem(atPath: dir)
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let socket = dir + "/vmmd.sock"
            let daemon = Process()
            daemon.executableURL = URL(fileURLWithPath: vmmd)
            daemon.arguments = ["--socket", socket, "--state-dir", dir + "/state", "--log-level", "warning"]
            let started = DispatchTime.now().uptimeNanoseconds
            try daemon.run()
            defer { daemon.terminate(); daemon.waitUntilExit() }
            var ready = false
            while !ready, DispatchTime.now().uptimeNanoseconds - started < 5_000_000_000 {
                ready = Self.accepts(socket)
                if !ready { usleep(100) }
            }
            guard ready else { throw BenchError("vmmd did not listen on \(socket) within 5 s") }
            let wall = DispatchTime.now().uptimeNanoseconds - started
            figures.wallMs.append(Double(wall) / 1e6)
            figures.cpuMs.append(Double(Self.cpuNanoseconds(pid: daemon.processIdentifier)) / 1e6)
        }
        return figures
    }

    /// Whether a Unix socket at `path` accepts a connection now.
    static func accepts(_ path: String) -> Bool {
        let fd = csys_connect_unix(path)
        if fd >= 0 { close(fd) }
        return fd >= 0
    }

    /// CPU time every thread of `pid` has had so far (schedstat's first field, ns).
    static func cpuNanoseconds(pid: Int32) -> UInt64 {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.reduce(0) { sum, tid in
            let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/schedstat", encoding: .utf8)) ?? ""
            return sum + (UInt64(text.split(separator: " ").first ?? "") ?? 0)
        }
    }
}
