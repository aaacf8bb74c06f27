import CSys
import Foundation
import KVM
#if canImport(Glibc)
import Glibc
#endif

/// A blocking HTTP/1.1 client on vmmd's Unix socket, for the throughput figures: the
/// request written whole, the answer read to its Content-Length (every API answer has
/// one), nothing decoded that the figure does not look at.
///
/// Why not VMMClient's `APIConnection`: the clients share the daemon's two cores, and an
/// event loop, tasks and a JSONDecoder per request took 9% of them in the lifecycle run
/// (0.5 ms per VM), CPU the figure then charged to vmmd. This costs what curl would.
final class PlainClient {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    private var fd: Int32
    /// Bytes read past the last answer (none, unless the server misbehaves).
    private var buffered: [UInt8] = []

    init(socket: String) throws {
        fd = csys_connect_unix(socket)
        guard fd >= 0 else { throw Failure(description: "cannot connect to \(socket): \(String(cString: strerror(-fd)))") }
    }

    deinit { close() }

    /// Closes the connection (a `connection`-lifetime VM ends with it).
    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    /// Sends one request and returns the status and body of its answer.
    func request(_ method: String, _ path: String, body: [UInt8] = []) throws -> (status: Int, body: [UInt8]) {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: vmmd\r\n"
        if !body.isEmpty || method == "POST" || method == "PUT" {
            head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n"
        }
        try send(Array((head + "\r\n").utf8) + body)
        let headEnd = try readUntilBlankLine()
        let headText = String(decoding: buffered[..<headEnd], as: UTF8.self)
        buffered.removeFirst(headEnd + 4)
        let lines = headText.split(separator: "\r\n")
        guard let statusLine = lines.first, let status = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else {
            throw Failure(description: "not an HTTP answer: \(headText.prefix(80))")
        }
        var length = 0
        for line in lines.dropFirst() {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "content-length" {
                length = Int(parts[1].trimmingCharacters(in: .whitespaces)) ?? -1
            }
        }
        guard (0 ... 64 << 20).contains(length) else { throw Failure(description: "an answer of Content-Length \(length)") }
        while buffered.count < length { try receive() }
        let answer = Array(buffered[..<length])
        buffered.removeFirst(length)
        return (status, answer)
    }

    private func send(_ bytes: [UInt8]) throws {
        var rest = bytes[...]
        while !rest.isEmpty {
            let chunk = Array(rest)
            let n = Glibc.send(fd, chunk, chunk.count, Int32(MSG_NOSIGNAL))
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { throw Failure(description: "sending a request: \(String(cString: strerror(errno)))") }
            rest = rest.dropFirst(n)
        }
    }

    /// The offset of the "\r\n\r\n" that ends the answer's head.
    private func readUntilBlankLine() throws -> Int {
        var from = 0
        while true {
            if buffered.count >= 4 {
                for i in from ... buffered.count - 4
                where buffered[i] == 0x0D && buffered[i + 1] == 0x0A && buffered[i + 2] == 0x0D && buffered[i + 3] == 0x0A {
                    return i
                }
                from = buffered.count - 3
            }
            guard buffered.count < 65536 else { throw Failure(description: "an answer head over 64 KiB") }
            try receive()
        }
    }

    /// Reads at least one byte more into `buffered`.
    private func receive() throws {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { throw Failure(description: "vmmd closed the connection before answering") }
            buffered += chunk[..<n]
            return
        }
    }
}

/// `body(i)` for every i below `count`, on `threads` threads; returns what each call gave.
/// It blocks its caller until all are done (the benchmark's async code calls it and
/// waits, as it would for a child process).
func onThreads<T: Sendable>(_ threads: Int, count: Int, _ body: @escaping @Sendable (Int) throws -> T) throws -> [T] {
    let next = Counter()
    let results = ThreadResults<T>()
    var workers: [HostThread] = []
    defer { for w in workers { w.join() } }
    for n in 0 ..< threads {
        do {
            workers.append(try HostThread(name: "client-\(n)") {
                while !results.failed, let i = next.take(below: count) {
                    do { results.append(try body(i)) } catch { results.fail(error) }
                }
            })
        } catch {
            results.fail(error)   // the threads already running stop after their current call
            break
        }
    }
    for w in workers { w.join() }
    return try results.values()
}

/// What `onThreads`' threads produced, or the first error.
final class ThreadResults<T: Sendable>: @unchecked Sendable {
    // @unchecked: every access is under `lock`.
    private let lock = NSLock()
    private var items: [T] = []
    private var error: (any Error)?

    var failed: Bool { lock.lock(); defer { lock.unlock() }; return error != nil }
    func append(_ item: T) { lock.lock(); items.append(item); lock.unlock() }
    func fail(_ e: any Error) { lock.lock(); if error == nil { error = e }; lock.unlock() }
    func values() throws -> [T] {
        lock.lock(); defer { lock.unlock() }
        if let error { throw error }
        return items
    }
}

extension DaemonBenchmark {
    /// One managed VM's life on a `PlainClient` from the create request `body`: created
    /// (and started), followed until its guest stopped, destroyed. Returns (ms create →
    /// destroyed, ms for the create call).
    static func plainLifecycle(socket: String, name: String, body: String) throws -> (Double, Double) {
        let c = try PlainClient(socket: socket)
        defer { c.close() }
        let t0 = Date()
        let created = try c.request("POST", "/v1/vms", body: Array(body.utf8))
        guard created.status == 201 else { die("create \(name): \(created.status) \(String(decoding: created.body, as: UTF8.self))") }
        let t1 = Date()
        // One request that answers when the guest has ended either way (no polling).
        while true {
            let info = try c.request("GET", "/v1/vms/\(name)?wait_for=stopped,crashed")
            let state = info.status == 200 ? Self.state(in: info.body) : nil
            if state == "stopped" { break }
            guard state == "running" else { die("\(name): \(info.status) \(String(decoding: info.body, as: UTF8.self).prefix(300))") }
        }
        let destroyed = try c.request("DELETE", "/v1/vms/\(name)")
        guard destroyed.status == 204 else { die("destroy \(name): \(destroyed.status)") }
        let t2 = Date()
        return (t2.timeIntervalSince(t0) * 1000, t1.timeIntervalSince(t0) * 1000)
    }

    /// The `state` of a VMInfo answer, read where vmmd puts it (its JSON has no
    /// whitespace, see APIResponse.jsonEncoder) rather than decoded.
    static func state(in body: [UInt8]) -> String? {
        let text = String(decoding: body, as: UTF8.self)
        guard let key = text.range(of: #""state":""#) else { return nil }
        return text[key.upperBound...].split(separator: "\"", maxSplits: 1).first.map(String.init)
    }
}
