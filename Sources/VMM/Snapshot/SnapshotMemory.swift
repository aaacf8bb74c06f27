import GuestMemory
import Snapshot
#if canImport(Glibc)
import Glibc
#endif

/// A snapshot's memory file: guest RAM as a sparse file, each segment at its own
/// offset. Writing saves only pages that can hold data, and of those only the ones that
/// are not all zeros; restoring maps the file copy-on-write, or copies its data eagerly.
enum SnapshotMemory {
    /// Bytes per write call (and per progress report).
    static let chunk: UInt64 = 8 << 20

    /// Where each segment of `memory` goes in the file: one after the other.
    static func layout(of memory: GuestMemory) -> [MemoryDescription.Segment] {
        var offset: UInt64 = 0
        return memory.segments.map { s in
            defer { offset += s.size }
            return MemoryDescription.Segment(name: s.name, guestBase: s.guestBase.raw, size: s.size, fileOffset: offset)
        }
    }

    /// Writes, for each segment, the pages of `candidates[i]` (segment byte ranges) that
    /// are not all zeros into `fd` at the segment's file offset; the file gets its full
    /// length first, so everything else is a hole. Returns the data bytes written.
    static func write(_ memory: GuestMemory, candidates: [[Range<UInt64>]], to fd: Int32,
                      progress: (@Sendable (UInt64, UInt64) -> Void)?) throws(SnapshotError) -> UInt64 {
        let layout = Self.layout(of: memory)
        try SnapshotFileIO.setLength(fd, layout.map { $0.fileOffset + $0.size }.max() ?? 0, what: SnapshotFiles.memory)
        let total = candidates.joined().reduce(0) { $0 + ($1.upperBound - $1.lowerBound) }
        var done: UInt64 = 0, written: UInt64 = 0
        for (segment, (place, ranges)) in zip(memory.segments, zip(layout, candidates)) {
            for range in ranges {
                var at = range.lowerBound
                while at < range.upperBound {
                    let length = min(chunk, range.upperBound - at)
                    do {
                        for run in try memory.nonZeroRuns(in: segment, offset: at, length: length) {
                            guard let guest = GuestRange(start: GuestAddress(segment.guestBase.raw + run.lowerBound),
                                                         length: run.upperBound - run.lowerBound) else { continue }
                            written += try memory.writeFile(fd, offset: place.fileOffset + run.lowerBound, from: [guest])
                        }
                    } catch let error as GuestMemoryError {
                        throw .system(operation: "writing guest memory: \(error)", errno: 0)
                    } catch {
                        throw .invalidState("writing guest memory: \(error)")
                    }
                    at += length
                    done += length
                    progress?(done, total)
                }
            }
        }
        return written
    }

    /// Copies `ranges` (byte ranges of the file) of `fd` into the segments they fall in
    /// (`pread`, through the mapping: into a copy-on-write mapping this makes the pages
    /// private). A hole reads as zeros, which is what a defined page of a hole means.
    static func read(_ fd: Int32, ranges: [Range<UInt64>], into memory: GuestMemory,
                     layout: [MemoryDescription.Segment], done: inout UInt64, total: UInt64,
                     progress: (@Sendable (UInt64, UInt64) -> Void)?) throws(SnapshotError) {
        for range in ranges {
            for place in layout {
                let lower = max(range.lowerBound, place.fileOffset), upper = min(range.upperBound, place.fileOffset + place.size)
                var at = lower
                while at < upper {
                    let length = min(chunk, upper - at)
                    guard let guest = GuestRange(start: GuestAddress(place.guestBase + (at - place.fileOffset)), length: length) else {
                        throw .invalidState("a memory range past 2^64")
                    }
                    do {
                        let n = try memory.readFile(fd, offset: at, into: [guest])
                        guard n == length else { throw SnapshotError.truncated("the memory file at offset \(at + n)") }
                    } catch let error as SnapshotError {
                        throw error
                    } catch {
                        throw .invalidState("reading the memory file: \(error)")
                    }
                    at += length
                    done += length
                    progress?(done, total)
                }
            }
        }
    }
}
