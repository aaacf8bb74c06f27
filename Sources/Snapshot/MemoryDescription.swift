/// Section `memory`: how the memory file lays out guest RAM, and — for a diff
/// snapshot — which pages this snapshot's memory file defines and which snapshot it
/// was taken on top of.
///
/// The memory file holds each RAM segment at `fileOffset` (page aligned), as a sparse
/// file: a hole reads as zeros. In a full snapshot every page is defined (a hole is a
/// zero page). In a diff snapshot only the pages of `pages` are defined (a hole inside
/// them is a zero page too); every other page is the parent's. Zero pages the guest
/// wrote since the parent are therefore never mistaken for "unchanged".
public struct MemoryDescription: Sendable, Equatable {
    public static let sectionName = "memory"
    public static let version: UInt16 = 1
    public static let pageSize: UInt64 = 4096

    public struct Segment: Sendable, Equatable {
        public var name: String
        public var guestBase: UInt64
        public var size: UInt64
        public var fileOffset: UInt64
        public init(name: String, guestBase: UInt64, size: UInt64, fileOffset: UInt64) {
            self.name = name; self.guestBase = guestBase; self.size = size; self.fileOffset = fileOffset
        }
    }

    /// The snapshot a diff was taken on top of.
    public struct Parent: Sendable, Equatable {
        public var id: SnapshotID
        /// Where it is: relative to the diff's own directory, or absolute.
        public var path: String
        public init(id: SnapshotID, path: String) { self.id = id; self.path = path }
    }

    public var segments: [Segment]
    /// The memory file's length in bytes.
    public var fileSize: UInt64
    /// nil for a full snapshot.
    public var parent: Parent?
    /// The file pages a diff defines (nil for a full snapshot: all of them).
    public var pages: PageRanges?

    public var isDiff: Bool { parent != nil }

    public init(segments: [Segment], parent: Parent? = nil, pages: PageRanges? = nil) {
        self.segments = segments
        self.fileSize = segments.map { $0.fileOffset + $0.size }.max() ?? 0
        self.parent = parent
        self.pages = pages
    }

    public static let maxSegments = 8
    public static let maxPathLength = 4096

    public var section: SnapshotSection {
        var e = SnapshotEncoder()
        e.count(segments.count)
        for s in segments { e.string(s.name); e.u64(s.guestBase); e.u64(s.size); e.u64(s.fileOffset) }
        e.u64(fileSize)
        e.bool(parent != nil)
        if let parent {
            e.raw(parent.id.bytes); e.string(parent.path)
            (pages ?? PageRanges()).encode(into: &e)
        }
        return SnapshotSection(name: Self.sectionName, version: Self.version, payload: e.bytes)
    }

    public init(_ section: SnapshotSection) throws(SnapshotError) {
        var d = try section.decoder(supporting: [Self.version])
        let n = try d.count(max: Self.maxSegments, elementSize: 28, "segments")
        var segments: [Segment] = []
        for _ in 0 ..< n {
            segments.append(Segment(name: try d.string(maxLength: 64, "segment name"), guestBase: try d.u64(),
                                    size: try d.u64(), fileOffset: try d.u64()))
        }
        self.segments = segments
        fileSize = try d.u64()
        if try d.bool() {
            guard let id = SnapshotID(bytes: try d.raw(16, "parent ID")) else { throw d.malformed("parent ID") }
            parent = Parent(id: id, path: try d.string(maxLength: Self.maxPathLength, "parent path"))
            pages = try PageRanges.decode(from: &d, pageCount: fileSize / Self.pageSize)
        } else {
            parent = nil
            pages = nil
        }
        try d.finish()
        try validate(d)
    }

    private func validate(_ d: SnapshotDecoder) throws(SnapshotError) {
        guard !segments.isEmpty else { throw d.malformed("no memory segments") }
        guard fileSize % Self.pageSize == 0, fileSize <= MachineDescription.maxMemoryMiB << 20 else {
            throw d.malformed("a memory file of \(fileSize) bytes")
        }
        for s in segments {
            guard s.size > 0, s.size % Self.pageSize == 0, s.fileOffset % Self.pageSize == 0, s.guestBase % Self.pageSize == 0 else {
                throw d.malformed("segment \(s.name) is not page aligned")
            }
            let (fileEnd, o1) = s.fileOffset.addingReportingOverflow(s.size)
            let (_, o2) = s.guestBase.addingReportingOverflow(s.size)
            guard !o1, !o2, fileEnd <= fileSize else { throw d.malformed("segment \(s.name) lies outside the memory file") }
        }
        // Pairwise, on the segments themselves (a machine has one or two; the decoder caps
        // the count): no sorted copies, whose generic types cost a fresh process's restore
        // more than the comparisons.
        for i in segments.indices {
            for j in segments.indices where j > i {
                let a = segments[i], b = segments[j]
                let filesOverlap = a.fileOffset < b.fileOffset + b.size && b.fileOffset < a.fileOffset + a.size
                let guestsOverlap = a.guestBase < b.guestBase + b.size && b.guestBase < a.guestBase + a.size
                if filesOverlap || guestsOverlap { throw d.malformed("memory segments overlap") }
            }
        }
    }
}

/// A set of pages as sorted, disjoint, non-adjacent runs (first page, page count).
public struct PageRanges: Sendable, Equatable {
    public struct Run: Sendable, Equatable {
        public var first: UInt64
        public var count: UInt64
        public init(first: UInt64, count: UInt64) { self.first = first; self.count = count }
        public var end: UInt64 { first + count }
    }

    public private(set) var runs: [Run] = []

    public init() {}

    /// From runs in any order, overlapping or adjacent: merged.
    public init(merging runs: [Run]) {
        for r in runs.filter({ $0.count > 0 }).sorted(by: { $0.first < $1.first }) {
            if let last = self.runs.last, r.first <= last.end {
                self.runs[self.runs.count - 1].count = max(last.end, r.end) - last.first
            } else {
                self.runs.append(r)
            }
        }
    }

    /// Appends a run that starts after every run so far (merging it when adjacent).
    public mutating func append(first: UInt64, count: UInt64) {
        guard count > 0 else { return }
        if let last = runs.last, first <= last.end {
            runs[runs.count - 1].count = max(last.end, first + count) - last.first
        } else {
            runs.append(Run(first: first, count: count))
        }
    }

    public var pageCount: UInt64 { runs.reduce(0) { $0 + $1.count } }
    public var isEmpty: Bool { runs.isEmpty }

    public func union(_ other: PageRanges) -> PageRanges { PageRanges(merging: runs + other.runs) }

    public func contains(_ page: UInt64) -> Bool {
        var low = 0, high = runs.count
        while low < high {
            let mid = (low + high) / 2
            if page < runs[mid].first { high = mid } else if page >= runs[mid].end { low = mid + 1 } else { return true }
        }
        return false
    }

    func encode(into e: inout SnapshotEncoder) {
        e.count(runs.count)
        for r in runs { e.u64(r.first); e.u64(r.count) }
    }

    /// Decodes runs that must be sorted, disjoint, non-adjacent and inside `pageCount` pages.
    static func decode(from d: inout SnapshotDecoder, pageCount: UInt64) throws(SnapshotError) -> PageRanges {
        let n = try d.count(max: Int(min(pageCount / 2 + 1, UInt64(Int32.max))), elementSize: 16, "page runs")
        var ranges = PageRanges()
        var end: UInt64 = 0
        for i in 0 ..< n {
            let first = try d.u64(), count = try d.u64()
            let (last, overflow) = first.addingReportingOverflow(count)
            guard count > 0, !overflow, last <= pageCount, i == 0 || first > end else {
                throw d.malformed("page run \(i) (\(first) + \(count)) is empty, out of order, or past page \(pageCount)")
            }
            ranges.runs.append(Run(first: first, count: count))
            end = last
        }
        return ranges
    }
}
