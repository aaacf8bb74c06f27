#if canImport(Glibc)
import Glibc
#endif

/// Folds a chain of snapshots into one full snapshot: the base's memory with every
/// diff's pages laid over it in order, and the top's state. The result has the top's ID
/// (it is the same machine state), so a diff taken on top of the top still finds it.
public enum SnapshotFold {
    /// Writes the folded snapshot into open files (a memory file it sizes itself, a
    /// state file, a manifest). Returns the data bytes of the new memory file.
    public static func fold(_ chain: SnapshotChain, state: Int32, memory: Int32, manifest: Int32,
                            progress: (@Sendable (UInt64, UInt64) -> Void)? = nil) throws(SnapshotError) -> UInt64 {
        let top = chain.top
        let base = chain.layers[0]
        let size = top.memory.fileSize
        try SnapshotFileIO.setLength(memory, size, what: SnapshotFiles.memory)
        let baseData = try SnapshotFileIO.dataExtents(base.memoryFD, from: 0, to: size, what: base.label)
        let diffs = chain.diffLayers.map { layer, pages in
            (layer, pages.runs.map { ($0.first * MemoryDescription.pageSize) ..< ($0.end * MemoryDescription.pageSize) })
        }
        let total = (baseData + diffs.flatMap(\.1)).reduce(0) { $0 + ($1.upperBound - $1.lowerBound) }
        var done: UInt64 = 0, written: UInt64 = 0
        for (fd, ranges, label) in [(base.memoryFD, baseData, base.label)] + diffs.map({ ($0.0.memoryFD, $0.1, $0.0.label) }) {
            for range in ranges {
                written += try copy(from: fd, to: memory, range: range, label: label, done: &done, total: total, progress: progress)
            }
        }
        var sections = top.state.sections
        guard let index = sections.firstIndex(where: { $0.name == MemoryDescription.sectionName }) else {
            throw .missingSection(MemoryDescription.sectionName)
        }
        var described = top.memory
        described.parent = nil
        described.pages = nil
        sections[index] = described.section
        for name in SnapshotChain.inheritedSections.sorted() where top.state.section(name) == nil {
            if let inherited = chain.section(name) { sections.append(inherited) }
        }
        let folded = StateFile(id: top.state.id, sections: sections)
        let bytes = try folded.encoded()
        try SnapshotFileIO.writeAll(state, bytes, what: SnapshotFiles.state)
        let summary = SnapshotManifest(id: folded.id, machine: chain.machine, memory: described,
                                       memoryAllocated: SnapshotFileIO.allocatedBytes(memory), stateFileSize: bytes.count,
                                       devices: sections.map(\.name).filter { $0.hasPrefix("port.") || $0.hasPrefix("mmio.") })
        try SnapshotFileIO.writeAll(manifest, Array(summary.json.utf8), what: SnapshotFiles.manifest)
        for (fd, name) in [(memory, SnapshotFiles.memory), (state, SnapshotFiles.state), (manifest, SnapshotFiles.manifest)] {
            try SnapshotFileIO.sync(fd, what: name)
        }
        return written
    }

    /// Copies `range` of `source` to the same place in `target`, page by page: a page of
    /// zeros becomes a hole (punched, since an older layer may have put data there).
    static func copy(from source: Int32, to target: Int32, range: Range<UInt64>, label: String, done: inout UInt64,
                     total: UInt64, progress: (@Sendable (UInt64, UInt64) -> Void)?) throws(SnapshotError) -> UInt64 {
        let page = Int(MemoryDescription.pageSize)
        let chunk = 1 << 20
        var at = range.lowerBound
        var written: UInt64 = 0
        while at < range.upperBound {
            let length = Int(min(UInt64(chunk), range.upperBound - at))
            var buffer: [UInt8] = []
            buffer.reserveCapacity(length)
            while buffer.count < length {
                var piece = [UInt8](repeating: 0, count: length - buffer.count)
                let n = pread(source, &piece, piece.count, off_t(at) + off_t(buffer.count))
                if n < 0 && errno == EINTR { continue }
                guard n >= 0 else { throw .system(operation: "pread(\(label)/\(SnapshotFiles.memory))", errno: errno) }
                guard n > 0 else { throw .truncated("\(label)/\(SnapshotFiles.memory) at offset \(at + UInt64(buffer.count))") }
                buffer += piece[0 ..< n]
            }
            // Runs of data pages are written, runs of zero pages punched, each in one call.
            var p = 0
            while p < length {
                let zero = buffer[p ..< min(p + page, length)].allSatisfy { $0 == 0 }
                var end = min(p + page, length)
                while end < length, buffer[end ..< min(end + page, length)].allSatisfy({ $0 == 0 }) == zero {
                    end = min(end + page, length)
                }
                if zero {
                    try SnapshotFileIO.zero(target, offset: at + UInt64(p), length: UInt64(end - p), what: SnapshotFiles.memory)
                } else {
                    try SnapshotFileIO.writeAll(target, Array(buffer[p ..< end]), at: at + UInt64(p), what: SnapshotFiles.memory)
                    written += UInt64(end - p)
                }
                p = end
            }
            at += UInt64(length)
            done += UInt64(length)
            progress?(done, total)
        }
        return written
    }
}
