import CSys
import Foundation
import Synchronization

/// One end of a Unix stream socket in a test: blocking I/O with a receive timeout, so a
/// test that goes wrong fails instead of hanging.
final class TestSocket: @unchecked Sendable {
    let fd: Int32

    init(fd: Int32, timeoutSeconds: Int32 = 30) {
        self.fd = fd
        _ = csys_set_receive_timeout(fd, timeoutSeconds)
    }

    /// Connects to the Unix socket at `path`.
    convenience init(connectingTo path: String) throws {
        let fd = csys_connect_unix(path)
        guard fd >= 0 else { throw TestSocketError("connect \(path): \(String(cString: strerror(-fd)))") }
        self.init(fd: fd)
    }

    deinit { close() }

    private let closed = Atomic<Bool>(false)
    func close() {
        if !closed.exchange(true, ordering: .acquiringAndReleasing) { _ = Glibc.close(fd) }
    }

    func send(_ bytes: [UInt8]) throws {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw TestSocketError("send: \(String(cString: strerror(errno)))") }
            done += n
        }
    }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// shutdown(SHUT_WR): the peer reads end of stream, this end can still read.
    func shutdownWrite() { _ = shutdown(fd, Int32(SHUT_WR)) }

    /// Up to `max` bytes; empty at end of stream (or after the timeout). A signal is not
    /// the end: the test process gets SIGCHLD from the processes other tests start, and a
    /// recv it interrupts (EINTR) had read as an empty answer, failing a test at random.
    func receive(max: Int = 65536) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: max)
        var n = recv(fd, &buffer, max, 0)
        while n < 0 && errno == EINTR { n = recv(fd, &buffer, max, 0) }
        return n > 0 ? Array(buffer[0 ..< n]) : []
    }

    /// Exactly `count` bytes, or fewer at end of stream.
    func receive(exactly count: Int) -> [UInt8] {
        var result: [UInt8] = []
        result.reserveCapacity(count)
        while result.count < count {
            let chunk = receive(max: min(65536, count - result.count))
            if chunk.isEmpty { break }
            result += chunk
        }
        return result
    }

    /// One line (without the newline), read a byte at a time so nothing after it is taken.
    func readLine() -> String? {
        var line: [UInt8] = []
        while line.count < 256 {
            let b = receive(max: 1)
            guard let c = b.first else { return nil }
            if c == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
            line.append(c)
        }
        return nil
    }

    /// Whether the peer closed: the next read returns end of stream (or a reset).
    func isAtEnd() -> Bool { receive(max: 1).isEmpty }
}

struct TestSocketError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A Unix socket listener in a test (a host service at `PATH_P` for the guest).
final class TestListener: @unchecked Sendable {
    let path: String
    let fd: Int32

    init(path: String) throws {
        unlink(path)
        self.path = path
        fd = csys_listen_unix(path, 16)
        guard fd >= 0 else { throw TestSocketError("listen \(path): \(String(cString: strerror(-fd)))") }
    }

    deinit {
        Glibc.close(fd)
        unlink(path)
    }

    func accept() -> TestSocket? {
        let c = csys_accept(fd)
        return c >= 0 ? TestSocket(fd: c) : nil
    }
}

/// Bytes that differ per connection, quickly (xorshift64).
func testPattern(seed: UInt64, count: Int) -> [UInt8] {
    var x = seed | 1
    var bytes = [UInt8](repeating: 0, count: count)
    var i = 0
    while i < count {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17
        var v = x
        for _ in 0 ..< 8 where i < count {
            bytes[i] = UInt8(truncatingIfNeeded: v)
            v >>= 8
            i += 1
        }
    }
    return bytes
}

/// FNV-1a over the bytes.
func checksum(_ bytes: [UInt8]) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return h
}

/// Runs `body` on `count` threads at once and waits for all of them.
func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let group = DispatchGroup()
    for i in 0 ..< count {
        group.enter()
        let thread = Thread {
            body(i)
            group.leave()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }
    group.wait()
}

/// A unique path for a test socket.
func testSocketPath(_ name: String) -> String {
    "/tmp/svmm-\(name)-\(getpid())-\(UInt32.random(in: 0 ... 0xFFFF))"
}
