import GuestMemory

/// Page tables that identity-map the low 4 GiB with 2 MiB pages: what Linux's 64-bit
/// boot protocol asks of a loader (boot.rst, "64-bit Boot Protocol": the kernel, the zero
/// page and the command line must be identity-mapped). One PML4, one PDPT and four page
/// directories: 24 KiB at `BootLayout.pageTables`.
public enum IdentityPageTables {
    public static let size = 6 * 4096
    static let present: UInt64 = 1 << 0, writable: UInt64 = 1 << 1, largePage: UInt64 = 1 << 7

    /// The tables for a given base address (the PML4 comes first).
    public static func encoded(at base: UInt64) -> [UInt8] {
        var w = ByteWriter(size: size)
        let pdpt = base + 4096
        w.put(pdpt | present | writable, at: 0)                     // PML4[0] → PDPT
        for gib in 0 ..< 4 {
            let directory = base + UInt64(2 + gib) * 4096
            w.put(directory | present | writable, at: 4096 + gib * 8)  // PDPT[gib] → PD
            for entry in 0 ..< 512 {
                let address = UInt64(gib) << 30 | UInt64(entry) << 21
                w.put(address | present | writable | largePage, at: (2 + gib) * 4096 + entry * 8)
            }
        }
        return w.bytes
    }

    /// Writes the tables at `BootLayout.pageTables`; returns the address for CR3.
    public static func write(into memory: GuestMemory) throws -> UInt64 {
        let base = BootLayout.pageTables.raw
        try BootError.memory { try memory.load(encoded(at: base), at: BootLayout.pageTables) }
        return base
    }
}
