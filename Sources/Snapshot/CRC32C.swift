/// CRC-32C (Castagnoli, polynomial 0x1EDC6F41, reflected 0x82F63B78), as iSCSI, ext4
/// and Btrfs use it: the checksum of every section of a state file. Slicing-by-8 over
/// tables built once.
public enum CRC32C {
    static let polynomial: UInt32 = 0x82F6_3B78

    /// tables[k × 256 + b]: the CRC of byte b followed by k zero bytes. Flat: one
    /// allocation of a type the standard library already has, so a fresh process builds
    /// it in microseconds (an array of arrays cost a restore ~30 µs of metadata and
    /// allocations).
    static let tables: [UInt32] = {
        var t = [UInt32](repeating: 0, count: 8 * 256)
        for b in 0 ..< 256 {
            var c = UInt32(b)
            for _ in 0 ..< 8 { c = c & 1 != 0 ? (c >> 1) ^ polynomial : c >> 1 }
            t[b] = c
        }
        for k in 1 ..< 8 {
            for b in 0 ..< 256 { t[k * 256 + b] = (t[(k - 1) * 256 + b] >> 8) ^ t[Int(t[(k - 1) * 256 + b] & 0xFF)] }
        }
        return t
    }()

    /// The CRC-32C of `bytes[range]` (all of it by default), continuing from `crc` (the
    /// value of the bytes before). Plain indexing, no unsafe pointers: this module holds
    /// none (they live in KVM and GuestMemory).
    public static func checksum(_ bytes: [UInt8], _ range: Range<Int>? = nil, continuing crc: UInt32 = 0) -> UInt32 {
        let r = range ?? bytes.indices
        let t = tables
        var c = ~crc
        var i = r.lowerBound
        let end = r.upperBound
        while end - i >= 8 {
            let lo = c ^ (UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2]) << 16 | UInt32(bytes[i + 3]) << 24)
            let hi = UInt32(bytes[i + 4]) | UInt32(bytes[i + 5]) << 8 | UInt32(bytes[i + 6]) << 16 | UInt32(bytes[i + 7]) << 24
            c = t[7 * 256 + Int(lo & 0xFF)] ^ t[6 * 256 + Int((lo >> 8) & 0xFF)] ^ t[5 * 256 + Int((lo >> 16) & 0xFF)]
                ^ t[4 * 256 + Int(lo >> 24)] ^ t[3 * 256 + Int(hi & 0xFF)] ^ t[2 * 256 + Int((hi >> 8) & 0xFF)]
                ^ t[256 + Int((hi >> 16) & 0xFF)] ^ t[Int(hi >> 24)]
            i += 8
        }
        while i < end {
            c = (c >> 8) ^ t[Int((c ^ UInt32(bytes[i])) & 0xFF)]
            i += 1
        }
        return ~c
    }
}
