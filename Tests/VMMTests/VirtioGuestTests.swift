import Devices
import Foundation
import GuestMemory
import Testing
import VMM

/// A scratch disk image: `size` bytes, starting with `prefix`; removed with the value.
final class ScratchImage {
    let url: URL
    var path: String { url.path }

    init(size: Int, prefix: [UInt8] = [], name: String = "disk") throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("swift-vmm-\(name)-\(getpid())-\(UInt32.random(in: 0 ... .max)).img")
        var bytes = prefix
        bytes += [UInt8](repeating: 0, count: max(0, size - prefix.count))
        try Data(bytes).write(to: url)
    }

    var bytes: [UInt8] { (try? [UInt8](Data(contentsOf: url))) ?? [] }

    deinit { try? FileManager.default.removeItem(at: url) }
}

/// The C driver guest (Guests/virtio/virtio.c) on a real machine: exit status 33 is success.
func runVirtioGuest(_ test: String, disk: ScratchImage, readOnly: Bool = false, serial: String = "",
                    rng: Bool = false, notification: VirtioNotification) throws -> (StopReason, String, Machine) {
    try runGuest("virtio", cmdline: "test=\(test)" + (serial.isEmpty ? "" : " serial=\(serial)")) { _ in } config: { config in
        config.disks = [DiskConfig(backend: try BlockBackend.open(path: disk.path, readOnly: readOnly, direct: false),
                                   readOnly: readOnly, serial: serial, path: disk.path)]
        config.rng = rng
        config.virtioNotification = notification
    }
}

@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct VirtioGuestTests {
    static let success = StopReason.debugExit(value: 0x10)

    @Test(arguments: VirtioNotification.allCases)
    func driverWritesReadsBackAndGetsEntropy(notification: VirtioNotification) throws {
        let disk = try ScratchImage(size: 1 << 20)
        let (reason, out, machine) = try runVirtioGuest("rw", disk: disk, serial: "swift-vmm-0001", rng: true,
                                                        notification: notification)
        #expect(reason == Self.success, "\(out)")
        // The guest wrote sectors 1-2 with seed 0x11, step 7.
        let written = Array(disk.bytes[512 ..< 1536])
        #expect(written == (0 ..< 1024).map { UInt8(truncatingIfNeeded: 0x11 + $0 * 7) })
        let stats = Dictionary(uniqueKeysWithValues: machine.statistics().devices.map { ($0.name, Dictionary(uniqueKeysWithValues: $0.counters.map { ($0.name, $0.value) })) })
        let blk = try #require(stats["blk0"]), rng = try #require(stats["rng0"])
        #expect(blk["requests"] == 6 && blk["bytes_written"] == 1024 && blk["bytes_read"] == 1024)
        #expect(blk["flushes"] == 1 && blk["errors"] == 2)   // past the end, unsupported type
        #expect(blk["notifications"] == 6 && blk["interrupts"] == 6)
        #expect(rng["requests"] == 1 && rng["bytes_read"] == 64)
        if notification == .ioeventfd {
            // The notifications never reached the MMIO bus: no exit for QueueNotify.
            #expect(machine.virtioTransport(named: "blk0")?.device.statistics.ignoredNotifications.load(ordering: .relaxed) == 0)
        }
    }

    @Test func readOnlyDiskRefusesWrites() throws {
        let disk = try ScratchImage(size: 64 << 10, prefix: Array("RO".utf8))
        let before = disk.bytes
        let (reason, out, _) = try runVirtioGuest("ro", disk: disk, readOnly: true, notification: .ioeventfd)
        #expect(reason == Self.success, "\(out)")
        #expect(disk.bytes == before)
    }

    @Test(arguments: ["loop", "hole", "huge", "qsize0", "early", "config"])
    func hostileDriverLeavesTheVMMAlive(variant: String) throws {
        for notification in VirtioNotification.allCases {
            let disk = try ScratchImage(size: 64 << 10)
            let (reason, out, machine) = try runVirtioGuest(variant, disk: disk, notification: notification)
            // The guest checked the device's answer, reset it and used it again.
            #expect(reason == Self.success, "\(variant) \(notification): \(out)")
            if variant == "loop" {
                let errors = machine.statistics().devices.first { $0.name == "blk0" }?.counters.first { $0.name == "queue_errors" }?.value
                #expect(errors == 1)
            }
        }
    }
}

@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct VirtioVMMCtlTests {
    /// Once the guest's FLUSH is answered its write is on disk: a kill -9 of the VMM
    /// right after loses nothing (fdatasync, not a buffer in the VMM).
    @Test func flushedDataSurvivesKill9() throws {
        try #require(VMMCtl.exists, "vmmctl is not built")
        let disk = try ScratchImage(size: 64 << 10)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: VMMCtl.path)
        process.arguments = ["run", "--kernel", try TestGuests.path("virtio"), "--cmdline", "test=persist",
                             "--disk", disk.path, "--memory", "32"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        var seen = ""
        let deadline = Date().addingTimeInterval(60)
        while !seen.contains("flushed\n"), Date() < deadline {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            seen += String(decoding: chunk, as: UTF8.self)
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(seen.contains("flushed\n"), "guest output: \(seen)")
        #expect(process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGKILL)
        #expect(Array(disk.bytes[4096 ..< 4106]) == Array("persisted!".utf8))
    }

    @Test func verboseListsWindowsAndIRQsFromOneLayout() throws {
        let root = try ScratchImage(size: 1 << 20, name: "root"), data = try ScratchImage(size: 64 << 10, name: "data")
        let r = try VMMCtl.run(["run", "--kernel", TestGuests.path("exit"), "--debug-exit", "--memory", "32", "--verbose",
                                "--disk", root.path + ",serial=root", "--disk", data.path + ",readonly", "--rng", "--serial", "none"])
        #expect(r.status == 67)
        #expect(r.all.contains("blk0        mmio 0xd0000000-0xd0000fff  irq 5  virtio-blk  \(root.path) serial=root  2048 sectors"))
        #expect(r.all.contains("blk1        mmio 0xd0001000-0xd0001fff  irq 6  virtio-blk  \(data.path) readonly  128 sectors"))
        #expect(r.all.contains("rng0        mmio 0xd0002000-0xd0002fff  irq 7  virtio-rng"))
    }

    @Test func badDiskOptionsAreRefused() throws {
        let bad = try VMMCtl.run(["run", "--kernel", TestGuests.path("exit"), "--disk", "/tmp/x,bogus"])
        #expect(bad.status != 0 && bad.all.contains("--disk"))
        let missing = try VMMCtl.run(["run", "--kernel", TestGuests.path("exit"), "--disk", "/nonexistent/disk.img"])
        #expect(missing.status == 10 && missing.all.contains("/nonexistent/disk.img"))
        let serial = try VMMCtl.run(["run", "--kernel", TestGuests.path("exit"), "--disk", "/tmp/x,serial=" + String(repeating: "s", count: 21)])
        #expect(serial.status != 0)
    }
}

struct DeviceLayoutTests {
    @Test func windowsAndGSIsComeFromOneAllocation() throws {
        let layout = try DeviceLayout(kinds: ["virtio-blk", "virtio-blk", "virtio-rng"])
        #expect(layout.slots.map(\.name) == ["blk0", "blk1", "rng0"])
        #expect(layout.slots.map(\.base) == [0xD000_0000, 0xD000_1000, 0xD000_2000] && layout.slots.map(\.gsi) == [5, 6, 7])
        #expect(layout.commandLineParameters == ["virtio_mmio.device=4K@0xd0000000:5", "virtio_mmio.device=4K@0xd0001000:6",
                                                 "virtio_mmio.device=4K@0xd0002000:7"])
        let gsis = try DeviceLayout(kinds: Array(repeating: "virtio-blk", count: DeviceLayout.maxDevices)).slots.map(\.gsi)
        #expect(Set(gsis).count == gsis.count && !gsis.contains(4) && !gsis.contains(8) && gsis.allSatisfy { $0 < 24 })
        #expect(throws: MachineError.self) { try DeviceLayout(kinds: Array(repeating: "virtio-blk", count: DeviceLayout.maxDevices + 1)) }
    }
}

@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason))
struct VirtioACPITests {
    /// The DSDT the guest finds lists each device of the layout, in order.
    @Test func dsdtHasOneLNRO0005PerDevice() throws {
        let a = try ScratchImage(size: 8192), b = try ScratchImage(size: 8192)
        var config = MachineConfig()
        config.memoryMiB = 32
        config.kernel = try TestGuests.image("exit")
        config.disks = [DiskConfig(backend: try BlockBackend.open(path: a.path, readOnly: false, direct: false)),
                        DiskConfig(backend: try BlockBackend.open(path: b.path, readOnly: true, direct: false), readOnly: true)]
        config.rng = true
        let machine = try Machine(config: config)
        let area = try machine.memory.read(at: GuestAddress(0xE0000), count: 0x20000)
        let dsdtAt = try #require((0 ..< area.count - 4).first { area[$0 ..< $0 + 4].elementsEqual(Array("DSDT".utf8)) })
        let length = Int(area[dsdtAt + 4]) | Int(area[dsdtAt + 5]) << 8
        let dsdt = Array(area[dsdtAt ..< dsdtAt + length])
        func count(_ needle: [UInt8]) -> Int { (0 ... dsdt.count - needle.count).filter { dsdt[$0 ..< $0 + needle.count].elementsEqual(needle) }.count }
        #expect(count(Array("LNRO0005".utf8)) == 3)
        for base: UInt32 in [0xD000_0000, 0xD000_1000, 0xD000_2000] {
            let le = (0 ..< 4).map { UInt8(truncatingIfNeeded: base >> (8 * $0)) }
            #expect(count([0x86, 9, 0, 1] + le + [0, 0x10, 0, 0]) == 1, "Memory32Fixed at \(base)")
        }
        #expect(dsdt.reduce(0) { $0 &+ $1 } == 0, "checksum")
    }
}
