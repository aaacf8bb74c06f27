/// A small encoder for ACPI Machine Language (ACPI 6.5, 20 "ACPI Machine Language (AML)
/// Specification"): the objects a VMM's DSDT needs to describe fixed devices — scopes,
/// devices, named integers, strings, packages and resource-template buffers.
public indirect enum AML: Sendable, Equatable {
    /// DefName: `Name(path, value)`.
    case name(AMLName, AML)
    /// DefScope: `Scope(path) { ... }`.
    case scope(AMLName, [AML])
    /// DefDevice: `Device(path) { ... }`.
    case device(AMLName, [AML])
    /// DefPackage with up to 255 elements.
    case package([AML])
    /// The shortest of ZeroOp, OneOp, OnesOp and the Byte/Word/DWord/QWord constants.
    case integer(UInt64)
    /// A String constant (ASCII, no NUL inside).
    case string(String)
    /// DefBuffer with the bytes given.
    case buffer([UInt8])

    // Opcodes (20.3 "AML Byte Stream Byte Values").
    static let zeroOp: UInt8 = 0x00, oneOp: UInt8 = 0x01, onesOp: UInt8 = 0xFF
    static let nameOp: UInt8 = 0x08, bytePrefix: UInt8 = 0x0A, wordPrefix: UInt8 = 0x0B
    static let dwordPrefix: UInt8 = 0x0C, stringPrefix: UInt8 = 0x0D, qwordPrefix: UInt8 = 0x0E
    static let scopeOp: UInt8 = 0x10, bufferOp: UInt8 = 0x11, packageOp: UInt8 = 0x12
    static let extOpPrefix: UInt8 = 0x5B, deviceOp: UInt8 = 0x82

    /// The AML byte stream.
    public func encoded() throws -> [UInt8] {
        switch self {
        case .name(let path, let value):
            return [Self.nameOp] + path.encoded + (try value.encoded())
        case .scope(let path, let body):
            return [Self.scopeOp] + Self.withPackageLength(path.encoded + (try body.flatMap { try $0.encoded() }))
        case .device(let path, let body):
            return [Self.extOpPrefix, Self.deviceOp]
                + Self.withPackageLength(path.encoded + (try body.flatMap { try $0.encoded() }))
        case .package(let elements):
            guard elements.count <= 255 else { throw ACPIError.invalid("a package of \(elements.count) elements (at most 255)") }
            return [Self.packageOp] + Self.withPackageLength([UInt8(elements.count)] + (try elements.flatMap { try $0.encoded() }))
        case .integer(let v):
            switch v {
            case 0: return [Self.zeroOp]
            case 1: return [Self.oneOp]
            case .max: return [Self.onesOp]
            case ...0xFF: return [Self.bytePrefix, UInt8(v)]
            case ...0xFFFF: return [Self.wordPrefix] + Self.littleEndian(v, 2)
            case ...0xFFFF_FFFF: return [Self.dwordPrefix] + Self.littleEndian(v, 4)
            default: return [Self.qwordPrefix] + Self.littleEndian(v, 8)
            }
        case .string(let s):
            let bytes = Array(s.utf8)
            guard bytes.allSatisfy({ $0 > 0 && $0 < 0x80 }) else { throw ACPIError.invalid("string \"\(s)\" is not NUL-free ASCII") }
            return [Self.stringPrefix] + bytes + [0]
        case .buffer(let bytes):
            return [Self.bufferOp] + Self.withPackageLength((try AML.integer(UInt64(bytes.count)).encoded()) + bytes)
        }
    }

    /// A compressed EISA ID (`EisaId("PNP0501")`, 6.1.5 "_HID"): three letters of five
    /// bits and four hex digits, stored big-endian in a DWord.
    public static func eisaID(_ id: String) throws -> AML {
        let c = Array(id.utf8)
        guard c.count == 7, c[0 ..< 3].allSatisfy({ (0x41 ... 0x5A).contains($0) }),
              let product = UInt32(String(decoding: c[3...], as: UTF8.self), radix: 16) else {
            throw ACPIError.invalid("EISA ID \"\(id)\" is not three capital letters and four hex digits")
        }
        let value = UInt32(c[0] - 0x40) << 26 | UInt32(c[1] - 0x40) << 21 | UInt32(c[2] - 0x40) << 16 | product
        return .integer(UInt64(value.byteSwapped))
    }

    /// PkgLength (20.2.4) followed by `body`: the length counts its own bytes too.
    public static func withPackageLength(_ body: [UInt8]) -> [UInt8] {
        let n = body.count
        if n + 1 < 0x40 { return [UInt8(n + 1)] + body }
        for extra in 1 ... 3 {
            let total = n + 1 + extra
            guard total < 1 << (4 + 8 * extra) else { continue }
            var bytes = [UInt8(extra << 6) | UInt8(total & 0xF)]
            for i in 0 ..< extra { bytes.append(UInt8(truncatingIfNeeded: total >> (4 + 8 * i))) }
            return bytes + body
        }
        // 2^28 bytes of AML is far beyond any table this VMM builds; ACPI cannot say it.
        return [0xFF, 0xFF, 0xFF, 0xFF] + body
    }

    public static func littleEndian(_ v: UInt64, _ count: Int) -> [UInt8] {
        (0 ..< count).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) }
    }
}

/// A NameString (20.2.2): an optional root prefix `\` and dot-separated NameSegs of up
/// to four characters (`A-Z`, `0-9`, `_`, not starting with a digit), padded with `_`.
public struct AMLName: Sendable, Equatable, CustomStringConvertible {
    public let description: String
    /// The NameString bytes.
    public let encoded: [UInt8]

    public init(_ path: String) throws {
        var rest = Substring(path)
        var bytes: [UInt8] = []
        if rest.hasPrefix("\\") { bytes.append(0x5C); rest = rest.dropFirst() }
        let segments = rest.split(separator: ".", omittingEmptySubsequences: false)
        var segs: [UInt8] = []
        for seg in segments {
            let c = Array(seg.utf8)
            guard (1 ... 4).contains(c.count), !(0x30 ... 0x39).contains(c[0]),
                  c.allSatisfy({ (0x41 ... 0x5A).contains($0) || (0x30 ... 0x39).contains($0) || $0 == 0x5F }) else {
                throw ACPIError.invalid("\"\(path)\" is not an ACPI name path")
            }
            segs += c + [UInt8](repeating: 0x5F, count: 4 - c.count)
        }
        switch segments.count {
        case 1: bytes += segs
        case 2: bytes += [0x2E] + segs                          // DualNamePrefix
        default:
            guard segments.count <= 255 else { throw ACPIError.invalid("\"\(path)\" has too many segments") }
            bytes += [0x2F, UInt8(segments.count)] + segs       // MultiNamePrefix
        }
        description = path
        encoded = bytes
    }
}

/// Why ACPI tables could not be built.
public enum ACPIError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalid(String)
    case doesNotFit(String)

    public var description: String {
        switch self {
        case .invalid(let why): return "invalid ACPI object: \(why)"
        case .doesNotFit(let why): return "ACPI tables do not fit: \(why)"
        }
    }
}
