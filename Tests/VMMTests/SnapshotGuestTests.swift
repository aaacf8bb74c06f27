import Devices
import Foundation
import GuestMemory
import KVM
import Snapshot
import Testing
import VMM

/// Snapshots of real guests on /dev/kvm, restored in this process.
@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct SnapshotGuestTests {
    /// The count guest snapshotted in the middle continues without a gap or a repeated
    /// number, from memory mapped copy-on-write and from a copy, with the clocks
    /// continued and advanced; the original, resumed, ends the same way.
    @Test(arguments: [(RestoreOptions.Memory.copyOnWrite, RestoreOptions.Clock.continued), (.copy, .advanced)])
    func countContinuesAfterRestore(memory: RestoreOptions.Memory, clock: RestoreOptions.Clock) throws {
        let scratch = try SnapshotScratch()
        let original = try RunningGuest("count", cmdline: "2500")
        try original.machine.start()
        #expect(original.waitFor("\n300\n"))
        let (before, summary) = try original.pauseAndSnapshot(to: scratch.path("a"))
        #expect(!summary.isDiff && summary.memoryBytesWritten > 0 && summary.memoryBytesWritten < 2 << 20)
        #expect(summary.memoryFileSize == 32 << 20)
        original.machine.resume()
        #expect(try original.finish() == .powerOff)
        #expect(original.output.text == countOutput(to: 2500))

        let restored = try RunningGuest(restoring: scratch.path("a"), memory: memory, clock: clock)
        try restored.machine.start()
        #expect(try restored.finish() == .powerOff)
        #expect(before + restored.output.text == countOutput(to: 2500))
        #expect(restored.machine.generation.count == 1)
    }

    /// A snapshot taken on top of a restored one (a diff: only the pages written since)
    /// restores the chain to exactly the memory a full snapshot taken at the same moment
    /// holds, byte for byte, and the guest goes on; folding the chain gives the full
    /// snapshot's memory file.
    @Test func diffOnTopOfARestoreEqualsAFullSnapshot() throws {
        let scratch = try SnapshotScratch()
        let first = try RunningGuest("count", cmdline: "3000")
        try first.machine.start()
        #expect(first.waitFor("\n200\n"))
        let (beforeA, _) = try first.pauseAndSnapshot(to: scratch.path("a"))
        first.stop()

        let second = try RunningGuest(restoring: scratch.path("a"))
        try second.machine.start()
        #expect(second.waitFor("\n900\n"))
        second.machine.pause()
        let diff = try second.machine.snapshot(to: scratch.path("b"), options: SnapshotOptions(kind: .diff, parentPath: "../a"))
        let full = try second.machine.snapshot(to: scratch.path("full"))
        let between = second.output.text
        second.stop()
        #expect(diff.isDiff && diff.memoryBytesWritten < full.memoryBytesWritten)
        #expect(diff.parent != nil)
        // The boot image stays with the base: a diff is the pages and the state, not the kernel again.
        #expect(!diff.sections.contains("boot.kernel") && full.sections.contains("boot.kernel"))

        let fromChain = try RunningGuest(restoring: scratch.path("b"))
        let fromFull = try RunningGuest(restoring: scratch.path("full"))
        #expect(try ramBytes(fromChain.machine.memory) == ramBytes(fromFull.machine.memory))
        try fromChain.machine.start()
        #expect(try fromChain.finish() == .powerOff)
        #expect(beforeA + between + fromChain.output.text == countOutput(to: 3000))
        fromFull.stop()

        let fold = try VMMCtl.run(["fold-snapshot", scratch.path("b"), scratch.path("folded")])
        #expect(fold.status == 0, "\(fold.all)")
        #expect(try fileBytes(scratch.path("folded/memory.bin")) == fileBytes(scratch.path("full/memory.bin")))
        let folded = try StateFile.parse(fileBytes(scratch.path("folded/state.bin")))
        #expect(try !MemoryDescription(folded.require("memory")).isDiff)
        #expect(folded.section("boot.kernel")?.payload == (try StateFile.parse(fileBytes(scratch.path("full/state.bin")))).section("boot.kernel")?.payload,
                "folding brings the base's kernel into the folded snapshot")
        let fromFold = try RunningGuest(restoring: scratch.path("folded"))
        fromFold.stop()
    }

    /// A debugger's breakpoints are bytes in guest memory: no snapshot while one is
    /// attached; after it detaches, the snapshot is taken.
    @Test func noSnapshotWhileADebuggerIsAttached() throws {
        let scratch = try SnapshotScratch()
        let guest = try RunningGuest("count", cmdline: "3000")
        try guest.machine.start()
        #expect(guest.waitFor("\n200\n"))
        _ = try guest.machine.debugger.attach(onStop: {})
        guest.machine.pause()
        #expect(throws: SnapshotError.self) { try guest.machine.snapshot(to: scratch.path("a")) }
        guest.machine.debugger.detach()
        _ = try guest.pauseAndSnapshot(to: scratch.path("b"))
        guest.stop()
    }

    /// An interrupt-driven guest (Guests/uart-irq.S) snapshotted while it sleeps in
    /// `hlt` with its COM1 interrupt programmed: restored in a new machine, the next key
    /// still interrupts it, through the VMM's IOAPIC (split irqchip: its redirection
    /// entries and the GSI routes they publish) and through KVM's (KVM_SET_IRQCHIP).
    @Test(arguments: IRQChipMode.allCases)
    func interruptsReachARestoredGuest(_ irqchip: IRQChipMode) throws {
        let scratch = try SnapshotScratch()
        let original = try RunningGuest("uart-irq", memoryMiB: 16, irqchip: irqchip)
        original.machine.serial.enqueueInput(Array("ab".utf8))
        try original.machine.start()
        #expect(original.waitFor("ab"))
        let (before, summary) = try original.pauseAndSnapshot(to: scratch.path("a"))
        original.stop()
        #expect(summary.sections.contains("mmio.ioapic@fec00000") == (irqchip == .split))
        #expect(summary.sections.contains("irqchip") == (irqchip == .kernel))

        let restored = try RunningGuest(restoring: scratch.path("a"))
        restored.machine.serial.enqueueInput(Array("cq".utf8))
        try restored.machine.start()
        #expect(try restored.finish(seconds: 20) == .powerOff)
        #expect(before + restored.output.text == "uart-irq: ready\nabc\nuart-irq: thre\n")
    }

    /// A machine that boots with dirty-page tracking takes diffs of its own snapshots.
    @Test func diffOfABootedMachineWithTracking() throws {
        let scratch = try SnapshotScratch()
        let guest = try RunningGuest("count", cmdline: "3000", trackDirtyPages: true)
        try guest.machine.start()
        #expect(guest.waitFor("\n200\n"))
        _ = try guest.pauseAndSnapshot(to: scratch.path("a"))
        #expect(throws: SnapshotError.self) {   // a diff's directory that is not empty is refused
            try guest.machine.snapshot(to: scratch.path("a"), options: SnapshotOptions(kind: .diff, parentPath: "../a"))
        }
        guest.machine.resume()
        #expect(guest.waitFor("\n700\n"))
        let (before, diff) = try guest.pauseAndSnapshot(to: scratch.path("b"), options: SnapshotOptions(kind: .diff, parentPath: "../a"))
        _ = try guest.machine.snapshot(to: scratch.path("full"))
        guest.stop()
        #expect(diff.isDiff)
        let fromChain = try RunningGuest(restoring: scratch.path("b"), memory: .copy)
        let fromFull = try RunningGuest(restoring: scratch.path("full"), memory: .copy)
        #expect(try ramBytes(fromChain.machine.memory) == ramBytes(fromFull.machine.memory))
        fromFull.stop()
        try fromChain.machine.start()
        #expect(try fromChain.finish() == .powerOff)
        #expect(before + fromChain.output.text == countOutput(to: 3000))
    }

    /// Without tracking there is no diff, and without a snapshot before it neither.
    @Test func diffsNeedTrackingAndAParent() throws {
        let scratch = try SnapshotScratch()
        let untracked = try RunningGuest("idle")
        untracked.machine.pause()
        #expect(throws: SnapshotError.self) { try untracked.machine.snapshot(to: scratch.path("x"), options: SnapshotOptions(kind: .diff)) }
        let tracked = try RunningGuest("idle", trackDirtyPages: true)
        #expect(throws: SnapshotError.self) { try tracked.machine.snapshot(to: scratch.path("y"), options: SnapshotOptions(kind: .diff)) }
        try tracked.machine.start()
        #expect(throws: SnapshotError.self) { try tracked.machine.snapshot(to: scratch.path("z")) }   // running: pause first
        tracked.stop()
    }

    /// Two vCPUs, the second spinning in real mode while the first counts: both go on.
    @Test func twoVCPUs() throws {
        let scratch = try SnapshotScratch()
        let guest = try RunningGuest("count", cmdline: "1500 1", cpus: 2)
        try guest.machine.start()
        #expect(guest.waitFor("\n300\n"))
        let (before, summary) = try guest.pauseAndSnapshot(to: scratch.path("smp"))
        guest.stop()
        #expect(summary.sections.contains("vcpu.1"))
        let restored = try RunningGuest(restoring: scratch.path("smp"))
        try restored.machine.start()
        #expect(try restored.finish() == .powerOff)
        #expect(before + restored.output.text == countOutput(to: 1500, ap: true))
    }

    /// A restored machine's vCPUs hold the snapshot's state, not KVM_CREATE_VCPU's: a
    /// reset puts them through the whole power-on reset, so the AP that was running waits
    /// for its SIPI again (a first boot skips what a created vCPU already is).
    @Test func aRestoredMachineResetsItsVCPUsFully() throws {
        let scratch = try SnapshotScratch()
        let guest = try RunningGuest("count", cmdline: "100000 1", cpus: 2)
        try guest.machine.start()
        #expect(guest.waitFor("\n50\n"))
        _ = try guest.pauseAndSnapshot(to: scratch.path("smp"))
        guest.stop()
        let restored = try RunningGuest(restoring: scratch.path("smp"))
        #expect(try restored.machine.vcpus[1].vcpu.mpState() == .runnable, "the AP was running when it was saved")
        var debug = try restored.machine.vcpus[0].vcpu.debugRegisters()
        debug.dr7 = 0x401   // L0: a breakpoint the reset must clear
        try restored.machine.vcpus[0].vcpu.setDebugRegisters(debug)
        try restored.machine.reset()
        #expect(try restored.machine.vcpus[1].vcpu.mpState() == .uninitialized)
        #expect(try restored.machine.vcpus[0].vcpu.mpState() == .runnable)
        #expect(try restored.machine.vcpus[0].vcpu.debugRegisters().dr7 == 0x400)
    }

    /// The uart-irq guest waits in `hlt` for COM1's interrupt through the in-kernel
    /// IOAPIC; input arrives while it is paused, so the interrupt is pending in the
    /// interrupt controllers (and the byte in the UART) when the snapshot is taken. The
    /// restored guest gets it.
    @Test func aPendingInterruptSurvivesTheSnapshot() throws {
        let scratch = try SnapshotScratch()
        let guest = try RunningGuest("uart-irq", memoryMiB: 16)
        guest.machine.serial.enqueueInput(Array("ab".utf8))
        try guest.machine.start()
        #expect(guest.waitFor("ab"))
        usleep(50_000)   // back in hlt
        guest.machine.pause()
        guest.machine.serial.enqueueInput(Array("cq".utf8))
        let (before, _) = try guest.pauseAndSnapshot(to: scratch.path("irq"))
        guest.stop()
        #expect(before == "uart-irq: ready\nab")
        let restored = try RunningGuest(restoring: scratch.path("irq"))
        try restored.machine.start()
        #expect(try restored.finish(seconds: 20) == .powerOff)
        #expect(restored.output.text == "c\nuart-irq: thre\n")
    }

    /// A paused vCPU has completed the exit it last took. KVM applies a sync-regs write,
    /// an `in`'s value and (on hardware KVM) the RIP past the instruction only at the next
    /// KVM_RUN; a snapshot of a vCPU paused with that pending would restore a hypercall
    /// that never returned or a port read that never happened. Paused right after the
    /// doorbell, EAX holds the call's result; right after the status read, AL holds the
    /// status (THRE | TEMT, nothing received).
    @Test func aPausedVCPUHasCompletedItsLastExit() throws {
        let guest = try RunningGuest("hcloop", hypercalls: true)
        try guest.machine.start()
        #expect(guest.waitFor("hcloop: ready\n"))
        let callDone = UInt64(try guest.machine.memory.readInteger(UInt32.self, at: GuestAddress(0x9008)))
        let readDone = UInt64(try guest.machine.memory.readInteger(UInt32.self, at: GuestAddress(0x900C)))
        // Where a pause lands is up to the scheduler: on a loaded host most land inside
        // the guest, so pause until 20 have landed right after an exit (or 30 s pass);
        // each landing is checked.
        var completed = 0, pauses = 0
        let deadline = Date().addingTimeInterval(30)
        while completed < 20, pauses < 20_000, Date() < deadline {
            pauses += 1
            guest.machine.pause()
            let regs = try guest.machine.vcpus[0].vcpu.registers()
            if regs.rip == callDone {
                completed += 1
                #expect(regs.rax & 0xFFFF_FFFF == 0x00FF_0001, "paused after the call with EAX 0x\(String(regs.rax, radix: 16))")
            } else if regs.rip == readDone {
                completed += 1
                #expect(regs.rax & 0xFF == 0x60, "paused after the status read with AL 0x\(String(regs.rax & 0xFF, radix: 16))")
            }
            guest.machine.resume()
        }
        guest.stop()
        #expect(completed >= 20, "pauses land right after an exit (\(completed) of \(pauses) did)")
    }

    /// Five clones of one snapshot, each with its own name, all go on; each sees
    /// generation 1, its own name and its own instance ID.
    @Test func fiveClonesAreDistinct() throws {
        let scratch = try SnapshotScratch()
        let guest = try RunningGuest("hcloop", hypercalls: true, name: "parent")
        try guest.machine.start()
        #expect(guest.waitFor("hcloop: ready\n"))
        _ = try guest.pauseAndSnapshot(to: scratch.path("base"))
        guest.stop()
        let clones = try (0 ..< 5).map { try RunningGuest(restoring: scratch.path("base"), name: "clone-\($0)") }
        for clone in clones {
            try clone.machine.start()
            clone.machine.serial.enqueueInput([0x0A])
        }
        var ids = Set<String>()
        for (i, clone) in clones.enumerated() {
            #expect(try clone.finish(seconds: 20) == .powerOff)
            let line = clone.output.text
            #expect(line.hasPrefix("hcloop: generation 00000001 id "), "\(line)")
            #expect(line.hasSuffix(" name clone-\(i)\n"), "\(line)")
            ids.insert(String(line.split(separator: " ").dropFirst(4).first ?? ""))
        }
        #expect(ids.count == 5)
    }

    /// What a restore refuses: a disk whose size changed, a section nothing reads, a
    /// missing one; and any state file mutated with its checksums kept right either
    /// restores or is refused with an error, never a crash.
    @Test func restoreRefusesWhatDoesNotFit() throws {
        let scratch = try SnapshotScratch()
        let image = scratch.path("disk.img")
        FileManager.default.createFile(atPath: image, contents: Data(count: 1 << 20))
        var config = MachineConfig()
        config.memoryMiB = 16
        config.kernel = try TestGuests.image("idle")
        config.disks = [DiskConfig(backend: try BlockBackend.open(path: image, readOnly: false, direct: false), path: image)]
        config.rng = true
        let machine = try Machine(config: config)
        try machine.start()
        usleep(100_000)
        machine.pause()
        let summary = try machine.snapshot(to: scratch.path("s"))
        machine.kill()
        _ = try machine.waitForStop()
        #expect(summary.sections.contains("mmio.virtio-mmio@d0000000") && summary.sections.contains("mmio.virtio-mmio@d0001000"))
        let restored = try Machine.restore(from: scratch.path("s"))   // the disk reopened from its recorded path
        #expect(restored.config.disks.first?.path == image)

        try FileHandle(forWritingTo: URL(fileURLWithPath: image)).truncate(atOffset: 2 << 20)
        #expect { try Machine.restore(from: scratch.path("s")) } throws: { "\($0)".contains("the guest knew it with 1048576") }
        try FileHandle(forWritingTo: URL(fileURLWithPath: image)).truncate(atOffset: 1 << 20)

        let state = try StateFile.parse(fileBytes(scratch.path("s/state.bin")))
        func rewritten(_ sections: [SnapshotSection]) throws -> String {
            let dir = scratch.path("m-\(UUID().uuidString)")
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
            try Data(try StateFile(id: state.id, sections: sections).encoded()).write(to: URL(fileURLWithPath: dir + "/state.bin"))
            try FileManager.default.linkItem(atPath: scratch.path("s/memory.bin"), toPath: dir + "/memory.bin")
            return dir
        }
        let stray = try rewritten(state.sections + [SnapshotSection(name: "port.mystery@99", version: 1, payload: [])])
        #expect(throws: SnapshotError.unexpectedSection("port.mystery@99")) { try Machine.restore(from: stray) }
        let noClock = try rewritten(state.sections.filter { $0.name != "clock" })
        #expect { try Machine.restore(from: noClock) } throws: { "\($0)".contains("clock") }

        var g = SeededGenerator(seed: 3)
        for round in 0 ..< 60 {
            var sections = state.sections
            let index = Int.random(in: 0 ..< sections.count - 1, using: &g)   // not the kernel
            guard !sections[index].payload.isEmpty else { continue }
            let at = Int.random(in: 0 ..< sections[index].payload.count, using: &g)
            sections[index].payload[at] ^= 1 << UInt8(round % 8)
            let dir = try rewritten(sections)
            do {
                let m = try Machine.restore(from: dir)
                m.kill()
            } catch {
                #expect(!"\(error)".isEmpty)
            }
        }
    }
}

/// Snapshots of a guest with a virtio-vsock device (Guests/sockets).
@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct SnapshotVsockTests {
    /// While the snapshot is written the device's thread keeps off the rings; the
    /// original goes on serving its connection afterwards. The restored guest, on a
    /// socket and CID of its own, hears the transport-reset event (its connections had
    /// host ends that are not in the snapshot), and serves new connections.
    @Test func vsockGuestSnapshotAndRestoreWithItsOwnSocket() throws {
        let scratch = try SnapshotScratch()
        let guest = try VsockGuest()
        try #require(guest.waitFor("vsock: ready"))
        let (s, ok) = try guest.connect()
        #expect(ok?.hasPrefix("OK ") == true)
        try s.send("ping")
        #expect(s.receive(exactly: 4) == Array("ping".utf8))
        guest.machine.pause()
        let summary = try guest.machine.snapshot(to: scratch.path("vsock"))
        #expect(summary.sections.contains { $0.hasPrefix("mmio.virtio-mmio@") })
        guest.machine.resume()
        try s.send("pong")
        #expect(s.receive(exactly: 4) == Array("pong".utf8), "the original serves its connection after the snapshot")
        #expect(try guest.finish() == VsockGuestTests.success)

        let path = testSocketPath("vsock-restored")
        var options = RestoreOptions()
        let output = BufferOutput()
        options.serialOutput = output
        options.vsock = VsockConfig(guestCID: 43, backend: try VsockUnixBackend(path: path), path: path)
        let restored = try Machine.restore(from: scratch.path("vsock"), options: options)
        defer { unlink(path) }
        try restored.start()
        let deadline = Date().addingTimeInterval(30)
        while !output.text.contains("vsock: transport reset\n"), Date() < deadline { usleep(10_000) }
        #expect(output.text.contains("vsock: transport reset\n"), "\(output.text)")
        let again = try TestSocket(connectingTo: path)
        try again.send("CONNECT 5252\n")
        #expect(again.readLine()?.hasPrefix("OK ") == true)
        try again.send("hi")
        #expect(again.receive(exactly: 2) == Array("hi".utf8))
        _ = try? TestSocket(connectingTo: path).send("CONNECT 5253\n")
        DispatchQueue.global().asyncAfter(deadline: .now() + 30) { [weak restored] in restored?.kill() }
        #expect(try restored.waitForStop() == VsockGuestTests.success)
        #expect(output.text.contains("transport resets 1"), "\(output.text)")
    }
}

/// Snapshots of a guest with a virtio-net device on a tap (and vsock to talk to it).
@Suite(.enabled(if: NetnsGate.shouldRun, NetnsGate.skipReason), .serialized)
struct SnapshotNetTests {
    /// The sockets guest pings through its tap, then waits on vsock; snapshotted there,
    /// it restores onto a tap and a socket of its own with another MAC (the driver is told
    /// its configuration changed) and ends as it should.
    @Test func netGuestRestoresOntoItsOwnTap() throws {
        let scratch = try SnapshotScratch()
        let netns = try TestNetns()
        let tap = try TapDevice.open(name: netns.tapName)
        try netns.adopt(tap: netns.tapName)
        let path = testSocketPath("net-vsock")
        var config = MachineConfig()
        config.memoryMiB = 32
        config.kernel = try TestGuests.image("sockets")
        config.debugExit = true
        config.commandLine = "ip=\(netns.guestAddress) peer=\(netns.hostAddress)"
        let output = BufferOutput()
        config.serialOutput = output
        config.networks = [NetworkConfig(tap: tap, mac: try #require(MACAddress("52:54:00:ab:cd:01")))]
        config.vsock = VsockConfig(guestCID: 42, backend: try VsockUnixBackend(path: path), path: path)
        let machine = try Machine(config: config)
        try machine.start()
        let deadline = Date().addingTimeInterval(60)
        while !output.text.contains("vsock: ready"), Date() < deadline { usleep(10_000) }
        #expect(output.text.contains("net: ping reply\n"), "\(output.text)")
        machine.pause()
        let summary = try machine.snapshot(to: scratch.path("net"))
        machine.kill()
        _ = try machine.waitForStop()
        unlink(path)
        #expect(summary.sections.filter { $0.hasPrefix("mmio.virtio-mmio@") }.count == 2)
        let manifest = try String(contentsOfFile: scratch.path("net/manifest.json"), encoding: .utf8)
        #expect(manifest.contains("\"taps\": [\"\(netns.tapName)\"]"), "\(manifest)")

        let other = "svt\(UInt16.random(in: 0 ... .max))"
        var options = RestoreOptions()
        let restoredOutput = BufferOutput()
        options.serialOutput = restoredOutput
        options.networks = [NetworkConfig(tap: try TapDevice.open(name: other), mac: try #require(MACAddress("52:54:00:ab:cd:02")))]
        let path2 = testSocketPath("net-vsock-restored")
        options.vsock = VsockConfig(guestCID: 43, backend: try VsockUnixBackend(path: path2), path: path2)
        defer { unlink(path2) }
        let restored = try Machine.restore(from: scratch.path("net"), options: options)
        let transport = try #require(restored.virtioTransport(named: "net0"))
        try restored.start()
        while !restoredOutput.text.contains("vsock: transport reset\n"), Date() < deadline { usleep(10_000) }
        #expect((0 ..< 6).map { UInt8(transport.read(offset: 0x100 + UInt64($0), size: 1)) } == [0x52, 0x54, 0, 0xab, 0xcd, 2])
        _ = try? TestSocket(connectingTo: path2).send("CONNECT 5253\n")
        DispatchQueue.global().asyncAfter(deadline: .now() + 30) { [weak restored] in restored?.kill() }
        #expect(try restored.waitForStop() == VsockGuestTests.success, "\(restoredOutput.text)")
    }
}
