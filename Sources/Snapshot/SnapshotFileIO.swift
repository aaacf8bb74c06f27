import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// The file operations snapshots are made of: whole-file reads and writes of the state
/// file, and the sparse-file primitives of the memory file (SEEK_DATA/SEEK_HOLE, holes
/// punched with fallocate). Errors name the call.
public enum SnapshotFileIO {
    /// Reads all of `fd` from offset 0, refusing a file larger than `limit`.
    public static func readAll(_ fd: Int32, limit: Int = StateFile.maxFileSize, what: String) throws(SnapshotError) -> [UInt8] {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .system(operation: "fstat(\(what))", errno: errno) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw .invalidState("\(what) is not a regular file") }
        guard st.st_size >= 0, Int(st.st_size) <= limit else { throw .invalidState("\(what) has \(st.st_size) bytes; at most \(limit)") }
        var result: [UInt8] = []
        result.reserveCapacity(Int(st.st_size))
        var chunk = [UInt8](repeating: 0, count: min(Int(st.st_size), 1 << 20) + 1)
        while true {
            let n = pread(fd, &chunk, chunk.count, off_t(result.count))
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw .system(operation: "pread(\(what))", errno: errno) }
            if n == 0 { return result }
            result += chunk[0 ..< n]
            guard result.count <= limit else { throw .invalidState("\(what) grew past \(limit) bytes while it was read") }
        }
    }

    /// Writes all of `bytes` to `fd` at `offset`.
    public static func writeAll(_ fd: Int32, _ bytes: [UInt8], at offset: UInt64 = 0, what: String) throws(SnapshotError) {
        var done = 0
        while done < bytes.count {
            let rest = done == 0 ? bytes : Array(bytes[done...])
            let n = pwrite(fd, rest, rest.count, off_t(offset) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .system(operation: "pwrite(\(what))", errno: n < 0 ? errno : EIO) }
            done += n
        }
    }

    /// ftruncate(2): the memory file gets its full length up front, all holes.
    public static func setLength(_ fd: Int32, _ length: UInt64, what: String) throws(SnapshotError) {
        while ftruncate(fd, off_t(length)) != 0 {
            guard errno == EINTR else { throw .system(operation: "ftruncate(\(what))", errno: errno) }
        }
    }

    /// fdatasync(2).
    public static func sync(_ fd: Int32, what: String) throws(SnapshotError) {
        while fdatasync(fd) != 0 {
            guard errno == EINTR else { throw .system(operation: "fdatasync(\(what))", errno: errno) }
        }
    }

    /// The parts of `[start, end)` of `fd` that hold data (SEEK_DATA/SEEK_HOLE), as byte
    /// ranges rounded out to pages; a file system without SEEK_DATA reports it all as data.
    public static func dataExtents(_ fd: Int32, from start: UInt64, to end: UInt64, what: String) throws(SnapshotError) -> [Range<UInt64>] {
        var extents: [Range<UInt64>] = []
        var position = start
        let page = MemoryDescription.pageSize
        while position < end {
            let data = lseek(fd, off_t(position), CKVM_SEEK_DATA)
            if data < 0 {
                if errno == ENXIO { break }   // no data from here to the end of the file
                if errno == EINVAL { return [start ..< end] }
                throw .system(operation: "lseek(\(what), SEEK_DATA)", errno: errno)
            }
            guard UInt64(data) < end else { break }
            let hole = lseek(fd, data, CKVM_SEEK_HOLE)
            guard hole >= 0 else { throw .system(operation: "lseek(\(what), SEEK_HOLE)", errno: errno) }
            let lower = UInt64(data) / page * page
            let upper = min(end, (UInt64(hole) + page - 1) / page * page)
            if let last = extents.last, lower <= last.upperBound {
                extents[extents.count - 1] = last.lowerBound ..< max(last.upperBound, upper)
            } else if lower < upper {
                extents.append(max(lower, start) ..< upper)
            }
            position = max(UInt64(hole), upper)
        }
        return extents
    }

    /// Bytes of `fd` that the file system has allocated (st_blocks), for reports.
    public static func allocatedBytes(_ fd: Int32) -> UInt64 {
        var st = stat()
        return fstat(fd, &st) == 0 ? UInt64(st.st_blocks) * 512 : 0
    }

    /// Makes `[offset, offset + length)` of `fd` read as zeros: a hole punched, or zeros
    /// written where the file system cannot punch.
    public static func zero(_ fd: Int32, offset: UInt64, length: UInt64, what: String) throws(SnapshotError) {
        if ckvm_fallocate(fd, CKVM_FALLOC_FL_PUNCH_HOLE | CKVM_FALLOC_FL_KEEP_SIZE, Int64(offset), Int64(length)) == 0 { return }
        let zeros = [UInt8](repeating: 0, count: Int(min(length, 1 << 20)))
        var done: UInt64 = 0
        while done < length {
            let n = min(UInt64(zeros.count), length - done)
            try writeAll(fd, Array(zeros[0 ..< Int(n)]), at: offset + done, what: what)
            done += n
        }
    }
}
