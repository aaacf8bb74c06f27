import CKVM
import GuestMemory
#if canImport(Glibc)
import Glibc
#endif

/// The image behind a virtio-blk device: a raw file or block device, reached with
/// positioned scatter-gather I/O straight into guest memory.
public final class BlockBackend: Sendable {
    /// The descriptor, owned by the backend (closed with it).
    public let fd: Int32
    /// The image's size in bytes, fixed when the device was built.
    public let size: UInt64
    /// Whether the descriptor was opened with O_DIRECT (no host page cache).
    public let direct: Bool
    /// The io_uring an O_DIRECT disk batches its reads and writes on (the file is its
    /// registered file 0), nil otherwise: every request is then its own pread/pwrite.
    /// Measured here: where each request reaches the disk, a ring batch of 64 random
    /// 4 KiB requests takes ~0.25 of the time of 64 system calls; where the page cache
    /// answers, the ring costs ~5% more than pread (its own machinery outweighs the
    /// system calls it saves), and buffered writes on ext4 go to a kernel worker thread
    /// (1.84x pwrite). Made here, before a worker's sandbox, which allows io_uring_enter
    /// but not io_uring_setup; nil too when the caller asked for none or the host refuses
    /// io_uring.
    public let ring: FileRing?
    /// Why an O_DIRECT disk has no ring although one was asked for: the host's refusal
    /// (the machine logs it).
    public let ringUnavailable: String?

    /// Operations one ring batch holds: a virtio-blk queue's worth.
    static let ringEntries = 256

    /// Adopts `fd` (closed when the backend goes away, or here on failure). The size is
    /// where the file ends (lseek works for block devices too, whose st_size is 0).
    /// `ring`: batch an O_DIRECT disk's requests on an io_uring where the host has one.
    public init(fd: Int32, ring useRing: Bool = true) throws(BlockError) {
        let end = lseek(fd, 0, SEEK_END)
        guard end >= 0 else {
            let e = errno
            close(fd)
            throw BlockError(operation: "lseek", errno: e)
        }
        let flags = fcntl(fd, F_GETFL)
        self.fd = fd
        size = UInt64(end)
        direct = flags >= 0 && flags & CKVM_O_DIRECT != 0
        var ring: FileRing?
        var unavailable: String?
        if useRing && direct {
            let writable = flags & O_ACCMODE != O_RDONLY
            do { ring = try FileRing(files: [fd], entries: Self.ringEntries, writes: writable) } catch {
                unavailable = "\(error)"
            }
        }
        self.ring = ring
        ringUnavailable = unavailable
    }

    deinit { close(fd) }

    /// Opens `path` for a disk: read-write unless `readOnly`, with O_DIRECT when `direct`
    /// (and then batching on an io_uring when `ring` and the host has one).
    public static func open(path: String, readOnly: Bool, direct: Bool, ring: Bool = true) throws(BlockError) -> BlockBackend {
        let flags = (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC | (direct ? CKVM_O_DIRECT : 0)
        let fd = ckvm_open(path, flags)
        guard fd >= 0 else { throw BlockError(operation: "open \(path)", errno: errno) }
        return try BlockBackend(fd: fd, ring: ring)
    }

    /// Every descriptor the backend holds (the image, its ring): a sandbox keeps them.
    public var descriptors: [Int32] { [fd] + (ring.map { [$0.descriptor] } ?? []) }

    /// Reads into `ranges` from byte `offset`; returns the bytes read.
    func read(into ranges: [GuestRange], at offset: UInt64, memory: GuestMemory) throws -> UInt64 {
        try withBufferedFallback { try memory.readFile(fd, offset: offset, into: ranges) }
    }

    /// Reads into one range from byte `offset` (pread, no iovec array).
    func read(into range: GuestRange, at offset: UInt64, memory: GuestMemory) throws -> UInt64 {
        try withBufferedFallback { try memory.readFile(fd, offset: offset, into: range) }
    }

    /// Writes one range at byte `offset` (pwrite, no iovec array).
    func write(from range: GuestRange, at offset: UInt64, memory: GuestMemory) throws -> UInt64 {
        try withBufferedFallback { try memory.writeFile(fd, offset: offset, from: range) }
    }

    /// Writes `ranges` at byte `offset`; returns the bytes written.
    func write(from ranges: [GuestRange], at offset: UInt64, memory: GuestMemory) throws -> UInt64 {
        try withBufferedFallback { try memory.writeFile(fd, offset: offset, from: ranges) }
    }

    /// `fdatasync(2)`: once it returns, the data written so far survives a crash.
    func flush() throws(BlockError) {
        while fdatasync(fd) != 0 {
            guard errno == EINTR else { throw BlockError(operation: "fdatasync", errno: errno) }
        }
    }

    /// Makes `[offset, offset + length)` read as zeros: a hole punched when `unmap`
    /// (DISCARD, WRITE_ZEROES with VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP), otherwise
    /// FALLOC_FL_ZERO_RANGE; where the file system has neither, zeros are written.
    func zero(offset: UInt64, length: UInt64, unmap: Bool) throws(BlockError) {
        let mode = unmap ? CKVM_FALLOC_FL_PUNCH_HOLE | CKVM_FALLOC_FL_KEEP_SIZE : CKVM_FALLOC_FL_ZERO_RANGE | CKVM_FALLOC_FL_KEEP_SIZE
        var rc: Int32
        repeat { rc = ckvm_fallocate(fd, mode, Int64(offset), Int64(length)) } while rc != 0 && errno == EINTR
        if rc == 0 { return }
        guard errno == EOPNOTSUPP || errno == ENOTSUP || errno == EINVAL else {
            throw BlockError(operation: "fallocate", errno: errno)
        }
        try writeZeros(offset: offset, length: length)
    }

    private func writeZeros(offset: UInt64, length: UInt64) throws(BlockError) {
        let chunk = [UInt8](repeating: 0, count: 64 << 10)
        var done: UInt64 = 0
        while done < length {
            let n = pwrite(fd, chunk, Int(min(UInt64(chunk.count), length - done)), off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw BlockError(operation: "pwrite", errno: errno)
            }
            done += UInt64(n)
        }
    }

    /// O_DIRECT needs buffers, offsets and lengths aligned to the device's logical
    /// block; a guest buffer that is not gets EINVAL, and is then served through the
    /// page cache for that one request (the flag is restored after).
    private func withBufferedFallback(_ body: () throws -> UInt64) throws -> UInt64 {
        do {
            return try body()
        } catch GuestMemoryError.system(_, let e) where direct && e == EINVAL {
            let flags = fcntl(fd, F_GETFL)
            guard flags >= 0, fcntl(fd, F_SETFL, flags & ~CKVM_O_DIRECT) == 0 else { throw BlockError(operation: "fcntl", errno: errno) }
            defer { _ = fcntl(fd, F_SETFL, flags) }
            return try body()
        }
    }
}

/// A failed host call of a block backend, named with its errno.
public struct BlockError: Error, Equatable, Sendable, CustomStringConvertible {
    public let operation: String
    public let errno: Int32
    public init(operation: String, errno: Int32) { self.operation = operation; self.errno = errno }
    public var description: String { "\(operation) failed: \(String(cString: strerror(errno)))" }
}
