/// The Root System Description Pointer (ACPI 6.5, 5.2.5.3), revision 2: where the guest
/// finds the XSDT. 36 bytes; the first 20 (the ACPI 1.0 part) have their own checksum.
public struct RootPointer: Sendable, Equatable {
    public static let size = 36
    public static let signature = Array("RSD PTR ".utf8)
    public var xsdtAddress: UInt64

    public init(xsdtAddress: UInt64) { self.xsdtAddress = xsdtAddress }

    public func encoded() -> [UInt8] {
        var w = ByteWriter(size: Self.size)
        w.put(Self.signature, at: 0)
        w.put(SystemDescriptionTable.oemID, at: 9)
        w.put(UInt8(2), at: 15)                  // revision 2: ACPI 2.0 and later
        w.put(UInt32(0), at: 16)                 // RsdtAddress: no RSDT, the XSDT only
        w.put(UInt32(Self.size), at: 20)
        w.put(xsdtAddress, at: 24)
        var bytes = w.bytes
        bytes[8] = ACPIChecksum.complement(of: bytes[0 ..< 20])
        bytes[32] = ACPIChecksum.complement(of: bytes)
        return bytes
    }
}

/// The Extended System Description Table (ACPI 6.5, 5.2.8): 64-bit pointers to every
/// other table except the DSDT (which the FADT points to).
public enum ExtendedSystemDescriptionTable {
    public static func table(entries: [UInt64]) -> SystemDescriptionTable {
        var w = ByteWriter(size: entries.count * 8)
        for (i, address) in entries.enumerated() { w.put(address, at: i * 8) }
        return SystemDescriptionTable(signature: "XSDT", revision: 1, body: w.bytes)
    }
}
