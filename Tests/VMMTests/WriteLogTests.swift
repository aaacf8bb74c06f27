import GuestMemory
import Testing

/// The VMM's own writes that a diff snapshot must save (KVM's dirty log never sees them).
struct WriteLogTests {
    /// Every write path into guest memory marks its pages: plain writes, the
    /// compare-exchange the emulation assist's `cmpxchg16b` uses (marked even when the
    /// exchange fails: one page too many at worst), and copies into a device's buffers.
    @Test func everyVMMWritePathMarksItsPages() throws {
        let memory = try GuestMemory.create(ramSize: 4 << 20)
        memory.writeLog.enable()
        let page = GuestMemory.pageSize
        try memory.write([1, 2, 3], at: GuestAddress(3 * page + 10))
        _ = try memory.compareExchange(at: GuestAddress(5 * page), expected: 0, desired: 7)
        _ = try memory.compareExchange(at: GuestAddress(6 * page + 8), expected: 99, desired: 7)   // fails: 0 is there
        let ranges = [try #require(GuestRange(start: GuestAddress(9 * page - 2), length: 4))]
        #expect(try memory.write([9, 9, 9, 9], offset: 0, count: 4, into: ranges) == 4)
        let written = memory.writeLog.take()
        let pages = (0 ..< 16).filter { written[0][0] & (1 << UInt64($0)) != 0 }
        #expect(pages == [3, 5, 6, 8, 9])
        #expect(memory.writeLog.take()[0].allSatisfy { $0 == 0 }, "take() empties the log")
    }
}
