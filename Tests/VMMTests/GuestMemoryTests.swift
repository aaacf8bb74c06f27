import Foundation
import GuestMemory
import Testing

@Suite struct GuestMemoryTests {
    let memory: GuestMemory

    init() throws {
        let rom = try MemorySegment(name: "rom", kind: .deviceMemory, guestBase: GuestAddress(0xFFFF_0000),
                                    size: 0x10000, readOnly: true)
        memory = try GuestMemory.create(ramSize: 16 << 20, extra: [rom])
    }

    @Test func layoutSplitsAroundTheHole() {
        #expect(GuestMemory.ramLayout(size: 1 << 30).map(\.length) == [1 << 30])
        let big = GuestMemory.ramLayout(size: 5 << 30)
        #expect(big.count == 2)
        #expect(big[0].start.raw == 0 && big[0].length == 3 << 30)
        #expect(big[1].start.raw == 4 << 30 && big[1].length == 2 << 30)
        let exact = GuestMemory.ramLayout(size: 3 << 30)
        #expect(exact.count == 1)
    }

    @Test func readWriteRoundTrip() throws {
        try memory.write([1, 2, 3, 4], at: GuestAddress(0x1000))
        #expect(try memory.read(at: GuestAddress(0x1000), count: 4) == [1, 2, 3, 4])
        try memory.writeInteger(UInt32(0xDEADBEEF), at: GuestAddress(0x2002))
        #expect(try memory.readInteger(UInt32.self, at: GuestAddress(0x2002)) == 0xDEADBEEF)
        #expect(try memory.read(at: GuestAddress(0x2002), count: 1) == [0xEF])  // little-endian
    }

    @Test func lastByteOfRAMIsReachableButNotOnePast() throws {
        let end = UInt64(16 << 20)
        try memory.write([0xAA], at: GuestAddress(end - 1))
        #expect(throws: GuestMemoryError.unmapped(address: end, length: 1)) {
            try memory.write([0xAA], at: GuestAddress(end))
        }
        #expect(throws: GuestMemoryError.unmapped(address: end - 1, length: 2)) {
            try memory.read(at: GuestAddress(end - 1), count: 2)
        }
    }

    @Test func addressNearMaxAndWrappingLengthsAreRefused() {
        #expect(throws: GuestMemoryError.overflow(address: UInt64.max, length: 2)) {
            try memory.resolve(GuestAddress(UInt64.max), length: 2)
        }
        #expect(throws: GuestMemoryError.overflow(address: 0x1000, length: UInt64.max)) {
            try memory.resolve(GuestAddress(0x1000), length: UInt64.max)
        }
        // A wrap that would land back inside RAM must not be mistaken for a small range.
        #expect(throws: GuestMemoryError.overflow(address: UInt64.max - 0xF, length: 0x1010)) {
            try memory.resolve(GuestAddress(UInt64.max - 0xF), length: 0x1010)
        }
        #expect(throws: GuestMemoryError.unmapped(address: UInt64.max, length: 1)) {
            try memory.readInteger(UInt8.self, at: GuestAddress(UInt64.max))
        }
        #expect(throws: GuestMemoryError.unmapped(address: UInt64.max - 3, length: 4)) {
            try memory.readInteger(UInt32.self, at: GuestAddress(UInt64.max - 3))
        }
    }

    @Test func rangesIntoTheHoleOrAcrossSegmentsAreRefused() {
        #expect(throws: GuestMemoryError.unmapped(address: 3 << 30, length: 4)) {
            try memory.read(at: GuestAddress(3 << 30), count: 4)
        }
        // From the ROM's last byte across 4 GiB.
        #expect(throws: GuestMemoryError.unmapped(address: 0xFFFF_FFFF, length: 2)) {
            try memory.read(at: GuestAddress(0xFFFF_FFFF), count: 2)
        }
        #expect(throws: GuestMemoryError.unmapped(address: (16 << 20) - 8, length: 4096)) {
            try memory.copy(from: GuestAddress((16 << 20) - 8), to: GuestAddress(0), count: 4096)
        }
        #expect(!memory.contains(GuestAddress(0x9000_0000), length: 1))
        #expect(memory.contains(GuestAddress(0), length: 16 << 20))
    }

    @Test func readOnlySegmentRefusesGuestWritesButLoads() throws {
        #expect(throws: GuestMemoryError.readOnly(address: 0xFFFF_0000, segment: "rom")) {
            try memory.write([1], at: GuestAddress(0xFFFF_0000))
        }
        try memory.load([0xEA, 0x5B], at: GuestAddress(0xFFFF_FFF0))
        #expect(try memory.read(at: GuestAddress(0xFFFF_FFF0), count: 2) == [0xEA, 0x5B])
    }

    /// The integer accessors and the one-range file transfers take a fast path of their
    /// own (a value-typed segment table); it must refuse exactly what `resolve` refuses.
    @Test func fastPathsRefuseWhatResolveRefuses() throws {
        let end = UInt64(16 << 20)
        #expect(throws: GuestMemoryError.readOnly(address: 0xFFFF_0000, segment: "rom")) {
            try memory.writeInteger(UInt32(1), at: GuestAddress(0xFFFF_0000))
        }
        #expect(throws: GuestMemoryError.unmapped(address: end - 2, length: 4)) {
            try memory.readInteger(UInt32.self, at: GuestAddress(end - 2))
        }
        #expect(throws: GuestMemoryError.unmapped(address: end - 2, length: 4)) {
            try memory.writeInteger(UInt32(1), at: GuestAddress(end - 2))
        }
        #expect(throws: GuestMemoryError.unmapped(address: 0xFFFF_FFFE, length: 4)) {
            try memory.readInteger(UInt32.self, at: GuestAddress(0xFFFF_FFFE))
        }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("gm-fileio-\(getpid())").path
        FileManager.default.createFile(atPath: path, contents: Data((0 ..< 8192).map { UInt8(truncatingIfNeeded: $0 * 7) }))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let fd = open(path, O_RDWR)
        try #require(fd >= 0)
        defer { close(fd) }
        func range(_ start: UInt64, _ length: UInt64) throws -> GuestRange {
            try #require(GuestRange(start: GuestAddress(start), length: length))
        }
        #expect(try memory.readFile(fd, offset: 4096, into: try range(0x3000, 4096)) == 4096)
        #expect(try memory.readInteger(UInt8.self, at: GuestAddress(0x3001)) == UInt8(truncatingIfNeeded: 4097 * 7))
        #expect(try memory.readFile(fd, offset: 8000, into: try range(0x5000, 4096)) == 192)   // end of file
        #expect(try memory.writeFile(fd, offset: 0, from: try range(0x3000, 16)) == 16)
        #expect(throws: GuestMemoryError.readOnly(address: 0xFFFF_0000, segment: "rom")) {
            try memory.readFile(fd, offset: 0, into: try range(0xFFFF_0000, 512))
        }
        #expect(throws: GuestMemoryError.unmapped(address: end - 256, length: 512)) {
            try memory.readFile(fd, offset: 0, into: try range(end - 256, 512))
        }
        #expect(throws: GuestMemoryError.unmapped(address: 3 << 30, length: 512)) {
            try memory.writeFile(fd, offset: 0, from: try range(3 << 30, 512))
        }
    }

    @Test func cStringStopsAtSegmentEndAndLimit() throws {
        let end = UInt64(16 << 20)
        try memory.write([0x41, 0x42, 0x43], at: GuestAddress(end - 3))  // no terminator before the end
        #expect(try memory.readCString(at: GuestAddress(end - 3), maxLength: 100) == "ABC")
        #expect(try memory.readCString(at: GuestAddress(end - 3), maxLength: 2) == "AB")
    }

    @Test func overlappingSegmentsAreRefused() throws {
        let a = try MemorySegment(name: "a", guestBase: GuestAddress(0), size: 0x2000)
        let b = try MemorySegment(name: "b", guestBase: GuestAddress(0x1000), size: 0x2000)
        #expect(throws: GuestMemoryError.overlap("a", "b")) { try GuestMemory(segments: [a, b]) }
    }

    @Test func invalidSegmentsAreRefused() {
        #expect(throws: GuestMemoryError.self) { try MemorySegment(name: "x", guestBase: GuestAddress(0), size: 0) }
        #expect(throws: GuestMemoryError.self) { try MemorySegment(name: "x", guestBase: GuestAddress(0x10), size: 0x1000) }
        #expect(throws: GuestMemoryError.self) {
            try MemorySegment(name: "x", guestBase: GuestAddress(UInt64.max - 0xFFF), size: 0x2000)
        }
        #expect(throws: GuestMemoryError.self) { try MemorySegment(name: "x", guestBase: GuestAddress(0), size: 1 << 50) }
    }

    @Test func discardZeroesTheSegment() throws {
        let segment = try MemorySegment(name: "scratch", guestBase: GuestAddress(0), size: 0x2000)
        let m = try GuestMemory(segments: [segment])
        try m.write([9, 9, 9], at: GuestAddress(0x1000))
        try segment.discard()
        #expect(try m.read(at: GuestAddress(0x1000), count: 3) == [0, 0, 0])
    }
}
