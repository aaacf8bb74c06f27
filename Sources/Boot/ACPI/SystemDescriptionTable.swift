/// An ACPI system description table: the common 36-byte header (ACPI 6.5, 5.2.6
/// "System Description Table Header") followed by the table's own bytes, with the length
/// and checksum filled in when the table is encoded.
public struct SystemDescriptionTable: Sendable, Equatable {
    public static let headerSize = 36
    /// OEM fields every table of this VMM carries (ACPI 5.2.6: OEMID, OEM Table ID, ...).
    public static let oemID = Array("SWIFTV".utf8)
    public static let oemTableID = Array("SWIFTVMM".utf8)
    public static let creatorID = Array("SVMM".utf8)
    public static let oemRevision: UInt32 = 1
    public static let creatorRevision: UInt32 = 1

    /// Four ASCII characters: "FACP", "APIC", "DSDT", "XSDT", ...
    public let signature: String
    public let revision: UInt8
    /// The bytes after the header.
    public let body: [UInt8]

    public init(signature: String, revision: UInt8, body: [UInt8]) {
        self.signature = signature; self.revision = revision; self.body = body
    }

    /// Header and body, with Length and Checksum set so that all bytes sum to zero.
    public func encoded() -> [UInt8] {
        var w = ByteWriter(size: Self.headerSize)
        w.put(Array(signature.utf8.prefix(4)), at: 0)
        w.put(UInt32(Self.headerSize + body.count), at: 4)
        w.put(revision, at: 8)
        w.put(Self.oemID, at: 10)
        w.put(Self.oemTableID, at: 16)
        w.put(Self.oemRevision, at: 24)
        w.put(Self.creatorID, at: 28)
        w.put(Self.creatorRevision, at: 32)
        var bytes = w.bytes + body
        bytes[9] = ACPIChecksum.complement(of: bytes)
        return bytes
    }
}

/// ACPI checksums: the bytes of a structure, checksum included, sum to zero mod 256.
public enum ACPIChecksum {
    /// The sum of `bytes` modulo 256.
    public static func sum<C: Collection>(_ bytes: C) -> UInt8 where C.Element == UInt8 {
        bytes.reduce(0, &+)
    }

    /// The checksum byte for `bytes`, whose own checksum byte must still be 0.
    public static func complement<C: Collection>(of bytes: C) -> UInt8 where C.Element == UInt8 {
        0 &- sum(bytes)
    }
}

/// A Generic Address Structure (ACPI 6.5, 5.2.3.2): where a fixed register lives.
public struct GenericAddress: Sendable, Equatable {
    public enum Space: UInt8, Sendable { case systemMemory = 0, systemIO = 1 }
    public static let size = 12

    public var space: Space
    public var bitWidth: UInt8
    public var bitOffset: UInt8 = 0
    /// 1 byte, 2 word, 3 dword, 4 qword access.
    public var accessSize: UInt8
    public var address: UInt64

    /// A one-byte I/O port register.
    public static func ioPort(_ port: UInt16) -> GenericAddress {
        GenericAddress(space: .systemIO, bitWidth: 8, accessSize: 1, address: UInt64(port))
    }

    public func encoded() -> [UInt8] {
        var w = ByteWriter(size: Self.size)
        w.put(space.rawValue, at: 0)
        w.put(bitWidth, at: 1)
        w.put(bitOffset, at: 2)
        w.put(accessSize, at: 3)
        w.put(address, at: 4)
        return w.bytes
    }
}
