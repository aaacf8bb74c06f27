import GuestMemory

/// Why an image could not be loaded. Every case says what is wrong with the input;
/// a malformed or hostile image gets one of these, never a crash.
public enum BootError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file ends before a structure it declares (`what` says which).
    case truncated(String)
    /// A magic number, class, machine or version the loader does not accept.
    case badFormat(String)
    /// No PVH entry note (`XEN_ELFNOTE_PHYS32_ENTRY`) in the image.
    case missingPVHNote
    /// A segment that does not fit in guest RAM (outside it, in the MMIO hole, too large).
    case segmentOutsideRAM(index: Int, address: UInt64, size: UInt64)
    /// The entry point is not inside a loaded RAM region.
    case entryOutsideRAM(UInt64)
    /// The command line is longer than the boot protocol allows.
    case commandLineTooLong(length: Int, limit: Int)
    /// The initrd does not fit anywhere in guest RAM.
    case initrdTooLarge(size: Int)
    /// An absurd size or count in a header.
    case implausible(String)
    /// Two things the loader must place overlap (e.g. a kernel segment and boot data).
    case overlap(String)
    /// A guest-memory access the loader made was refused.
    case memory(GuestMemoryError)
    /// The kernel needs `size` bytes of RAM from `address` (a bzImage's init_size).
    case notEnoughRAM(address: UInt64, size: UInt64)

    public var description: String {
        switch self {
        case .truncated(let what): return "image is truncated: \(what) extends past the end of the file"
        case .badFormat(let why): return "not a loadable image: \(why)"
        case .missingPVHNote: return "ELF image has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); it cannot be booted with PVH"
        case .segmentOutsideRAM(let i, let a, let s):
            return "program segment \(i) at 0x\(String(a, radix: 16)) (0x\(String(s, radix: 16)) bytes) is not inside guest RAM"
        case .entryOutsideRAM(let e): return "entry point 0x\(String(e, radix: 16)) is not inside loaded guest RAM"
        case .commandLineTooLong(let l, let max): return "command line is \(l) bytes; the limit is \(max)"
        case .initrdTooLarge(let s): return "initrd of \(s) bytes does not fit in guest RAM"
        case .implausible(let why): return "image header is implausible: \(why)"
        case .overlap(let what): return "cannot place \(what)"
        case .memory(let e): return "loading into guest memory failed: \(e)"
        case .notEnoughRAM(let a, let size):
            let mib = (a + size + (1 << 20) - 1) >> 20
            return "the kernel needs 0x\(String(size, radix: 16)) bytes of RAM (init_size) from 0x\(String(a, radix: 16)); give the guest at least \(mib) MiB"
        }
    }
}

/// Little-endian reads from an untrusted byte array, each bounds-checked.
struct ByteReader {
    let bytes: [UInt8]

    func u8(_ at: Int, _ what: String) throws -> UInt8 {
        guard at >= 0, at < bytes.count else { throw BootError.truncated(what) }
        return bytes[at]
    }

    func u16(_ at: Int, _ what: String) throws -> UInt16 {
        try check(at, 2, what)
        return UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8
    }

    func u32(_ at: Int, _ what: String) throws -> UInt32 {
        try check(at, 4, what)
        return (0 ..< 4).reduce(0) { $0 | UInt32(bytes[at + $1]) << (8 * $1) }
    }

    func u64(_ at: Int, _ what: String) throws -> UInt64 {
        try check(at, 8, what)
        return (0 ..< 8).reduce(0) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) }
    }

    /// Bytes `[offset, offset + count)`, where both come from the file.
    func slice(_ offset: UInt64, _ count: UInt64, _ what: String) throws -> ArraySlice<UInt8> {
        let (end, overflow) = offset.addingReportingOverflow(count)
        guard !overflow, end <= UInt64(bytes.count) else { throw BootError.truncated(what) }
        return bytes[Int(offset) ..< Int(end)]
    }

    func check(_ at: Int, _ count: Int, _ what: String) throws {
        guard at >= 0, count <= bytes.count, at <= bytes.count - count else { throw BootError.truncated(what) }
    }
}

/// Little-endian serialisation for boot structures.
struct ByteWriter {
    private(set) var bytes: [UInt8]
    init(size: Int) { bytes = [UInt8](repeating: 0, count: size) }

    mutating func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        for i in 0 ..< MemoryLayout<T>.size {
            bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i))
        }
    }

    mutating func put(_ data: [UInt8], at offset: Int) {
        bytes.replaceSubrange(offset ..< offset + data.count, with: data)
    }
}

extension BootError {
    /// Runs a guest-memory operation, turning its error into `BootError.memory`.
    static func memory<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as GuestMemoryError { throw BootError.memory(e) }
    }
}
