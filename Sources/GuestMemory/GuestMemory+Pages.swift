#if canImport(Glibc)
import Glibc
#endif

/// Page-level views of guest memory for snapshots: which pages hold anything but
/// zeros, so that a memory file stays sparse.
extension GuestMemory {
    public static let pageSize: UInt64 = MemorySegment.pageSize

    /// The runs of pages in `[offset, offset + length)` of `segment` (page aligned) that
    /// are not all zeros, as byte ranges of the segment. Reading a page of a memfd that
    /// was never touched would allocate it, so callers pass only ranges that hold data
    /// (SEEK_DATA, a dirty log).
    public func nonZeroRuns(in segment: MemorySegment, offset: UInt64, length: UInt64) throws -> [Range<UInt64>] {
        let page = Self.pageSize
        guard offset % page == 0, length % page == 0, offset <= segment.size, length <= segment.size - offset else {
            throw GuestMemoryError.unmapped(address: segment.guestBase.raw &+ offset, length: length)
        }
        var runs: [Range<UInt64>] = []
        var start: UInt64?
        var at = offset
        let end = offset + length
        let zeros = Self.zeroPage
        while at < end {
            // SAFETY: [at, at + page) lies inside the segment mapping (checked above).
            let zero = memcmp(segment.host + Int(at), zeros, Int(page)) == 0
            if zero {
                if let s = start { runs.append(s ..< at); start = nil }
            } else if start == nil {
                start = at
            }
            at += page
        }
        if let s = start { runs.append(s ..< end) }
        return runs
    }

    private static let zeroPage = [UInt8](repeating: 0, count: Int(pageSize))

    /// The index of `segment` in `segments`.
    public func index(of segment: MemorySegment) -> Int? { segments.firstIndex { $0 === segment } }
}
