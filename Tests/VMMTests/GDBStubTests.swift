import CSys
import Debug
import Devices
import Foundation
import Testing
@testable import VMM
import KVM

/// A raw GDB-protocol client on the stub's Unix socket: what gdb does, packet by packet,
/// and what a hostile client does.
final class StubClient {
    private(set) var fd: Int32
    private var pending: [UInt8] = []

    init(path: String) throws {
        fd = csys_connect_unix(path)
        try #require(fd >= 0, "connect \(path): \(fd)")
        _ = csys_set_receive_timeout(fd, 10)
    }

    /// Hangs up, once: the descriptor number is free for reuse afterwards, so closing it
    /// again (in deinit) would close another test's file (a memory.bin, once).
    func disconnect() {
        if fd >= 0 { close(fd) }
        fd = -1
    }

    deinit { disconnect() }

    func sendRaw(_ bytes: [UInt8]) { _ = bytes.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count) } }
    func sendRaw(_ text: String) { sendRaw(Array(text.utf8)) }
    func send(_ packet: String) { sendRaw(PacketCodec.frame(Array(packet.utf8))) }

    /// The next acknowledgement byte ('+' or '-'), skipping nothing else.
    func ack() -> UInt8? {
        fill { !$0.isEmpty }
        guard !pending.isEmpty else { return nil }
        return pending.removeFirst()
    }

    /// The next packet's payload, run-length expanded; acks before it are dropped.
    func packet() -> String? {
        fill { buffer in
            guard let start = buffer.firstIndex(of: UInt8(ascii: "$")), let end = buffer[start...].firstIndex(of: UInt8(ascii: "#")) else { return false }
            return buffer.count >= end + 3
        }
        guard let start = pending.firstIndex(of: UInt8(ascii: "$")), let end = pending[start...].firstIndex(of: UInt8(ascii: "#")),
              pending.count >= end + 3 else { return nil }
        let payload = Array(pending[(start + 1) ..< end])
        let checksum = PacketCodec.number(pending[(end + 1) ... (end + 2)])
        pending.removeFirst(end + 3)
        #expect(checksum == UInt64(PacketCodec.checksum(payload)), "reply checksum")
        return PacketCodec.runLengthDecode(payload).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Sends a packet and returns the reply (after its '+').
    func ask(_ packet: String) -> String? {
        send(packet)
        return self.packet()
    }

    /// Whether the stub closed the connection (read returns 0) within the timeout.
    func closedByPeer() -> Bool {
        var buffer = [UInt8](repeating: 0, count: 256)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n > 0 { continue }
            return n == 0
        }
    }

    private func fill(until done: ([UInt8]) -> Bool) {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !done(pending) {
            let n = read(fd, &buffer, buffer.count)
            guard n > 0 else { return }
            pending += buffer[0 ..< n]
        }
    }
}

extension PacketCodec {
    /// A little-endian integer of `size` bytes as hex, as `p` and stop replies carry registers.
    static func hexLittleEndian(_ value: UInt64, size: Int) -> [UInt8] {
        hex((0 ..< size).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) })
    }
}

extension Array where Element == UInt8 {
    /// Little-endian hex (a register as `p` answers it) reordered as a big-endian number.
    var reversedHexBytes: [UInt8] {
        stride(from: count - 2, through: 0, by: -2).flatMap { [self[$0], self[$0 + 1]] }
    }
}

/// A symbol's address in a built test guest (nm).
func guestSymbol(_ guest: String, _ name: String) throws -> UInt64 {
    let out = runProcess("/usr/bin/nm", [try TestGuests.path(guest)]).stdout
    let line = try #require(out.split(separator: "\n").first { $0.hasSuffix(" \(name)") }, "no symbol \(name)")
    return try #require(UInt64(line.split(separator: " ")[0], radix: 16))
}

/// The stub against a real machine: protocol details gdb does not show, and bad input.
@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct GDBStubTests {
    /// gdb-target spinning on 2 vCPUs, served on a fresh Unix socket.
    private func spinningMachine() throws -> (Machine, GDBServer, BufferOutput, String) {
        var config = MachineConfig()
        config.memoryMiB = 32
        config.cpus = 2
        config.kernel = try TestGuests.image("gdb-target")
        config.commandLine = "smp spin"
        config.debugExit = true
        let output = BufferOutput()
        config.serialOutput = output
        let machine = try Machine(config: config)
        try machine.start()
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("gdb-\(getpid())-\(UUID().uuidString.prefix(6)).sock").path
        let server = try GDBServer(endpoint: .unix(path: path), target: MachineTarget(machine: machine)) { _ in }
        try server.start()
        // Spinning: it printed its line, so paging is on and the loop is running.
        for _ in 0 ..< 500 where !output.text.contains("spinning") { usleep(10_000) }
        #expect(output.text.contains("spinning"))
        return (machine, server, output, path)
    }

    private func waitForExit(_ machine: Machine) throws -> StopReason {
        let done = DispatchSemaphore(value: 0)
        let reason = NSLock()
        nonisolated(unsafe) var result: StopReason?
        _ = Thread { let r = try? machine.waitForStop(); reason.lock(); result = r; reason.unlock(); done.signal() }.start()
        try #require(done.wait(timeout: .now() + 30) == .success, "the guest did not finish")
        reason.lock(); defer { reason.unlock() }
        return try #require(result)
    }

    @Test func protocolAndHostileInput() throws {
        let (machine, server, output, path) = try spinningMachine()
        defer { server.stop() }
        let client = try StubClient(path: path)
        #expect(client.ask("qSupported:swbreak+;hwbreak+")?.contains("qXfer:features:read+") == true)
        let stop = try #require(client.ask("?"))
        #expect(stop.hasPrefix("T05thread:1;"), "\(stop)")
        #expect(stop.contains("10:"), "the stop reply expedites rip")
        // The target description, in pieces as gdb reads it.
        let first = try #require(client.ask("qXfer:features:read:target.xml:0,40"))
        #expect(first.hasPrefix("m<?xml") && first.count == 0x41)
        #expect(client.ask("qXfer:features:read:other.xml:0,40") == "E00")
        #expect(client.ask("qfThreadInfo") == "m1,2" && client.ask("qsThreadInfo") == "l")
        #expect(client.ask("qAttached") == "1")
        #expect(client.ask("T2") == "OK" && client.ask("T3") == "E02" && client.ask("Hg3") == "E02")
        let g = try #require(client.ask("g"))
        #expect(g.count == RegisterFile.totalBytes * 2)
        // Memory: a string by virtual address, an unmapped page, a read that stops at it.
        let greeting = try guestSymbol("gdb-target", "greeting")
        #expect(client.ask("m\(String(greeting, radix: 16)),5") == PacketCodec.hex("hello").map { String(UnicodeScalar($0)) }.joined())
        #expect(client.ask("m\(String(UInt64(0xFFFF_FFFF_9000_0000), radix: 16)),4") == "E0e", "unmapped")
        #expect(client.ask("m8000000000000000,4") == "E0e", "non-canonical")
        let edge: UInt64 = 0xFFFF_FFFF_8100_0000 - 2  // the kernel map ends at 16 MiB
        #expect(client.ask("m\(String(edge, radix: 16)),8")?.count == 4, "two bytes, then the unmapped page")
        #expect(client.ask("M\(String(UInt64(0xFFFF_FFFF_9000_0000), radix: 16)),1:00") == "E0e")
        // Bad input: error replies, a '-' for a bad checksum, and the stub still answers.
        #expect(client.ask("m0,ffffffff") == "E01", "a huge length")
        #expect(client.ask("Gzz") == "E01" && client.ask("P999=00") == "E01" && client.ask("Z0,1000") == "E01")
        #expect(client.ask("vMustReplyEmpty") == "" && client.ask("qTStatus") == "")
        client.sendRaw("$g#00")
        #expect(client.ack() == UInt8(ascii: "-"))
        client.sendRaw("$" + String(repeating: "A", count: 100_000) + "#00")
        #expect(client.packet() == "E01", "a packet past PacketSize")
        client.sendRaw(String(repeating: "garbage \u{7f}\u{01}", count: 100))
        #expect(client.ask("Z0,\(String(UInt64(0xFFFF_FFFF_9000_0000), radix: 16)),1") == "E0e", "a breakpoint that does not map")
        // This host delivers no data breakpoints: read watchpoints are not offered, writes are emulated.
        if !GuestDebugSupport.probe(machine.kvm).dataBreakpoints {
            #expect(client.ask("Z3,\(String(greeting, radix: 16)),4") == "")
        }
        // No-ack mode: no '+' any more.
        #expect(client.ask("QStartNoAckMode") == "OK")
        client.send("qC")
        #expect(client.packet() == "QC1")
        // Run, then Ctrl-C: every vCPU stops, thread 1 reported with SIGINT.
        client.send("vCont;c")
        usleep(300_000)
        client.sendRaw([0x03])
        let interrupted = try #require(client.packet())
        #expect(interrupted.hasPrefix("T02thread:1;"), "\(interrupted)")
        #expect(machine.vcpus.allSatisfy { $0.state == .paused })
        // Clear keep_spinning and leave without detaching: the guest must run to its end.
        let flag = try guestSymbol("gdb-target", "keep_spinning")
        #expect(client.ask("M\(String(flag, radix: 16)),4:00000000") == "OK")
        client.disconnect()
        let reason = try waitForExit(machine)
        #expect(reason == .debugExit(value: 7))
        #expect(output.text.hasSuffix("spun\nbye\n"))
    }

    @Test func breakpointsAreHiddenFromReadsAndRemovedOnDisconnect() throws {
        let (machine, server, output, path) = try spinningMachine()
        defer { server.stop() }
        let client = try StubClient(path: path)
        #expect(client.ask("qSupported:swbreak+") != nil)
        let checkpoint = try guestSymbol("gdb-target", "checkpoint")
        let hex = String(checkpoint, radix: 16)
        let before = try #require(client.ask("m\(hex),4"))
        #expect(client.ask("Z0,\(hex),1") == "OK" && client.ask("Z0,\(hex),1") == "OK", "twice is fine")
        #expect(client.ask("m\(hex),4") == before, "the int3 is not shown")
        let physical = checkpoint - 0xFFFF_FFFF_8000_0000
        #expect(try machine.memory.read(at: .init(physical), count: 1) == [0xCC], "but it is in guest memory")
        // Writing over it changes what it hides; the int3 stays.
        let patched = "90" + before.dropFirst(2)
        #expect(client.ask("M\(hex),4:\(patched)") == "OK")
        #expect(client.ask("m\(hex),4") == patched)
        #expect(try machine.memory.read(at: .init(physical), count: 1) == [0xCC])
        #expect(client.ask("M\(hex),1:\(before.prefix(2))") == "OK", "put the original byte back")
        // Run to it: clear keep_spinning, continue, stop at checkpoint(2) with swbreak.
        let flag = try guestSymbol("gdb-target", "keep_spinning")
        #expect(client.ask("M\(String(flag, radix: 16)),4:00000000") == "OK")
        let hit = try #require(client.ask("vCont;c"))
        #expect(hit.hasPrefix("T05thread:1;swbreak:;"), "\(hit)")
        #expect(hit.contains("10:" + PacketCodec.hexLittleEndian(checkpoint, size: 8).map { String(UnicodeScalar($0)) }.joined()))
        // Disconnect with the breakpoint in place: it is removed and the guest finishes.
        client.disconnect()
        let reason = try (waitForExit(machine))
        #expect(reason == .debugExit(value: 7))
        #expect(try machine.memory.read(at: .init(physical), count: 1) != [0xCC])
        #expect(output.text.hasSuffix("bye\n"))
    }

    /// A step over an instruction the emulation assist finishes stops right after it,
    /// with the registers as the assist left them (they sit in the sync-register area
    /// until the vCPU parks and applies them).
    @Test func aStepOverAnAssistedInstruction() throws {
        let (machine, server, _, path) = try spinningMachine()
        defer { server.stop() }
        let client = try StubClient(path: path)
        let popcnt = try guestSymbol("gdb-target", "assisted_step")
        #expect(client.ask("Z1,\(String(popcnt, radix: 16)),1") == "OK")
        // stepping() ran before the loop: run it again from the top (a P write of RIP), to
        // the breakpoint on its popcnt. It never returns: the test ends at the step.
        let stepping = try guestSymbol("gdb-target", "stepping")
        #expect(client.ask("P10=" + PacketCodec.hexLittleEndian(stepping, size: 8).map { String(UnicodeScalar($0)) }.joined()) == "OK")
        let hit = try #require(client.ask("vCont;c"))
        #expect(hit.hasPrefix("T05thread:1;hwbreak:;") || hit.hasPrefix("T05thread:1;"), "\(hit)")
        #expect(client.ask("p10") == PacketCodec.hexLittleEndian(popcnt, size: 8).map { String(UnicodeScalar($0)) }.joined())
        #expect(client.ask("z1,\(String(popcnt, radix: 16)),1") == "OK")
        let stepped = try #require(client.ask("vCont;s:1"))
        #expect(stepped.hasPrefix("T05thread:1;"), "\(stepped)")
        let rip = PacketCodec.number(Array(try #require(client.ask("p10")).utf8).reversedHexBytes)
        #expect(rip == popcnt + 4, "one instruction (popcnt is 4 bytes)")
        let rax = PacketCodec.number(Array(try #require(client.ask("p0")).utf8).reversedHexBytes)
        #expect(rax == 8, "popcnt(0xff)")
        _ = machine
    }

    @Test func aSecondClientIsTurnedAwayAndTheMachineEndTellsTheFirst() throws {
        let (machine, server, _, path) = try spinningMachine()
        let first = try StubClient(path: path)
        #expect(first.ask("?")?.hasPrefix("T05") == true)
        let second = try StubClient(path: path)
        #expect(second.closedByPeer(), "one client at a time")
        let flag = try guestSymbol("gdb-target", "keep_spinning")
        #expect(first.ask("M\(String(flag, radix: 16)),4:00000000") == "OK")
        first.send("c")
        let reason = try waitForExit(machine)
        server.machineEnded(reason)
        #expect(first.packet() == "W0f", "exit status 15 for debug-exit value 7")
        #expect(first.closedByPeer())
    }
}

/// The probe VM that tells the debugger what guest debug does on this host.
@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason))
struct GuestDebugSupportTests {
    @Test func singleStepAndExecutionBreakpointsWorkAtCPL0() throws {
        let kvm = try KVMSystem()
        let start = Date()
        let support = GuestDebugProbeVM.run(kvm)
        let ms = Date().timeIntervalSince(start) * 1000
        print("guest debug probe (\(String(format: "%.1f", ms)) ms): \(support)")
        #expect(support.probeError == nil, "\(support)")
        // Everything the stub builds on: on hardware KVM all of it, on a KVM that
        // emulates CPL 0 at least these two (the gdb tests use them).
        #expect(support.singleStep && support.executionBreakpoints, "\(support)")
        // A host that runs CPL 3 natively and ignores guest debug there reports it, and
        // one that delivers no data breakpoint gets write watchpoints by single-stepping.
        #expect(GuestDebugSupport.probe(kvm) == support, "cached per process")
    }
}
