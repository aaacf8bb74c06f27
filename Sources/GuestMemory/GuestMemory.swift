#if canImport(Glibc)
import Glibc
#endif

/// The guest-physical address space: a set of non-overlapping `MemorySegment`s.
///
/// Every access goes through `resolve`, which refuses a range that wraps, or that is not
/// entirely inside one segment. A guest-controlled (address, length) pair can therefore
/// never reach host memory outside its segment.
public final class GuestMemory: @unchecked Sendable {
    // @unchecked: `segments` is immutable after init; the bytes are guest memory, which the
    // guest itself writes concurrently, so readers must treat them as untrusted anyway.

    /// Segments sorted by guest address.
    public let segments: [MemorySegment]
    /// The pages the VMM wrote (for diff snapshots); off unless enabled.
    public let writeLog: WriteLog

    /// The segments' bounds as plain values, for the integer accessors devices call on
    /// every ring access: walking `segments` retains and releases each class reference,
    /// which costs more than the access itself.
    private struct Window {
        let base: UInt64
        let size: UInt64
        let host: UnsafeMutableRawPointer
        let readOnly: Bool
    }
    private let windows: [Window]

    /// Start of the 32-bit MMIO hole (3 GiB): LAPIC, IOAPIC, PCI windows, firmware.
    public static let mmioHoleStart: UInt64 = 3 << 30
    /// End of the 32-bit MMIO hole (4 GiB); RAM above the hole resumes here.
    public static let mmioHoleEnd: UInt64 = 4 << 30

    public init(segments: [MemorySegment]) throws {
        let sorted = segments.sorted { $0.guestBase < $1.guestBase }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.range.overlaps(b.range) {
            throw GuestMemoryError.overlap(a.name, b.name)
        }
        self.segments = sorted
        windows = sorted.map { Window(base: $0.guestBase.raw, size: $0.size, host: $0.host, readOnly: $0.readOnly) }
        writeLog = WriteLog(segments: sorted)
    }

    /// The host address of `[address, address + length)` when it lies inside one segment
    /// (and that segment is writable, when `writing`), with the segment's index and the
    /// offset in it (for the write log); nil otherwise, and the caller asks `resolve`
    /// for the error.
    @inline(__always)
    func hostLocation(_ address: GuestAddress, length: UInt64, writing: Bool)
        -> (host: UnsafeMutableRawPointer, segment: Int, offset: Int)? {
        let a = address.raw
        for (i, w) in windows.enumerated() where a >= w.base {
            let offset = a &- w.base
            guard offset < w.size, length <= w.size &- offset else { continue }
            if writing && w.readOnly { return nil }
            // SAFETY: offset + length <= size, so the pointer and the access stay inside the mapping.
            return (w.host + Int(offset), i, Int(offset))
        }
        return nil
    }

    /// Where `ramSize` bytes of system RAM go: below the MMIO hole first, the rest from 4 GiB.
    public static func ramLayout(size ramSize: UInt64) -> [GuestRange] {
        let low = min(ramSize, mmioHoleStart)
        var layout: [GuestRange] = []
        if low > 0, let r = GuestRange(start: GuestAddress(0), length: low) { layout.append(r) }
        if ramSize > low, let r = GuestRange(start: GuestAddress(mmioHoleEnd), length: ramSize - low) {
            layout.append(r)
        }
        return layout
    }

    /// System RAM of `ramSize` bytes (a multiple of 4 KiB), split around the MMIO hole,
    /// plus any `extra` segments (e.g. a ROM).
    public static func create(ramSize: UInt64, extra: [MemorySegment] = []) throws -> GuestMemory {
        guard ramSize > 0, ramSize <= MemorySegment.maxSize else {
            throw GuestMemoryError.invalidSegment("RAM size \(ramSize) out of range")
        }
        let ram = try ramLayout(size: ramSize).enumerated().map { i, r in
            try MemorySegment(name: i == 0 ? "ram-low" : "ram-high", kind: .systemRAM,
                              guestBase: r.start, size: r.length)
        }
        return try GuestMemory(segments: ram + extra)
    }

    /// The system-RAM ranges (for memory maps handed to the guest).
    public var ramRanges: [GuestRange] { segments.filter { $0.kind == .systemRAM }.map(\.range) }

    /// Total bytes of system RAM.
    public var ramSize: UInt64 { ramRanges.reduce(0) { $0 + $1.length } }

    /// The segment holding all of `[address, address + length)` and the offset into it.
    public func resolve(_ address: GuestAddress, length: UInt64) throws -> (MemorySegment, Int) {
        // An empty access must still name an address inside a segment.
        guard let range = GuestRange(start: address, length: max(length, 1)) else {
            throw GuestMemoryError.overflow(address: address.raw, length: length)
        }
        for segment in segments where segment.range.contains(range) {
            // contains() proved offset + length <= segment size, which fits in Int.
            return (segment, Int(address.raw - segment.guestBase.raw))
        }
        throw GuestMemoryError.unmapped(address: address.raw, length: length)
    }

    /// Whether `[address, address + length)` lies inside one segment.
    public func contains(_ address: GuestAddress, length: UInt64) -> Bool {
        (try? resolve(address, length: length)) != nil
    }

    // MARK: - Byte access

    /// Copies `count` bytes starting at `address` out of guest memory.
    public func read(at address: GuestAddress, count: Int) throws -> [UInt8] {
        guard count >= 0 else { throw GuestMemoryError.unmapped(address: address.raw, length: 0) }
        let (segment, offset) = try resolve(address, length: UInt64(count))
        // SAFETY: resolve() proved [offset, offset + count) lies inside the segment mapping.
        return [UInt8](UnsafeRawBufferPointer(start: segment.host + offset, count: count))
    }

    /// Copies `bytes` into guest memory at `address`; refuses read-only segments.
    public func write(_ bytes: [UInt8], at address: GuestAddress) throws {
        try store(bytes, at: address, allowReadOnly: false)
    }

    /// Like `write`, but may fill read-only segments: for loaders placing a ROM or image.
    public func load(_ bytes: [UInt8], at address: GuestAddress) throws {
        try store(bytes, at: address, allowReadOnly: true)
    }

    private func store(_ bytes: [UInt8], at address: GuestAddress, allowReadOnly: Bool) throws {
        let (segment, offset) = try resolve(address, length: UInt64(bytes.count))
        guard allowReadOnly || !segment.readOnly else {
            throw GuestMemoryError.readOnly(address: address.raw, segment: segment.name)
        }
        bytes.withUnsafeBytes { src in
            // SAFETY: resolve() proved [offset, offset + count) lies inside the segment mapping.
            if let base = src.baseAddress { (segment.host + offset).copyMemory(from: base, byteCount: src.count) }
        }
        noteWrite(segment, offset, bytes.count)
    }

    /// Sets `count` bytes at `address` to `value`.
    public func fill(_ value: UInt8, at address: GuestAddress, count: UInt64, allowReadOnly: Bool = false) throws {
        let (segment, offset) = try resolve(address, length: count)
        guard allowReadOnly || !segment.readOnly else {
            throw GuestMemoryError.readOnly(address: address.raw, segment: segment.name)
        }
        // SAFETY: resolve() proved [offset, offset + count) lies inside the segment mapping.
        memset(segment.host + offset, Int32(value), Int(count))
        noteWrite(segment, offset, Int(count))
    }

    /// Copies `count` bytes inside guest memory; the ranges may overlap.
    public func copy(from source: GuestAddress, to destination: GuestAddress, count: UInt64) throws {
        let (src, srcOffset) = try resolve(source, length: count)
        let (dst, dstOffset) = try resolve(destination, length: count)
        guard !dst.readOnly else { throw GuestMemoryError.readOnly(address: destination.raw, segment: dst.name) }
        // SAFETY: both ranges were proved inside their segments; memmove handles overlap.
        memmove(dst.host + dstOffset, src.host + srcOffset, Int(count))
        noteWrite(dst, dstOffset, Int(count))
    }

    /// Reads two consecutive little-endian u64s (16 bytes) with one lookup: a virtqueue
    /// descriptor (address; length, flags, next) on every request.
    public func readWordPair(at address: GuestAddress) throws -> (UInt64, UInt64) {
        let host = try readableHost(address, length: 16)
        // SAFETY: readableHost() proved all 16 bytes lie inside a segment mapping.
        return (UInt64(littleEndian: host.loadUnaligned(as: UInt64.self)),
                UInt64(littleEndian: host.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
    }

    /// Where the `length` bytes at `address` are in this process, for reading: the fast
    /// lookup (`hostLocation`), else `resolve`, which makes the same check and throws its
    /// error. The pointer is valid for exactly those bytes.
    @inline(__always)
    func readableHost(_ address: GuestAddress, length: UInt64) throws -> UnsafeMutableRawPointer {
        if let at = hostLocation(address, length: length, writing: false) { return at.host }
        let (segment, offset) = try resolve(address, length: length)
        return segment.host + offset
    }

    /// Reads a little-endian integer. Specialised for the widths devices read on every
    /// request (ring indices, descriptors), so callers in other modules do not go
    /// through the unspecialised generic.
    @_specialize(exported: true, where T == UInt8)
    @_specialize(exported: true, where T == UInt16)
    @_specialize(exported: true, where T == UInt32)
    @_specialize(exported: true, where T == UInt64)
    public func readInteger<T: FixedWidthInteger>(_ type: T.Type = T.self, at address: GuestAddress) throws -> T {
        let host = try readableHost(address, length: UInt64(MemoryLayout<T>.size))
        // SAFETY: readableHost() proved the integer's bytes lie inside a segment mapping.
        return T(littleEndian: host.loadUnaligned(as: T.self))
    }

    /// Writes a little-endian integer; refuses read-only segments.
    @_specialize(exported: true, where T == UInt8)
    @_specialize(exported: true, where T == UInt16)
    @_specialize(exported: true, where T == UInt32)
    @_specialize(exported: true, where T == UInt64)
    public func writeInteger<T: FixedWidthInteger>(_ value: T, at address: GuestAddress) throws {
        if let at = hostLocation(address, length: UInt64(MemoryLayout<T>.size), writing: true) {
            // SAFETY: hostLocation() proved the integer's bytes lie inside a writable segment mapping.
            at.host.storeBytes(of: value.littleEndian, as: T.self)
            writeLog.mark(segment: at.segment, offset: at.offset, length: MemoryLayout<T>.size)
            return
        }
        let (segment, offset) = try resolve(address, length: UInt64(MemoryLayout<T>.size))
        guard !segment.readOnly else { throw GuestMemoryError.readOnly(address: address.raw, segment: segment.name) }
        // SAFETY: resolve() proved the integer's bytes lie inside the segment mapping.
        (segment.host + offset).storeBytes(of: value.littleEndian, as: T.self)
        noteWrite(segment, offset, MemoryLayout<T>.size)
    }

    /// Reads a NUL-terminated string of at most `maxLength` bytes (the terminator is not
    /// required when the limit is reached). Stops at the end of the segment.
    public func readCString(at address: GuestAddress, maxLength: Int) throws -> String {
        let (segment, offset) = try resolve(address, length: 1)
        let available = min(maxLength, Int(segment.size) - offset)
        // SAFETY: [offset, offset + available) lies inside the segment mapping.
        let bytes = UnsafeRawBufferPointer(start: segment.host + offset, count: available)
        return String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }
}
