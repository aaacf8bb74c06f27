/// The byte encoding of worker messages: little-endian integers, and strings and byte
/// strings as a u32 length followed by the bytes. Hand-written (no Codable, no
/// Foundation) so that a worker process stays small.
public struct WireWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func bool(_ v: Bool) { bytes.append(v ? 1 : 0) }
    public mutating func u32(_ v: UInt32) { for i in 0 ..< 4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
    public mutating func u64(_ v: UInt64) { for i in 0 ..< 8 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
    public mutating func i32(_ v: Int32) { u32(UInt32(bitPattern: v)) }
    public mutating func data(_ v: [UInt8]) { u32(UInt32(truncatingIfNeeded: v.count)); bytes += v }
    public mutating func string(_ v: String) { data(Array(v.utf8)) }
}

/// Reads what `WireWriter` wrote; every read is bounds checked and a short or malformed
/// message throws instead of trapping.
public struct WireReader: Sendable {
    private let bytes: [UInt8]
    private var position: Int

    public init(_ bytes: [UInt8], from start: Int = 0) {
        self.bytes = bytes
        self.position = start
    }

    public var isAtEnd: Bool { position == bytes.count }

    private mutating func take(_ count: Int) throws -> ArraySlice<UInt8> {
        guard count >= 0, bytes.count - position >= count else { throw WireError.truncated }
        defer { position += count }
        return bytes[position ..< position + count]
    }

    public mutating func u8() throws -> UInt8 { try take(1).first ?? 0 }
    public mutating func bool() throws -> Bool {
        switch try u8() {
        case 0: return false
        case 1: return true
        default: throw WireError.malformed("boolean")
        }
    }
    public mutating func u32() throws -> UInt32 {
        try take(4).reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }
    public mutating func u64() throws -> UInt64 {
        try take(8).reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }
    public mutating func i32() throws -> Int32 { Int32(bitPattern: try u32()) }
    public mutating func data() throws -> [UInt8] {
        let count = try u32()
        guard count <= WorkerFrame.maxPayload else { throw WireError.malformed("length \(count)") }
        return Array(try take(Int(count)))
    }
    public mutating func string() throws -> String { String(decoding: try data(), as: UTF8.self) }
}

public enum WireError: Error, Equatable, CustomStringConvertible {
    case truncated
    case malformed(String)
    case unknownTag(UInt8)

    public var description: String {
        switch self {
        case .truncated: return "worker message truncated"
        case .malformed(let what): return "malformed worker message: \(what)"
        case .unknownTag(let tag): return "unknown worker message tag \(tag)"
        }
    }
}

/// Framing on the daemon ↔ worker stream socket: a u32 little-endian payload length,
/// then the payload (a tag byte and the message's fields).
public enum WorkerFrame {
    /// Largest payload either side accepts; a bigger length means a broken peer.
    public static let maxPayload: UInt32 = 4 << 20
    public static let headerSize = 4

    /// The frame for `payload`.
    public static func frame(_ payload: [UInt8]) -> [UInt8] {
        var w = WireWriter()
        w.u32(UInt32(truncatingIfNeeded: payload.count))
        return w.bytes + payload
    }

    /// Decodes the length header.
    public static func payloadLength(_ header: [UInt8]) throws -> Int {
        var r = WireReader(header)
        let length = try r.u32()
        guard length <= maxPayload else { throw WireError.malformed("frame of \(length) bytes") }
        return Int(length)
    }
}
