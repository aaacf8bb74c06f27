import Devices
import Foundation
import GuestMemory
import Snapshot
import Testing

/// A deterministic generator for the fuzz tests (SplitMix64): every run mutates the same way.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A state file shaped like a real one: the descriptions, vCPU-sized payloads, devices.
func sampleStateFile() -> StateFile {
    let machine = MachineDescription(writer: "0.1.0", createdAt: 1_796_000_000_000_000_000, name: "fuzz", memoryMiB: 64, cpus: 2,
                                     topology: (1, 2, 1), cpuTemplate: "host", commandLine: "console=ttyS0",
                                     effectiveCommandLine: "console=ttyS0 noxsave", bootFormat: "PVH ELF", debugExit: true,
                                     hypercalls: true, rebootOnReset: true, rebootOnTripleFault: false, inKernelIRQChip: true,
                                     acpi: true, trackDirtyPages: true, virtioNotification: "ioeventfd", virtioOnCommandLine: false,
                                     disks: [.init(path: "/srv/root.img", readOnly: false, serial: "root", direct: false, size: 1 << 20)],
                                     rng: true, generation: 3)
    var memory = MemoryDescription(segments: [.init(name: "ram-low", guestBase: 0, size: 64 << 20, fileOffset: 0)])
    memory.parent = .init(id: SnapshotID.random(), path: "../base")
    var pages = PageRanges()
    for p in stride(from: UInt64(0), to: 4000, by: 7) { pages.append(first: p, count: 3) }
    memory.pages = pages
    var g = SeededGenerator(seed: 1)
    let blob = { (n: Int) in (0 ..< n).map { _ in UInt8.random(in: 0 ... 255, using: &g) } }
    let serial = Serial16550(output: NullOutput())
    serial.enqueueInput(Array("pending".utf8))
    let sections = [machine.section, memory.section,
                    SnapshotSection(name: "vcpu.0", version: 1, payload: blob(9000)),
                    SnapshotSection(name: "vcpu.1", version: 1, payload: blob(9000)),
                    SnapshotSection(name: "irqchip", version: 1, payload: blob(1560)),
                    (try? serial.snapshotSection(named: "port.serial-16550@3f8")) ?? SnapshotSection(name: "x", version: 1, payload: []),
                    SnapshotSection(name: "boot.kernel", version: 1, payload: blob(20000))]
    return StateFile(id: SnapshotID.random(), sections: sections)
}

@Suite struct SnapshotFormatTests {
    @Test func crc32cKnownAnswers() {
        // RFC 3720 (iSCSI) B.4 and the usual check value.
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum(Array(0 ... 31)) == 0x46DD_794E)
        // In pieces, continuing, is the same as in one go.
        let data = Array("the quick brown fox jumps over the lazy dog".utf8)
        #expect(CRC32C.checksum(Array(data[20...]), continuing: CRC32C.checksum(Array(data[..<20]))) == CRC32C.checksum(data))
    }

    /// Section names carry device addresses in hex: the hand-written formatter must spell
    /// them as `String(_:radix:)` did, or older snapshots' sections stop matching.
    @Test func sectionHexMatchesRadix16() {
        for v: UInt64 in [0, 1, 0xF, 0x10, 0x3F8, 0x8000_0000, 0xFEC0_0000, 0xD000_0000_1000, .max] {
            #expect(StateFile.hex(v) == String(v, radix: 16))
        }
        #expect(SnapshotID.random() != SnapshotID.random())
    }

    /// A version-1 machine section (written before the irqchip was recorded) still reads,
    /// as KVM's irqchip, the only one there was; a version-2 one keeps what it says.
    @Test func aVersionOneMachineSectionReadsAsKVMsIRQChip() throws {
        var machine = try MachineDescription(sampleStateFile().require("machine"))
        machine.irqchip = "split"
        let current = machine.section
        let reread = try MachineDescription(current)
        #expect(current.version == 2 && reread.irqchip == "split")
        // Version 1 is version 2 without the trailing irqchip string (u32 length + bytes).
        let v1 = SnapshotSection(name: current.name, version: 1, payload: Array(current.payload.dropLast(4 + 5)))
        let old = try MachineDescription(v1)
        #expect(old.irqchip == "kernel" && old.cpus == machine.cpus && old.generation == machine.generation)
        // A version-2 section naming an unknown irqchip is refused.
        var bad = machine
        bad.irqchip = "pic8259"
        #expect(throws: SnapshotError.self) { try MachineDescription(bad.section) }
    }

    @Test func roundTrip() throws {
        let file = sampleStateFile()
        let bytes = try file.encoded()
        let parsed = try StateFile.parse(bytes)
        #expect(parsed == file)
        #expect(try MachineDescription(parsed.require("machine")) == MachineDescription(file.require("machine")))
        let memory = try MemoryDescription(parsed.require("memory"))
        #expect(memory.isDiff && memory.pages?.pageCount == 572 * 3)
    }

    @Test func anotherMajorAndANewerMinorAreRefusedNamingBoth() throws {
        var bytes = try sampleStateFile().encoded()
        bytes[8] = 2   // major 2
        #expect(throws: SnapshotError.unsupportedFormat(found: FormatVersion(major: 2, minor: 0), supported: StateFile.format)) {
            try StateFile.parse(bytes)
        }
        do { _ = try StateFile.parse(bytes) } catch {
            #expect("\(error)" == "snapshot format 2.0 is not supported by this reader (format 1.0): another major version")
        }
        bytes[8] = 1; bytes[10] = 1   // 1.1
        do { _ = try StateFile.parse(bytes) } catch {
            #expect("\(error)".contains("snapshot format 1.1 is not supported by this reader (format 1.0): a newer minor version"))
        }
    }

    @Test func everyTruncationIsRefused() throws {
        let bytes = try StateFile(id: SnapshotID.random(), sections: [MachineDescription(sampleStateFile().require("machine")).section]).encoded()
        for n in 0 ..< bytes.count {
            #expect(throws: SnapshotError.self) { try StateFile.parse(Array(bytes[..<n])) }
        }
    }

    /// The issue's fuzzing: a thousand mutated state files (bit flips, truncations, huge
    /// lengths, inserted and random bytes) are each refused with a SnapshotError that
    /// says what is wrong: none traps, hangs or allocates past the file.
    @Test func aThousandMutatedStateFilesAreRefused() throws {
        let bytes = try sampleStateFile().encoded()
        var g = SeededGenerator(seed: 42)
        var kinds: [String: Int] = [:]
        for round in 0 ..< 1000 {
            var mutated = bytes
            switch round % 5 {
            case 0:   // one to four flipped bits
                for _ in 0 ..< Int.random(in: 1 ... 4, using: &g) {
                    let at = Int.random(in: 0 ..< mutated.count, using: &g)
                    mutated[at] ^= 1 << UInt8.random(in: 0 ... 7, using: &g)
                }
            case 1:   // truncated
                mutated = Array(mutated[..<Int.random(in: 0 ..< mutated.count, using: &g)])
            case 2:   // a huge length or count written over 8 bytes
                let at = Int.random(in: 0 ..< mutated.count - 8, using: &g)
                for i in 0 ..< 8 { mutated[at + i] = 0xFF }
                mutated[at] = UInt8.random(in: 0xF0 ... 0xFE, using: &g)
            case 3:   // bytes inserted
                let at = Int.random(in: 0 ... mutated.count, using: &g)
                mutated.insert(contentsOf: (0 ..< Int.random(in: 1 ... 64, using: &g)).map { _ in UInt8.random(in: 0 ... 255, using: &g) }, at: at)
            default:  // random bytes, sometimes behind a valid magic and version
                mutated = (0 ..< Int.random(in: 0 ... 4096, using: &g)).map { _ in UInt8.random(in: 0 ... 255, using: &g) }
                if round % 10 == 4 { mutated.replaceSubrange(0 ..< min(12, mutated.count), with: bytes[0 ..< 12]) }
            }
            do {
                _ = try StateFile.parse(mutated)
                Issue.record("round \(round): a mutated file was accepted")
            } catch {
                let text = "\(error)"
                #expect(!text.isEmpty)
                kinds[String(text.prefix(24)), default: 0] += 1
            }
        }
        #expect(kinds.count >= 4, "the errors say different things: \(kinds)")
    }

    /// Mutations that keep every checksum right reach the section decoders: each still
    /// ends in a value or a SnapshotError naming its section.
    @Test func mutatedSectionsWithGoodChecksumsDecodeOrFailCleanly() throws {
        let file = sampleStateFile()
        var g = SeededGenerator(seed: 7)
        var refused = 0
        for round in 0 ..< 1000 {
            var sections = file.sections
            let index = [0, 1, 5][round % 3]
            var payload = sections[index].payload
            switch round % 4 {
            case 0: payload[Int.random(in: 0 ..< payload.count, using: &g)] ^= 1 << UInt8.random(in: 0 ... 7, using: &g)
            case 1: payload = Array(payload[..<Int.random(in: 0 ..< payload.count, using: &g)])
            case 2:
                let at = Int.random(in: 0 ..< max(1, payload.count - 4), using: &g)
                for i in 0 ..< min(4, payload.count - at) { payload[at + i] = 0xFF }
            default: payload += (0 ..< 8).map { _ in UInt8.random(in: 0 ... 255, using: &g) }
            }
            sections[index].payload = payload
            let parsed = try StateFile.parse(try StateFile(id: file.id, sections: sections).encoded())
            do {
                switch index {
                case 0: _ = try MachineDescription(parsed.require("machine"))
                case 1: _ = try MemoryDescription(parsed.require("memory"))
                default: try Serial16550(output: NullOutput()).restore(from: parsed.require("port.serial-16550@3f8"))
                }
            } catch {
                refused += 1
                #expect("\(error)".contains("section"), "\(error)")
            }
        }
        #expect(refused > 300)
    }

    @Test func memoryDescriptionsAreChecked() throws {
        func refused(_ m: MemoryDescription) -> Bool { (try? MemoryDescription(m.section)) == nil }
        let ok = MemoryDescription(segments: [.init(name: "ram-low", guestBase: 0, size: 1 << 20, fileOffset: 0),
                                              .init(name: "ram-high", guestBase: 4 << 30, size: 1 << 20, fileOffset: 1 << 20)])
        #expect(!refused(ok))
        #expect(refused(MemoryDescription(segments: [])))
        #expect(refused(MemoryDescription(segments: [.init(name: "a", guestBase: 0, size: 1000, fileOffset: 0)])))
        var overlap = ok
        overlap.segments[1].fileOffset = 4096
        #expect(refused(overlap))
        var guestOverlap = ok
        guestOverlap.segments[1].guestBase = 1 << 19   // inside ram-low, files apart
        #expect(refused(guestOverlap))
        var adjacent = ok
        adjacent.segments[1].guestBase = 1 << 20       // touching is not overlapping
        #expect(!refused(adjacent))
        var outside = ok
        outside.fileSize = 1 << 20
        #expect(refused(outside))
        var diff = ok
        diff.parent = .init(id: SnapshotID.random(), path: "..")
        diff.pages = PageRanges(merging: [.init(first: 0, count: 600)])   // past the file's 512 pages
        #expect(refused(diff))
        diff.pages = PageRanges(merging: [.init(first: 10, count: 5), .init(first: 0, count: 2)])
        #expect(!refused(diff))
    }

    @Test func pageRanges() {
        let a = PageRanges(merging: [.init(first: 10, count: 5), .init(first: 0, count: 3), .init(first: 3, count: 2), .init(first: 14, count: 4)])
        #expect(a.runs == [.init(first: 0, count: 5), .init(first: 10, count: 8)])
        #expect(a.contains(4) && !a.contains(5) && a.contains(17) && !a.contains(18))
        #expect(a.union(PageRanges(merging: [.init(first: 5, count: 5)])).runs == [.init(first: 0, count: 18)])
    }

    @Test func manifestIsJSON() throws {
        let file = sampleStateFile()
        let manifest = SnapshotManifest(id: file.id, machine: try MachineDescription(file.require("machine")),
                                        memory: try MemoryDescription(file.require("memory")), memoryAllocated: 4096,
                                        stateFileSize: 100, devices: ["port.serial-16550@3f8"])
        let object = try JSONSerialization.jsonObject(with: Data(manifest.json.utf8)) as? [String: Any]
        #expect(object?["kind"] as? String == "diff")
        #expect(object?["memory_mib"] as? Int == 64)
        #expect((object?["parent"] as? [String: Any])?["path"] as? String == "../base")
        #expect((object?["created"] as? String)?.hasSuffix("Z") == true)
        #expect(SnapshotManifest.rfc3339(nanoseconds: 0) == "1970-01-01T00:00:00Z")
        #expect(SnapshotManifest.rfc3339(nanoseconds: 951_782_400 * 1_000_000_000) == "2000-02-29T00:00:00Z")
    }

    @Test func relativePaths() {
        #expect(relativePath(from: "/s/b", to: "/s/a") == "../a")
        #expect(relativePath(from: "/s/x/y", to: "/s/a") == "../../a")
        #expect(relativePath(from: "/s", to: "/s/a") == "a")
        #expect(relativePath(from: "rel", to: "/s/a") == "/s/a")
    }

    /// A virtio device that cannot save its state makes the snapshot fail, naming it.
    @Test func aDeviceThatCannotBeSavedIsNamed() throws {
        final class Opaque: VirtioDevice {
            let statistics = VirtioStatistics()
            var deviceType: Virtio.DeviceType { .entropy }
            var deviceFeatures: UInt64 { 0 }
            var queueSizes: [UInt16] { [8] }
            var configSpace: [UInt8] { [] }
            func handle(_ chain: DescriptorChain, queue: Int, memory: GuestMemory) -> UInt32 { 0 }
            func reset() {}
        }
        let memory = try GuestMemory.create(ramSize: 1 << 20)
        let transport = VirtioMMIOTransport(device: Opaque(), memory: memory, interrupt: RecordingLine())
        #expect(throws: SnapshotError.unsupportedDevice("virtio device type 4 (Opaque)")) {
            try transport.snapshotSection(named: "mmio.virtio-mmio@d0000000")
        }
    }
}
