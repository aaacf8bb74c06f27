/// Writes a section's payload: little-endian integers, and byte strings and strings as a
/// u32 length followed by the bytes.
public struct SnapshotEncoder: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func bool(_ v: Bool) { bytes.append(v ? 1 : 0) }
    public mutating func u16(_ v: UInt16) { for i in 0 ..< 2 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
    public mutating func u32(_ v: UInt32) { for i in 0 ..< 4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
    public mutating func u64(_ v: UInt64) { for i in 0 ..< 8 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
    /// A count of elements that follow (u32).
    public mutating func count(_ n: Int) { u32(UInt32(truncatingIfNeeded: n)) }
    /// Bytes of a known, fixed size (no length).
    public mutating func raw(_ v: [UInt8]) { bytes += v }
    /// A length-prefixed byte string.
    public mutating func data(_ v: [UInt8]) { count(v.count); bytes += v }
    public mutating func string(_ v: String) { data(Array(v.utf8)) }
}

/// Reads a section's payload. Nothing read from the file is trusted: every length and
/// count is checked against the bytes that are actually left (and a limit of its own)
/// before anything is allocated, so a damaged or hostile section ends in an error that
/// names it, never in a trap or a huge allocation.
public struct SnapshotDecoder: Sendable {
    public let section: String
    private let bytes: [UInt8]
    private var position: Int
    private let end: Int

    public init(_ bytes: [UInt8], section: String) {
        self.bytes = bytes
        self.section = section
        position = 0
        end = bytes.count
    }

    /// Bytes not read yet.
    public var remaining: Int { end - position }

    /// A malformed-section error for this section.
    public func malformed(_ why: String) -> SnapshotError { .malformed(section: section, why) }

    /// `what` is made only for the error: a restore reads thousands of fields.
    private mutating func take(_ n: Int, _ what: @autoclosure () -> String) throws(SnapshotError) -> Range<Int> {
        guard n >= 0, n <= remaining else { throw malformed("\(what()) needs \(n) bytes, \(remaining) are left") }
        defer { position += n }
        return position ..< position + n
    }

    private mutating func integer<T: FixedWidthInteger & UnsignedInteger>(_ type: T.Type) throws(SnapshotError) -> T {
        let r = try take(MemoryLayout<T>.size, "a \(MemoryLayout<T>.size * 8)-bit field")
        var v: T = 0
        for i in r.reversed() { v = v << 8 | T(bytes[i]) }
        return v
    }

    public mutating func u8() throws(SnapshotError) -> UInt8 { try integer(UInt8.self) }
    public mutating func u16() throws(SnapshotError) -> UInt16 { try integer(UInt16.self) }
    public mutating func u32() throws(SnapshotError) -> UInt32 { try integer(UInt32.self) }
    public mutating func u64() throws(SnapshotError) -> UInt64 { try integer(UInt64.self) }

    public mutating func bool() throws(SnapshotError) -> Bool {
        switch try u8() {
        case 0: return false
        case 1: return true
        case let v: throw malformed("a boolean is \(v)")
        }
    }

    /// A count of elements, each taking at least `elementSize` bytes, at most `max`: a
    /// count the remaining bytes cannot hold is refused before the caller allocates.
    public mutating func count(max: Int, elementSize: Int, _ what: String) throws(SnapshotError) -> Int {
        let n = Int(try u32())
        guard n <= max else { throw malformed("\(n) \(what); at most \(max)") }
        guard n <= remaining / Swift.max(elementSize, 1) else {
            throw malformed("\(n) \(what) cannot fit in the \(remaining) bytes left")
        }
        return n
    }

    /// Exactly `n` bytes.
    public mutating func raw(_ n: Int, _ what: String) throws(SnapshotError) -> [UInt8] {
        Array(bytes[try take(n, what)])
    }

    /// A length-prefixed byte string of at most `maxLength` bytes.
    public mutating func data(maxLength: Int, _ what: String) throws(SnapshotError) -> [UInt8] {
        let n = Int(try u32())
        guard n <= maxLength else { throw malformed("\(what) of \(n) bytes; at most \(maxLength)") }
        return try raw(n, what)
    }

    /// A length-prefixed UTF-8 string of at most `maxLength` bytes.
    public mutating func string(maxLength: Int, _ what: String) throws(SnapshotError) -> String {
        let raw = try data(maxLength: maxLength, what)
        guard let s = String(validating: raw, as: UTF8.self) else { throw malformed("\(what) is not UTF-8") }
        return s
    }

    /// Ends decoding: every byte of the payload must have been read.
    public func finish() throws(SnapshotError) {
        guard remaining == 0 else { throw malformed("\(remaining) bytes left over") }
    }
}
