import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// Scatter-gather I/O between a file and guest memory, with no copy through host
/// buffers: what a block device needs to be as fast as `pread`/`pwrite` on the same
/// file. Every range is resolved with the same bounds checks as `read`/`write` before
/// any system call is made, so a guest-supplied (address, length) can never make the
/// kernel touch host memory outside a segment.
extension GuestMemory {
    /// Most iovecs one `preadv`/`pwritev` takes (IOV_MAX on Linux).
    static let maxIOVecs = 1024

    /// `preadv(2)` of the file `fd` from `offset` into `ranges`, in order, until they are
    /// full or the file ends. Refuses read-only segments. Returns the bytes read.
    public func readFile(_ fd: Int32, offset: UInt64, into ranges: [GuestRange]) throws -> UInt64 {
        let vectors = try iovecs(ranges, forWriting: true)
        return try transfer(fd, vectors, offset: offset, operation: "preadv") { preadv($0, $1, $2, $3) }
    }

    /// `pwritev(2)` of `ranges`, in order, to the file `fd` from `offset`. Returns the
    /// bytes written (all of them, or an error).
    public func writeFile(_ fd: Int32, offset: UInt64, from ranges: [GuestRange]) throws -> UInt64 {
        let vectors = try iovecs(ranges, forWriting: false)
        return try transfer(fd, vectors, offset: offset, operation: "pwritev") { pwritev($0, $1, $2, $3) }
    }

    /// `pread(2)` of the file `fd` from `offset` into one range: a block request's
    /// usual shape, without the iovec array the scatter-gather form builds. Returns
    /// the bytes read (fewer only at end of file).
    public func readFile(_ fd: Int32, offset: UInt64, into range: GuestRange) throws -> UInt64 {
        guard let at = hostLocation(range.start, length: range.length, writing: true) else {
            let (segment, _) = try resolve(range.start, length: range.length)
            throw GuestMemoryError.readOnly(address: range.start.raw, segment: segment.name)
        }
        // Marked before the call: a read that fails part-way has still changed guest pages.
        writeLog.mark(segment: at.segment, offset: at.offset, length: Int(range.length))
        // SAFETY: hostLocation() proved the range lies inside a writable segment mapping.
        return try transfer(fd, at.host, Int(range.length), offset: offset, operation: "pread", stopsAtEndOfFile: true) {
            pread($0, $1, $2, $3)
        }
    }

    /// `pwrite(2)` of one range to the file `fd` from `offset`. Returns the bytes
    /// written (all of them, or an error).
    public func writeFile(_ fd: Int32, offset: UInt64, from range: GuestRange) throws -> UInt64 {
        let host = try readableHost(range.start, length: range.length)
        // SAFETY: readableHost() proved the range lies inside a segment mapping.
        return try transfer(fd, host, Int(range.length), offset: offset, operation: "pwrite", stopsAtEndOfFile: false) {
            pwrite($0, $1, $2, $3)
        }
    }

    /// Runs `call` over one host buffer, resuming after short transfers and EINTR, as
    /// the vector form does.
    private func transfer(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ length: Int, offset: UInt64, operation: String,
                          stopsAtEndOfFile: Bool, _ call: (Int32, UnsafeMutableRawPointer, Int, off_t) -> Int) throws -> UInt64 {
        var done = 0
        while done < length {
            let (position, overflow) = offset.addingReportingOverflow(UInt64(done))
            guard !overflow, position <= UInt64(Int64.max) else { throw GuestMemoryError.system(operation: operation, errno: EINVAL) }
            // SAFETY: done < length, so the pointer and the count stay inside the checked range.
            let n = call(fd, buffer + done, length - done, off_t(position))
            if n < 0 {
                if errno == EINTR { continue }
                throw GuestMemoryError.system(operation: operation, errno: errno)
            }
            if n == 0 {
                if stopsAtEndOfFile { break }
                throw GuestMemoryError.system(operation: operation, errno: EIO)
            }
            done += n
        }
        return UInt64(done)
    }

    /// Fills `range` with bytes from `getrandom(2)` (the kernel's CSPRNG, never blocking
    /// once it is seeded). Returns the bytes written.
    public func fillRandom(_ range: GuestRange) throws -> UInt64 {
        guard range.length > 0 else { return 0 }
        let (segment, offset) = try resolve(range.start, length: range.length)
        guard !segment.readOnly else { throw GuestMemoryError.readOnly(address: range.start.raw, segment: segment.name) }
        noteWrite(segment, offset, Int(range.length))   // before: a failure part-way has changed pages too
        var done: UInt64 = 0
        while done < range.length {
            // SAFETY: resolve() proved [offset, offset + length) lies inside the segment mapping.
            let n = ckvm_getrandom(segment.host + offset + Int(done), Int(range.length - done), 0)
            if n < 0 {
                if errno == EINTR { continue }
                throw GuestMemoryError.system(operation: "getrandom", errno: errno)
            }
            done += UInt64(n)
        }
        return done
    }

    /// The host iovecs of `ranges`, each checked to lie inside one segment (and to be
    /// writable when the kernel will write into it).
    func iovecs(_ ranges: [GuestRange], forWriting: Bool) throws -> [iovec] {
        var vectors: [iovec] = []
        vectors.reserveCapacity(ranges.count)
        for range in ranges where range.length > 0 {
            let (segment, offset) = try resolve(range.start, length: range.length)
            if forWriting && segment.readOnly {
                throw GuestMemoryError.readOnly(address: range.start.raw, segment: segment.name)
            }
            // SAFETY: resolve() proved [offset, offset + length) lies inside the segment mapping.
            vectors.append(iovec(iov_base: segment.host + offset, iov_len: Int(range.length)))
            // The kernel may write any of it (a short read writes less, never outside).
            if forWriting { noteWrite(segment, offset, Int(range.length)) }
        }
        return vectors
    }

    /// Runs `call` over `vectors` at `offset`, resuming after short transfers and EINTR,
    /// at most `maxIOVecs` vectors at a time. Stops early only at end of file (a read
    /// returning 0); a write that makes no progress is an error.
    private func transfer(_ fd: Int32, _ vectors: [iovec], offset: UInt64, operation: String,
                          _ call: (Int32, UnsafePointer<iovec>, Int32, off_t) -> Int) throws -> UInt64 {
        guard offset <= UInt64(Int64.max) else { throw GuestMemoryError.system(operation: operation, errno: EINVAL) }
        var pending = vectors
        var index = 0
        var total: UInt64 = 0
        while index < pending.count {
            let count = min(pending.count - index, Self.maxIOVecs)
            let (position, overflow) = offset.addingReportingOverflow(total)
            guard !overflow, position <= UInt64(Int64.max) else { throw GuestMemoryError.system(operation: operation, errno: EINVAL) }
            // SAFETY: the vectors point into checked guest ranges; `count` stays inside the array.
            let n = pending.withUnsafeBufferPointer { buffer -> Int in
                guard let base = buffer.baseAddress else { return 0 }
                return call(fd, base + index, Int32(count), off_t(position))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw GuestMemoryError.system(operation: operation, errno: errno)
            }
            if n == 0 {
                if operation == "preadv" { break }   // end of file
                throw GuestMemoryError.system(operation: operation, errno: EIO)
            }
            total += UInt64(n)
            // Skip the vectors this call finished; trim the one it stopped inside.
            var left = n
            while index < pending.count, left >= pending[index].iov_len {
                left -= pending[index].iov_len
                index += 1
            }
            if left > 0, index < pending.count {
                // SAFETY: `left` is less than this vector's length, so the new base stays inside it.
                pending[index].iov_base = pending[index].iov_base.map { $0 + left }
                pending[index].iov_len -= left
            }
        }
        return total
    }
}
