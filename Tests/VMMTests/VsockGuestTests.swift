import Devices
import Foundation
import Synchronization
import Testing
import VMM

/// The sockets guest (Guests/sockets) with a vsock device on a real machine, driven
/// from host "processes" (threads with Unix sockets) as Firecracker's tools drive it.
final class VsockGuest: @unchecked Sendable {
    let path: String
    let machine: Machine
    let output = BufferOutput()
    private let outcome = RunOutcome()

    init(cmdline: String = "", notification: VirtioNotification = .ioeventfd, limits: VsockLimits = VsockLimits(),
         path: String = testSocketPath("vsock")) throws {
        self.path = path
        var config = MachineConfig()
        config.memoryMiB = 32
        config.kernel = try TestGuests.image("sockets")
        config.debugExit = true
        config.commandLine = cmdline
        config.serialOutput = output
        config.virtioNotification = notification
        config.vsock = VsockConfig(guestCID: 42, backend: try VsockUnixBackend(path: path), limits: limits, path: path)
        machine = try Machine(config: config)
        let thread = Thread { [machine, outcome] in
            let result = Result { try machine.run() }
            outcome.result.withLock { $0 = result }
            outcome.done.signal()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Waits until the guest printed `text` (or stopped, or 60 s passed).
    func waitFor(_ text: String) -> Bool {
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if output.text.contains(text) { return true }
            if outcome.result.withLock({ $0 != nil }) { return output.text.contains(text) }
            usleep(10_000)
        }
        return false
    }

    /// A host connection to guest port `port` through the hybrid socket; the `OK` line read.
    func connect(port: UInt32 = 5252, command: String = "CONNECT") throws -> (TestSocket, String?) {
        let s = try TestSocket(connectingTo: path)
        try s.send("\(command) \(port)\n")
        return (s, s.readLine())
    }

    /// Asks the guest to end (a connection to its port 5253) and waits for its stop.
    func finish() throws -> StopReason {
        _ = try? connect(port: 5253, command: "connect")
        if outcome.done.wait(timeout: .now() + 60) == .timedOut { machine.kill(); _ = outcome.done.wait(timeout: .now() + 10) }
        unlink(path)   // the machine may outlive the test (the backend removes it when it goes)
        guard let result = outcome.result.withLock({ $0 }) else { return .vmmError("the guest did not stop") }
        return try result.get()
    }

    func counter(_ name: String) -> UInt64? {
        machine.statistics().devices.first { $0.name == "vsock0" }?.counters.first { $0.name == name }?.value
    }
}

/// How a machine run on another thread ended.
final class RunOutcome: Sendable {
    let result = Mutex<Result<StopReason, Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
}

@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct VsockGuestTests {
    static let success = StopReason.debugExit(value: 0x10)

    /// 50 host connections at once, each sending 1 MiB that the guest echoes back, the
    /// echo's checksum checked; meanwhile 5 more host peers vanish mid-transfer (they
    /// close without reading): the others go on, the VMM lives, memory stays bounded.
    @Test(arguments: VirtioNotification.allCases)
    func fiftyConnectionsEchoAMiBEachWhilePeersVanish(notification: VirtioNotification) throws {
        let guest = try VsockGuest(notification: notification)
        try #require(guest.waitFor("vsock: ready cid 42"), "\(guest.output.text)")
        let size = 1 << 20
        let good = Atomic<Int>(0), vanished = Atomic<Int>(0)
        let failures = Mutex<[String]>([])
        let maxBuffered = Atomic<UInt64>(0)
        onThreads(55) { i in
            do {
                let (s, ok) = try guest.connect()
                guard let ok, ok.hasPrefix("OK "), UInt32(ok.dropFirst(3)) != nil else {
                    throw TestSocketError("connection \(i): answer \(ok ?? "none")")
                }
                let data = testPattern(seed: UInt64(i + 1) * 0x9E37_79B9, count: size)
                if i >= 50 {
                    // Half a MiB, then gone: the guest's echo to it meets a closed socket.
                    try s.send(Array(data[0 ..< size / 2]))
                    s.close()
                    vanished.add(1, ordering: .relaxed)
                    return
                }
                let writer = Thread { try? s.send(data) }
                writer.start()
                let echo = s.receive(exactly: size)
                if let buffered = guest.counter("host_buffered_bytes") { maxBuffered.max(buffered, ordering: .relaxed) }
                guard echo.count == size, checksum(echo) == checksum(data) else {
                    throw TestSocketError("connection \(i): \(echo.count) bytes back, checksum \(echo.count == size ? "differs" : "not checked")")
                }
                good.add(1, ordering: .relaxed)
            } catch {
                failures.withLock { $0.append("\(error)") }
            }
        }
        #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 })")
        #expect(good.load(ordering: .relaxed) == 50 && vanished.load(ordering: .relaxed) == 5)
        // Each connection's held bytes are bounded by the credit the device advertised.
        #expect(maxBuffered.load(ordering: .relaxed) <= UInt64(55 * VsockLimits().bufferSize))
        let reason = try guest.finish()
        #expect(reason == Self.success, "\(guest.output.text)")
        #expect(guest.counter("host_connections") == 56)
        #expect(guest.counter("credit_violations") == 0)
        #expect((guest.counter("bytes_read") ?? 0) >= UInt64(50 * size) && (guest.counter("bytes_written") ?? 0) >= UInt64(50 * size))
        #expect(guest.counter("connections_active") == 0 || guest.counter("connections_active") == 1)
    }

    /// The guest connects to host port 7000 (a listener at PATH_7000 answers and closes)
    /// and to port 7001, where nobody listens (the guest sees a reset).
    @Test func guestConnectsToAListenerAndIsResetWhereNobodyListens() throws {
        let path = testSocketPath("vsock-client")
        let listener = try TestListener(path: path + "_7000")
        let heard = Mutex<String>("")
        let served = DispatchSemaphore(value: 0)
        let thread = Thread {
            if let c = listener.accept() {
                heard.withLock { $0 = String(decoding: c.receive(max: 64), as: UTF8.self) }
                try? c.send("welcome\n")
                c.close()
            }
            served.signal()
        }
        thread.start()
        let guest = try VsockGuest(cmdline: "connect=7000 refused=7001", path: path)
        #expect(guest.waitFor("vsock: ready"), "\(guest.output.text)")
        #expect(served.wait(timeout: .now() + 30) == .success)
        #expect(heard.withLock { $0 } == "hello from the guest\n")
        #expect(guest.output.text.contains("vsock: connect ok\n") && guest.output.text.contains("vsock: refused ok\n"),
                "\(guest.output.text)")
        #expect(try guest.finish() == Self.success)
        #expect(guest.counter("guest_connections") == 1 && guest.counter("connections_refused") == 1)
    }

    /// A host peer that stops reading stalls only its own connection: the device holds
    /// at most its credit for it, the others complete, and it completes once it reads.
    @Test func aSlowHostPeerStallsOnlyItself() throws {
        let guest = try VsockGuest()
        try #require(guest.waitFor("vsock: ready"))
        let (slow, ok) = try guest.connect()
        #expect(ok?.hasPrefix("OK ") == true)
        let size = 4 << 20
        let data = testPattern(seed: 77, count: size)
        let writer = Thread { try? slow.send(data) }
        writer.start()
        // Let it fill everything it can: the socket buffers and the device's credit.
        usleep(500_000)
        let fast = Atomic<Int>(0)
        onThreads(8) { i in
            guard let (s, ok) = try? guest.connect(), ok?.hasPrefix("OK ") == true else { return }
            let d = testPattern(seed: UInt64(1000 + i), count: 256 << 10)
            let w = Thread { try? s.send(d) }
            w.start()
            if s.receive(exactly: d.count) == d { fast.add(1, ordering: .relaxed) }
        }
        #expect(fast.load(ordering: .relaxed) == 8)
        let held = guest.counter("host_buffered_bytes") ?? .max
        #expect(held <= UInt64(VsockLimits().bufferSize), "the device holds \(held) bytes for the stalled peer")
        #expect(slow.receive(exactly: size) == data)
        #expect(try guest.finish() == Self.success)
    }

    /// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET: the machine drops every connection (the host
    /// peer sees end of stream), the guest hears the event, and new connections work.
    @Test func transportResetDropsConnectionsAndTellsTheGuest() throws {
        let guest = try VsockGuest()
        try #require(guest.waitFor("vsock: ready"))
        let (s, ok) = try guest.connect()
        #expect(ok?.hasPrefix("OK ") == true)
        try s.send("ping")
        #expect(s.receive(exactly: 4) == Array("ping".utf8))
        #expect(guest.machine.resetVsockTransport())
        #expect(s.isAtEnd())
        #expect(guest.waitFor("vsock: transport reset\n"))
        let (again, ok2) = try guest.connect()
        #expect(ok2?.hasPrefix("OK ") == true)
        try again.send("pong")
        #expect(again.receive(exactly: 4) == Array("pong".utf8))
        #expect(try guest.finish() == Self.success)
        #expect(guest.output.text.contains("transport resets 1"))
        #expect(guest.counter("transport_resets") == 1)
    }

    /// A driver that breaks the rules (a header-less rx buffer, a spoofed source CID, a
    /// header outside RAM, data for no connection, a packet past the credit) gets resets
    /// and errors counted, and the device and the VMM carry on serving it.
    @Test(arguments: VirtioNotification.allCases)
    func aHostileDriverIsAnsweredAndTheDeviceCarriesOn(notification: VirtioNotification) throws {
        let path = testSocketPath("vsock-hostile")
        let listener = try TestListener(path: path + "_7002")
        let held = Mutex<TestSocket?>(nil)
        let acceptor = Thread { held.withLock { $0 = listener.accept() } }   // accepted, never read
        acceptor.start()
        let guest = try VsockGuest(cmdline: "hostile=7002", notification: notification, path: path)
        #expect(guest.waitFor("vsock: ready"), "\(guest.output.text)")
        #expect(guest.output.text.contains("vsock: hostile ok\n"), "\(guest.output.text)")
        let (s, ok) = try guest.connect()
        #expect(ok?.hasPrefix("OK ") == true)
        try s.send("still here")
        #expect(s.receive(exactly: 10) == Array("still here".utf8))
        #expect(try guest.finish() == Self.success)
        #expect(guest.counter("credit_violations") == 1)
        #expect((guest.counter("errors") ?? 0) >= 3)   // the small rx buffer, the spoofed CID, the header outside RAM
        #expect(guest.counter("queue_errors") == 0)
        // The connection the guest broke was closed on the host side too.
        #expect(held.withLock { $0 }?.isAtEnd() == true)
    }

    /// What a host process may send first: a bad command, an over-long line or a port
    /// nobody serves in the guest all end with the socket closed and no OK; the command
    /// word is accepted in any case.
    @Test func handshakesThatAreNotConnectAreClosed() throws {
        let guest = try VsockGuest()
        try #require(guest.waitFor("vsock: ready"))
        let bad = try TestSocket(connectingTo: guest.path)
        try bad.send("HELLO 5252\n")
        #expect(bad.isAtEnd())
        let long = try TestSocket(connectingTo: guest.path)
        try long.send("CONNECT " + String(repeating: "1", count: 64) + "\n")
        #expect(long.isAtEnd())
        let (nobody, answer) = try guest.connect(port: 9)
        #expect(answer == nil)   // the guest reset the REQUEST
        nobody.close()
        let (mixed, ok) = try guest.connect(command: "Connect")
        #expect(ok?.hasPrefix("OK ") == true)
        mixed.close()
        #expect(try guest.finish() == Self.success)
        #expect(guest.counter("handshakes_refused") == 2)
    }
}

@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct SocketVMMCtlTests {
    /// `vmmctl run --vsock`: the guest's echo answers through the socket vmmctl bound,
    /// and `--verbose` lists the device with its CID and socket.
    @Test func runWithVsockServesTheHybridSocket() throws {
        try #require(VMMCtl.exists, "vmmctl is not built")
        let path = testSocketPath("ctl-vsock")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: VMMCtl.path)
        process.arguments = ["run", "--kernel", try TestGuests.path("sockets"), "--memory", "32", "--debug-exit",
                             "--vsock", "cid=5,socket=\(path)", "--verbose", "--serial", "none"]
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        var s: TestSocket?
        for _ in 0 ..< 500 where s == nil {
            s = try? TestSocket(connectingTo: path)
            if s == nil { usleep(20_000) }
        }
        let socket = try #require(s)
        try socket.send("CONNECT 5252\n")
        #expect(socket.readLine()?.hasPrefix("OK ") == true)
        try socket.send("over the hybrid socket")
        #expect(socket.receive(exactly: 22) == Array("over the hybrid socket".utf8))
        let quit = try TestSocket(connectingTo: path)
        try quit.send("CONNECT 5253\n")
        process.waitUntilExit()
        let log = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 33, "\(log)")
        #expect(log.contains("vsock0      mmio 0xd0000000-0xd0000fff  irq 5  virtio-vsock  cid 5 socket \(path)"), "\(log)")
        #expect(access(path, F_OK) != 0, "the socket file outlived vmmctl")
    }

    @Test func badSocketOptionsAreRefused() throws {
        for bad in [["--vsock", "cid=2,socket=/tmp/x"], ["--vsock", "socket=/tmp/x"], ["--vsock", "cid=3,socket=/tmp/x,port=1"],
                    ["--net", "mac=52:54:00:00:00:01"], ["--net", "tap=t0,mac=01:00:5e:00:00:01"],
                    ["--net", "tap=a-name-far-too-long"]] {
            let r = try VMMCtl.run(["run", "--kernel", TestGuests.path("exit")] + bad)
            #expect(r.status != 0 && r.status != 67, "\(bad): \(r.all)")
        }
        let taken = try TestListener(path: testSocketPath("ctl-taken"))
        let r = try VMMCtl.run(["run", "--kernel", TestGuests.path("exit"), "--vsock", "cid=3,socket=\(taken.path)"])
        #expect(r.status == 10 && r.all.contains("not a stale socket"), "\(r.all)")
    }
}
