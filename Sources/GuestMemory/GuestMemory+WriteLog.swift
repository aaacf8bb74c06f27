import Synchronization

/// The pages the VMM itself wrote into guest memory (devices' DMA, hypercall answers,
/// loaders), one bit per 4 KiB page per segment. KVM's dirty log sees only what the
/// guest (and KVM) write; together the two are every page that changed, which is what a
/// diff snapshot saves. Off until `enable()`: a disabled log costs one atomic load per
/// write.
public final class WriteLog: Sendable {
    private let enabled = Atomic<Bool>(false)
    private let bitmaps: Mutex<[[UInt64]]>
    private let pageCounts: [Int]

    init(segments: [MemorySegment]) {
        pageCounts = segments.map { Int($0.size / MemorySegment.pageSize) }
        bitmaps = Mutex(segments.map { _ in [] })
    }

    public var isEnabled: Bool { enabled.load(ordering: .acquiring) }

    /// Starts logging (from an empty log). A segment's bitmap is allocated at its first
    /// write: a restored machine enables the log at once, and 1 GiB's bitmap is 32 KiB to
    /// zero. Until then it is empty, which readers of the log take as no page written.
    public func enable() {
        bitmaps.withLock { maps in maps = pageCounts.map { _ in [] } }
        enabled.store(true, ordering: .releasing)
    }

    /// Marks `[offset, offset + length)` of segment `index` written.
    @inline(__always)
    func mark(segment index: Int, offset: Int, length: Int) {
        guard enabled.load(ordering: .relaxed), length > 0 else { return }
        let first = offset / Int(MemorySegment.pageSize), last = (offset + length - 1) / Int(MemorySegment.pageSize)
        bitmaps.withLock { maps in
            guard index < maps.count else { return }
            if maps[index].isEmpty { maps[index] = [UInt64](repeating: 0, count: (pageCounts[index] + 63) / 64) }
            for page in first ... last where page / 64 < maps[index].count {
                maps[index][page / 64] |= 1 << UInt64(page % 64)
            }
        }
    }

    /// The pages written since the last call (or since `enable()`), one bitmap per segment
    /// in `GuestMemory.segments` order (empty or shorter than the segment: no page
    /// written past its end), and a fresh, empty log.
    public func take() -> [[UInt64]] {
        bitmaps.withLock { maps in
            defer { maps = pageCounts.map { _ in [] } }
            return maps
        }
    }
}

extension GuestMemory {
    /// Notes a VMM write of `length` bytes at `offset` in `segment`.
    @inline(__always)
    func noteWrite(_ segment: MemorySegment, _ offset: Int, _ length: Int) {
        guard writeLog.isEnabled, let index = segments.firstIndex(where: { $0 === segment }) else { return }
        writeLog.mark(segment: index, offset: offset, length: length)
    }
}
