import Foundation
import GuestMemory
import Testing

/// The io_uring a block device batches on: reads and writes straight between a file and
/// guest memory, with the same bounds checks as one-at-a-time file I/O, and nothing
/// reachable through it but the registered files and the operations it was made for.
struct FileRingTests {
    /// A ring over one scratch file, or nil where the host refuses io_uring (the device
    /// then serves every request with pread/pwrite, which the other tests cover).
    static func ring(_ file: ScratchImage, entries: Int = 8, writes: Bool) throws -> (FileRing, Int32)? {
        let fd = open(file.path, O_RDWR | O_CLOEXEC)
        try #require(fd >= 0)
        do {
            return (try FileRing(files: [fd], entries: entries, writes: writes), fd)
        } catch {
            close(fd)
            print("FileRingTests: no io_uring on this host (\(error)); the synchronous path serves the disks")
            return nil
        }
    }

    static func completions(_ ring: FileRing) -> [Int: Int32] {
        var results: [Int: Int32] = [:]
        while let c = ring.nextCompletion() { results[c.tag] = c.result }
        return results
    }

    @Test func batchReadsAndWritesGuestMemory() throws {
        let file = try ScratchImage(size: 64 << 10, prefix: (0 ..< 8192).map { UInt8(truncatingIfNeeded: $0 / 7) })
        guard let (ring, fd) = try Self.ring(file, writes: true) else { return }
        defer { close(fd) }
        #expect(ring.allowsWrites)
        let memory = try GuestMemory.create(ramSize: 1 << 20)
        let page = GuestMemory.pageSize
        // Two reads (file pages 0 and 1 into guest pages 5 and 3) and a write of guest page 9 to file page 4.
        try memory.write([UInt8](repeating: 0xC3, count: 4096), at: GuestAddress(9 * page))
        memory.writeLog.enable()
        for (tag, (filePage, guestPage)) in [(UInt64(0), UInt64(5)), (1, 3)].enumerated() {
            let guest = try #require(GuestRange(start: GuestAddress(guestPage * page), length: page))
            #expect(try ring.queueRead(file: 0, offset: filePage * page, into: guest, memory: memory, tag: tag))
        }
        let source = try #require(GuestRange(start: GuestAddress(9 * page), length: page))
        #expect(try ring.queueWrite(file: 0, offset: 4 * page, from: source, memory: memory, tag: 7))
        #expect(try ring.submitAndWait() == 3)
        #expect(Self.completions(ring) == [0: 4096, 1: 4096, 7: 4096])
        let expected = file.bytes
        #expect(try memory.read(at: GuestAddress(5 * page), count: 4096) == Array(expected[0 ..< 4096]))
        #expect(try memory.read(at: GuestAddress(3 * page), count: 4096) == Array(expected[4096 ..< 8192]))
        #expect(expected[16384 ..< 20480].allSatisfy { $0 == 0xC3 })
        // The pages the kernel filled are the VMM's writes: a diff snapshot must save them.
        let log = memory.writeLog.take()[0][0]
        #expect((0 ..< 16).filter { log & (1 << UInt64($0)) != 0 } == [3, 5])
    }

    /// Guest ranges are checked before anything is queued (outside RAM, a read into a
    /// ROM); a full batch says so; the kernel holds the ring to what it was made for: a
    /// file number that was not registered reaches no descriptor, and a ring made
    /// without writes cannot write (IORING_REGISTER_RESTRICTIONS).
    @Test func refusesWhatOneAtATimeFileIORefusesAndWhatItWasNotMadeFor() throws {
        let file = try ScratchImage(size: 16 << 10, prefix: [1, 2, 3])
        guard let (ring, fd) = try Self.ring(file, entries: 4, writes: false) else { return }
        defer { close(fd) }
        let rom = try MemorySegment(name: "rom", kind: .deviceMemory, guestBase: GuestAddress(0xFFFF_0000), size: 0x10000, readOnly: true)
        let memory = try GuestMemory.create(ramSize: 1 << 20, extra: [rom])
        let outside = try #require(GuestRange(start: GuestAddress(0xF_F000), length: 0x2000))    // runs past RAM
        #expect(throws: GuestMemoryError.self) { _ = try ring.queueRead(file: 0, offset: 0, into: outside, memory: memory, tag: 0) }
        #expect(throws: GuestMemoryError.self) { _ = try ring.queueWrite(file: 0, offset: 0, from: outside, memory: memory, tag: 0) }
        let inROM = try #require(GuestRange(start: GuestAddress(0xFFFF_0000), length: 512))
        #expect(throws: GuestMemoryError.self) { _ = try ring.queueRead(file: 0, offset: 0, into: inROM, memory: memory, tag: 0) }
        let buffer = try #require(GuestRange(start: GuestAddress(0x1000), length: 512))
        try memory.fill(0xEE, at: buffer.start, count: 512)
        #expect(try ring.queueRead(file: 1, offset: 0, into: buffer, memory: memory, tag: 1))      // not registered
        #expect(try ring.queueRead(file: 0, offset: 1 << 40, into: buffer, memory: memory, tag: 2))   // past the end
        #expect(try ring.queueWrite(file: 0, offset: 0, from: buffer, memory: memory, tag: 3))      // a reading ring
        #expect(try ring.queueRead(file: 0, offset: 0, into: buffer, memory: memory, tag: 4))
        #expect(try !ring.queueRead(file: 0, offset: 0, into: buffer, memory: memory, tag: 5), "a batch holds `capacity`")
        #expect(ring.capacity == 4 && !ring.allowsWrites)
        #expect(try ring.submitAndWait() == 4)
        let results = Self.completions(ring)
        #expect(results == [1: -EBADF, 2: 0, 3: -EACCES, 4: 512], "\(results)")
        #expect(file.bytes.prefix(3) == [1, 2, 3], "the refused write changed the file")
        #expect(try ring.submitAndWait() == 0, "an empty batch submits nothing")
        #expect(ring.nextCompletion() == nil)
    }
}
