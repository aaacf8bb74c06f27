import CSys
#if canImport(Glibc)
import Glibc
#endif

/// Positioned reads and writes between files and guest memory, a batch per system call:
/// an io_uring (io_uring_setup(2), IORING_OP_READ / IORING_OP_WRITE) whose whole batch is
/// submitted and waited for with one io_uring_enter(2), the operations running
/// concurrently in the kernel. Measured here (64 random requests a batch): I/O that
/// reaches the disk gains (O_DIRECT 4 KiB reads and writes ~0.25 of the time of one
/// `pread`/`pwrite` after another); reads the page cache answers cost ~5% more than
/// `pread`; buffered writes on ext4 cannot complete inline, go to a kernel worker thread
/// and cost 1.84x `pwrite`. Block devices therefore use it for O_DIRECT disks.
///
/// The ring can do nothing else: it is made disabled, `files` are registered, and
/// IORING_REGISTER_RESTRICTIONS allows only IORING_OP_READ (and IORING_OP_WRITE when made
/// with `writes`), only on registered files (IOSQE_FIXED_FILE), and no registration
/// after it is enabled. Operations on a ring are not seen by seccomp; with these
/// restrictions a sandboxed process holding one can do nothing its filter would refuse
/// (it may already pread and pwrite).
///
/// Every guest range is checked with the same bounds checks as `readFile`/`writeFile`
/// before it is queued. Not thread-safe: one user at a time (a block device's queue
/// lock). Each batch is queued, then `submitAndWait`, then every completion taken
/// with `nextCompletion` before the next batch.
public final class FileRing: @unchecked Sendable {
    // @unchecked: the ring's state is changed only by its one user at a time (see above).
    private let ring: OpaquePointer
    /// The ring's descriptor, which a sandbox that closes stray descriptors must keep.
    public let descriptor: Int32
    /// Whether the ring may write (the kernel refuses IORING_OP_WRITE otherwise: -EACCES).
    public let allowsWrites: Bool
    /// Operations one batch holds.
    public let capacity: Int
    /// Set when waiting for a submitted batch failed: its operations may still complete
    /// later, so the ring takes no more, and a caller must not redo or reuse what the
    /// unfinished ones were given (a block device fails those requests).
    public private(set) var isBroken = false

    /// A ring of `entries` operations on `files` (referred to by their index in it) that
    /// reads, and writes when `writes`. Throws where the host has no io_uring or forbids
    /// it (ENOSYS, EPERM, kernel.io_uring_disabled).
    public init(files: [Int32], entries: Int, writes: Bool) throws(GuestMemoryError) {
        var error: Int32 = 0
        let made = files.withUnsafeBufferPointer { fds in
            csys_ring_open(UInt32(clamping: entries), fds.baseAddress, UInt32(fds.count), writes ? 1 : 0, &error)
        }
        guard let made else { throw GuestMemoryError.system(operation: "io_uring_setup", errno: error) }
        ring = made
        allowsWrites = writes
        descriptor = csys_ring_fd(made)
        capacity = Int(csys_ring_capacity(made))
    }

    deinit { csys_ring_close(ring) }

    /// Queues a read of file number `file` from byte `offset` into `range` of `memory`,
    /// to complete with `tag`. False when the batch is full, the ring broken, or the
    /// range longer than one operation carries (4 GiB). Throws when the range is not
    /// inside one writable segment. The range's pages are marked written (the write log)
    /// now, as `readFile` does.
    public func queueRead(file: Int, offset: UInt64, into range: GuestRange, memory: GuestMemory, tag: Int) throws -> Bool {
        guard !isBroken, range.length <= UInt64(UInt32.max) else { return false }
        guard let at = memory.hostLocation(range.start, length: range.length, writing: true) else {
            let (segment, _) = try memory.resolve(range.start, length: range.length)
            throw GuestMemoryError.readOnly(address: range.start.raw, segment: segment.name)
        }
        // SAFETY: hostLocation() proved the range lies inside a writable segment mapping;
        // the kernel writes at most `range.length` bytes there.
        guard csys_ring_queue(ring, 0, UInt32(file), at.host, UInt32(range.length), offset, UInt64(tag)) == 0 else { return false }
        memory.writeLog.mark(segment: at.segment, offset: at.offset, length: Int(range.length))
        return true
    }

    /// Queues a write of `range` of `memory` to file number `file` at byte `offset`, to
    /// complete with `tag` (with -EACCES on a ring made without `writes`). False as for
    /// `queueRead`; throws when the range is not inside one segment.
    public func queueWrite(file: Int, offset: UInt64, from range: GuestRange, memory: GuestMemory, tag: Int) throws -> Bool {
        guard !isBroken, range.length <= UInt64(UInt32.max) else { return false }
        let host = try memory.readableHost(range.start, length: range.length)
        // SAFETY: readableHost() proved the range lies inside a segment mapping; the
        // kernel reads at most `range.length` bytes there.
        return csys_ring_queue(ring, 1, UInt32(file), host, UInt32(range.length), offset, UInt64(tag)) == 0
    }

    /// Submits what is queued and waits for all of it. Returns how many operations were
    /// submitted: the rest never ran and have no completion. Throws (and the ring is
    /// broken) when waiting failed: the operations without a completion may be in flight.
    public func submitAndWait() throws(GuestMemoryError) -> Int {
        let n = csys_ring_submit_and_wait(ring)
        guard n >= 0 else {
            isBroken = true
            throw GuestMemoryError.system(operation: "io_uring_enter", errno: -n)
        }
        return Int(n)
    }

    /// The next completion of the batch: its tag, and the bytes transferred or -errno.
    public func nextCompletion() -> (tag: Int, result: Int32)? {
        var tag: UInt64 = 0
        var result: Int32 = 0
        guard csys_ring_complete(ring, &tag, &result) == 1 else { return nil }
        return (Int(truncatingIfNeeded: tag), result)
    }
}
