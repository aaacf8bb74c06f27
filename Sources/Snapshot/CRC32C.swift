/// CRC-32C (Castagnoli, polynomial 0x1EDC6F41, reflected 0x82F63B78), as iSCSI, ext4
/// and Btrfs use it: the checksum of every section of a state file. Slicing-by-8 over
/// tables built once.
public enum CRC32C {
    static let polynomial: UInt32 = 0x82F6_3B78

    /// tables[k][b]: the CRC of byte b followed by k zero bytes.
    static let tables: [[UInt32]] = {
        var t = [[UInt32]](repeating: [UInt32](repeating: 0, count: 256), count: 8)
        for b in 0 ..< 256 {
            var c = UInt32(b)
            for _ in 0 ..< 8 { c = c & 1 != 0 ? (c >> 1) ^ polynomial : c >> 1 }
            t[0][b] = c
        }
        for k in 1 ..< 8 {
            for b in 0 ..< 256 { t[k][b] = (t[k - 1][b] >> 8) ^ t[0][Int(t[k - 1][b] & 0xFF)] }
        }
        return t
    }()

    /// The CRC-32C of `bytes[range]` (all of it by default), continuing from `crc` (the
    /// value of the bytes before). Plain indexing, no unsafe pointers: this module holds
    /// none (they live in KVM and GuestMemory).
    public static func checksum(_ bytes: [UInt8], _ range: Range<Int>? = nil, continuing crc: UInt32 = 0) -> UInt32 {
        let r = range ?? bytes.indices
        let t0 = tables[0], t1 = tables[1], t2 = tables[2], t3 = tables[3]
        let t4 = tables[4], t5 = tables[5], t6 = tables[6], t7 = tables[7]
        var c = ~crc
        var i = r.lowerBound
        let end = r.upperBound
        while end - i >= 8 {
            let lo = c ^ (UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2]) << 16 | UInt32(bytes[i + 3]) << 24)
            let hi = UInt32(bytes[i + 4]) | UInt32(bytes[i + 5]) << 8 | UInt32(bytes[i + 6]) << 16 | UInt32(bytes[i + 7]) << 24
            c = t7[Int(lo & 0xFF)] ^ t6[Int((lo >> 8) & 0xFF)] ^ t5[Int((lo >> 16) & 0xFF)] ^ t4[Int(lo >> 24)]
                ^ t3[Int(hi & 0xFF)] ^ t2[Int((hi >> 8) & 0xFF)] ^ t1[Int((hi >> 16) & 0xFF)] ^ t0[Int(hi >> 24)]
            i += 8
        }
        while i < end {
            c = (c >> 8) ^ t0[Int((c ^ UInt32(bytes[i])) & 0xFF)]
            i += 1
        }
        return ~c
    }
}
