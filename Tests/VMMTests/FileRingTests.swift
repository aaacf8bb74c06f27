import Foundation
import GuestMemory
import Testing

/// The io_uring a block device batches on: reads and writes straight between a file and
/// guest memory, with the same bounds checks as one-at-a-time file I/O, and nothing
/// reachable through it but the registered files.
struct FileRingTests {
    /// A ring over one scratch file, or nil where the host refuses io_uring (the device
    /// then serves every request with pread/pwrite, which the other tests cover).
    static func ring(_ file: ScratchImage, entries: Int = 8) throws -> (FileRing, Int32)? {
        let fd = open(file.path, O_RDWR | O_CLOEXEC)
        try #require(fd >= 0)
        do {
            return (try FileRing(files: [fd], entries: entries), fd)
        } catch {
            close(fd)
            print("FileRingTests: no io_uring on this host (\(error)); the synchronous path serves the disks")
            return nil
        }
    }

    @Test func batchReadsAndWritesGuestMemory() throws {
        let file = try ScratchImage(size: 64 << 10, prefix: (0 ..< 8192).map { UInt8(truncatingIfNeeded: $0 / 7) })
        guard let (ring, fd) = try Self.ring(file) else { return }
        defer { close(fd) }
        let memory = try GuestMemory.create(ramSize: 1 << 20)
        memory.writeLog.enable()
        let page = UInt64(GuestMemory.pageSize)
        // Two reads (file pages 0 and 1 into guest pages 5 and 3) and a write of guest page 9 to file page 4.
        try memory.write([UInt8](repeating: 0xC3, count: 4096), at: GuestAddress(9 * page))
        _ = memory.writeLog.take()
        for (tag, (filePage, guestPage)) in [(UInt64(0), UInt64(5)), (1, 3)].enumerated() {
            let guest = try #require(GuestRange(start: GuestAddress(guestPage * page), length: page))
            #expect(try ring.queueRead(file: 0, offset: filePage * page, into: guest, memory: memory, tag: tag))
        }
        let source = try #require(GuestRange(start: GuestAddress(9 * page), length: page))
        #expect(try ring.queueWrite(file: 0, offset: 4 * page, from: source, memory: memory, tag: 7))
        #expect(try ring.submitAndWait() == 3)
        var results: [Int: Int32] = [:]
        while let c = ring.nextCompletion() { results[c.tag] = c.result }
        #expect(results == [0: 4096, 1: 4096, 7: 4096])
        let expected = file.bytes
        #expect(try memory.read(at: GuestAddress(5 * page), count: 4096) == Array(expected[0 ..< 4096]))
        #expect(try memory.read(at: GuestAddress(3 * page), count: 4096) == Array(expected[4096 ..< 8192]))
        #expect(expected[16384 ..< 20480].allSatisfy { $0 == 0xC3 })
        // The pages the kernel filled are the VMM's writes: a diff snapshot must save them.
        let log = memory.writeLog.take()[0][0]
        let marked = (0 ..< 16).filter { log & (1 << UInt64($0)) != 0 }
        #expect(marked == [3, 5])
    }

    /// Guest ranges are checked before anything is queued; a full batch says so; a file
    /// number that was not registered reaches no descriptor (the restriction: only the
    /// ring's own files, IOSQE_FIXED_FILE required).
    @Test func refusesWhatOneAtATimeFileIORefuses() throws {
        let file = try ScratchImage(size: 16 << 10)
        guard let (ring, fd) = try Self.ring(file, entries: 2) else { return }
        defer { close(fd) }
        let rom = try MemorySegment(name: "rom", kind: .deviceMemory, guestBase: GuestAddress(0xFFFF_0000), size: 0x10000, readOnly: true)
        let memory = try GuestMemory.create(ramSize: 1 << 20, extra: [rom])
        let outside = try #require(GuestRange(start: GuestAddress(0xF_F000), length: 0x2000))    // runs past RAM
        #expect(throws: GuestMemoryError.self) { _ = try ring.queueRead(file: 0, offset: 0, into: outside, memory: memory, tag: 0) }
        #expect(throws: GuestMemoryError.self) { _ = try ring.queueWrite(file: 0, offset: 0, from: outside, memory: memory, tag: 0) }
        let inROM = try #require(GuestRange(start: GuestAddress(0xFFFF_0000), length: 512))
        #expect(throws: GuestMemoryError.self) { _ = try ring.queueRead(file: 0, offset: 0, into: inROM, memory: memory, tag: 0) }
        let buffer = try #require(GuestRange(start: GuestAddress(0x1000), length: 512))
        #expect(try ring.queueRead(file: 1, offset: 0, into: buffer, memory: memory, tag: 1))     // not registered
        #expect(try ring.queueRead(file: 0, offset: 1 << 40, into: buffer, memory: memory, tag: 2))   // past the end
        #expect(try !ring.queueRead(file: 0, offset: 0, into: buffer, memory: memory, tag: 3), "a batch holds `capacity`")
        #expect(ring.capacity == 2)
        #expect(try ring.submitAndWait() == 2)
        var results: [Int: Int32] = [:]
        while let c = ring.nextCompletion() { results[c.tag] = c.result }
        #expect(results[1] == -EBADF && results[2] == 0, "\(results)")
        #expect(ring.nextCompletion() == nil)
        #expect(try ring.submitAndWait() == 0, "an empty batch submits nothing")
    }
}
