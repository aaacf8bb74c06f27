import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// A named piece of guest-physical memory backed by a memfd and mapped into this process
/// between two PROT_NONE guard regions.
///
/// The guards make an off-by-some access from host code fault instead of reading or
/// corrupting a neighbouring allocation (the guard ranges of FreeBSD's libvmmapi).
/// The memfd's size is sealed, so nobody holding the descriptor can shrink it under a
/// mapping and turn later accesses into SIGBUS.
public final class MemorySegment: @unchecked Sendable {
    // @unchecked: all stored properties are immutable; the bytes behind `host` are guest
    // memory, shared with the guest by design, and accessed only through bounds checks.

    /// What the segment is for.
    public enum Kind: String, Sendable {
        /// Ordinary RAM the guest sees in its memory map.
        case systemRAM
        /// Device memory such as a boot ROM or a framebuffer.
        case deviceMemory
    }

    public let name: String
    public let kind: Kind
    /// Where the guest sees it.
    public let range: GuestRange
    /// Whether the guest (and device DMA) may only read it; loaders may still fill it.
    public let readOnly: Bool
    /// The backing memfd (or, for a copy-on-write segment, the file mapped), owned by
    /// this segment.
    public let memfd: Int32
    /// How the segment is backed.
    public enum Backing: Equatable, Sendable {
        /// A memfd mapped shared: the memfd holds the guest's memory (the usual case).
        case sharedMemfd
        /// A file mapped copy-on-write from `offset`: the file holds the memory as it was
        /// (a snapshot), the pages the guest wrote since are this process's own.
        case privateFile(offset: UInt64)
    }
    public let backing: Backing
    let host: UnsafeMutableRawPointer
    let reservation: UnsafeMutableRawPointer
    let reservationSize: Int

    /// Size of each PROT_NONE guard region around the mapping.
    public static let guardSize = 2 << 20
    /// Largest segment accepted (1 TiB): a bound on what a request can make us reserve.
    public static let maxSize: UInt64 = 1 << 40
    static let pageSize: UInt64 = 4096

    public var guestBase: GuestAddress { range.start }
    public var size: UInt64 { range.length }

    /// The host virtual address of the first byte, for `KVM_SET_USER_MEMORY_REGION`.
    public var hostAddress: UInt { UInt(bitPattern: host) }

    /// Creates a zero-filled segment with a new memfd.
    public convenience init(name: String, kind: Kind = .systemRAM, guestBase: GuestAddress,
                            size: UInt64, readOnly: Bool = false) throws {
        try Self.validate(name: name, guestBase: guestBase, size: size)
        let fd = ckvm_memfd_create("vmm:" + name, CKVM_MFD_CLOEXEC | CKVM_MFD_ALLOW_SEALING)
        guard fd >= 0 else { throw GuestMemoryError.system(operation: "memfd_create", errno: errno) }
        guard ftruncate(fd, off_t(size)) == 0 else {
            let e = errno
            close(fd)
            throw GuestMemoryError.system(operation: "ftruncate(memfd)", errno: e)
        }
        _ = ckvm_fcntl_int(fd, CKVM_F_ADD_SEALS, CKVM_F_SEAL_SHRINK | CKVM_F_SEAL_GROW)
        try self.init(name: name, kind: kind, guestBase: guestBase, size: size,
                      readOnly: readOnly, adoptingMemfd: fd)
    }

    /// Maps an existing memfd (e.g. one a supervisor created and handed over), taking
    /// ownership of the descriptor. Fails if the memfd is smaller than `size`.
    public convenience init(name: String, kind: Kind = .systemRAM, guestBase: GuestAddress, size: UInt64,
                            readOnly: Bool = false, adoptingMemfd fd: Int32) throws {
        try self.init(name: name, kind: kind, guestBase: guestBase, size: size, readOnly: readOnly,
                      file: fd, offset: 0, backing: .sharedMemfd)
    }

    /// Maps `size` bytes of the file `fd` from `offset` copy-on-write (`MAP_PRIVATE`), taking
    /// ownership of the descriptor: what a snapshot restore does with its memory file.
    /// Reads come from the file's pages in the page cache, which every mapping of the file
    /// shares; the first write to a page gives this mapping its own copy, and the file is
    /// never written. Fails if the file ends before `offset + size`.
    public convenience init(name: String, kind: Kind = .systemRAM, guestBase: GuestAddress, size: UInt64,
                            readOnly: Bool = false, privateFile fd: Int32, offset: UInt64) throws {
        try self.init(name: name, kind: kind, guestBase: guestBase, size: size, readOnly: readOnly,
                      file: fd, offset: offset, backing: .privateFile(offset: offset))
    }

    private init(name: String, kind: Kind, guestBase: GuestAddress, size: UInt64, readOnly: Bool,
                 file fd: Int32, offset: UInt64, backing: Backing) throws {
        do {
            try Self.validate(name: name, guestBase: guestBase, size: size)
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw GuestMemoryError.system(operation: "fstat(\(name))", errno: errno) }
            let (end, overflow) = offset.addingReportingOverflow(size)
            guard offset % Self.pageSize == 0, !overflow, end <= UInt64(Int64.max), UInt64(st.st_size) >= end else {
                throw GuestMemoryError.invalidSegment("\(name): the file holds \(st.st_size) bytes, the segment needs \(size) from offset \(offset)")
            }
        } catch {
            close(fd)
            throw error
        }
        let total = Int(size) + 2 * Self.guardSize
        // SAFETY: reserve address space with no access; the middle is replaced below.
        let reserved = mmap(nil, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let reserved, reserved != MAP_FAILED else {
            let e = errno
            close(fd)
            throw GuestMemoryError.system(operation: "mmap(reserve)", errno: e)
        }
        let sharing = backing == .sharedMemfd ? MAP_SHARED : MAP_PRIVATE
        // SAFETY: MAP_FIXED inside our own reservation, leaving guardSize of PROT_NONE on each side.
        let data = mmap(reserved + Self.guardSize, Int(size), PROT_READ | PROT_WRITE,
                        sharing | MAP_FIXED | MAP_NORESERVE, fd, off_t(offset))
        guard let data, data != MAP_FAILED else {
            let e = errno
            munmap(reserved, total)
            close(fd)
            throw GuestMemoryError.system(operation: backing == .sharedMemfd ? "mmap(memfd)" : "mmap(MAP_PRIVATE)", errno: e)
        }
        self.name = name
        self.kind = kind
        // validate() proved base + size does not wrap.
        self.range = GuestRange(start: guestBase, length: size)!
        self.readOnly = readOnly
        self.memfd = fd
        self.backing = backing
        self.host = data
        self.reservation = reserved
        self.reservationSize = total
    }

    deinit {
        // SAFETY: unmaps exactly the reservation made in init (guards and data).
        munmap(reservation, reservationSize)
        close(memfd)
    }

    static func validate(name: String, guestBase: GuestAddress, size: UInt64) throws {
        guard size > 0, size % pageSize == 0, guestBase.isAligned(to: pageSize) else {
            throw GuestMemoryError.invalidSegment("\(name): base \(guestBase) and size \(size) must be non-zero multiples of 4 KiB")
        }
        guard size <= maxSize else {
            throw GuestMemoryError.invalidSegment("\(name): \(size) bytes is more than the \(maxSize >> 30) GiB limit")
        }
        guard GuestRange(start: guestBase, length: size) != nil else {
            throw GuestMemoryError.overflow(address: guestBase.raw, length: size)
        }
    }

    /// Gives up physical pages (`madvise(MADV_REMOVE)` on the shared memfd): the range
    /// reads as zeros afterwards. Used to scrub memory, e.g. before reuse by another VM.
    /// Not for a copy-on-write segment (the call fails with EINVAL).
    public func discard() throws {
        // SAFETY: host/size describe exactly this segment's data mapping.
        guard madvise(host, Int(size), MADV_REMOVE) == 0 else {
            throw GuestMemoryError.system(operation: "madvise(MADV_REMOVE)", errno: errno)
        }
    }
}
