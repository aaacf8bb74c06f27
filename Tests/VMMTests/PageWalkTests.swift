import GuestMemory
import Testing

/// Hand-built page tables in a small guest memory, walked in every mode.
@Suite struct PageWalkTests {
    let memory: GuestMemory
    // Long-mode control registers: PG|WP|PE, PAE, LMA|LME|NXE.
    static let cr0: UInt64 = 0x8001_0001, cr4PAE: UInt64 = 1 << 5, eferLong: UInt64 = (1 << 10) | (1 << 8) | (1 << 11)
    static let p: UInt64 = 1, w: UInt64 = 2, u: UInt64 = 4, ps: UInt64 = 0x80, nx: UInt64 = 1 << 63

    init() throws {
        memory = try GuestMemory.create(ramSize: 8 << 20)
    }

    func set(_ table: UInt64, _ index: UInt64, _ entry: UInt64) throws {
        try memory.writeInteger(entry, at: GuestAddress(table + index * 8))
    }

    func set32(_ table: UInt64, _ index: UInt64, _ entry: UInt32) throws {
        try memory.writeInteger(entry, at: GuestAddress(table + index * 4))
    }

    func entry(_ table: UInt64, _ index: UInt64) throws -> UInt64 {
        try memory.readInteger(UInt64.self, at: GuestAddress(table + index * 8))
    }

    func long(cr0: UInt64 = cr0, cr4: UInt64 = cr4PAE, efer: UInt64 = eferLong, bits: Int = 52) -> PagingMode {
        PagingMode(cr0: cr0, cr3: 0x1000, cr4: cr4, efer: efer, physicalAddressBits: bits)
    }

    /// PML4 0x1000 → PDPT 0x2000 → PD 0x3000 → PT 0x4000; VA 0x40_0000 + n*4K → 0x10_0000 + n*4K.
    func buildFourLevel(pteFlags: UInt64 = p | w, upperFlags: UInt64 = p | w | u) throws {
        try set(0x1000, 0, 0x2000 | upperFlags)
        try set(0x2000, 0, 0x3000 | upperFlags)
        try set(0x3000, 2, 0x4000 | upperFlags)
        for n: UInt64 in 0 ..< 4 { try set(0x4000, n, (0x10_0000 + n * 0x1000) | pteFlags) }
    }

    func fault(_ va: UInt64, _ mode: PagingMode, _ access: MemoryAccess) -> PageFault? {
        do { _ = try memory.translate(va, paging: mode, access: access); return nil } catch { return error }
    }

    @Test func modeFromControlRegisters() {
        #expect(PagingMode(cr0: 0x11, cr3: 0, cr4: 0, efer: 0).kind == .off)
        #expect(PagingMode(cr0: 0x8000_0011, cr3: 0, cr4: 0, efer: 0).kind == .bits32)
        #expect(PagingMode(cr0: 0x8000_0011, cr3: 0, cr4: 0x20, efer: 0).kind == .pae)
        #expect(PagingMode(cr0: 0x8000_0011, cr3: 0, cr4: 0x20, efer: 0x500).kind == .level4)
        #expect(PagingMode(cr0: 0x8000_0011, cr3: 0, cr4: 0x1020, efer: 0x500).kind == .level5)
        // LME without LMA (paging not yet on) is not long mode.
        #expect(PagingMode(cr0: 0x8000_0011, cr3: 0, cr4: 0x20, efer: 0x100).kind == .pae)
    }

    @Test func fourLevelTranslatesAndKeepsTheOffset() throws {
        try buildFourLevel()
        let t = try memory.translate(0x40_1234, paging: long(), access: MemoryAccess(.read))
        #expect(t.physical.raw == 0x10_1234)
        #expect(t.pageSize == 4096 && t.writable && !t.user && t.executable)
        #expect(t.bytesToPageEnd == 0x1000 - 0x234)
    }

    @Test func largePagesTwoMiBAndOneGiB() throws {
        try set(0x1000, 0, 0x2000 | Self.p | Self.w)
        try set(0x2000, 1, 0x4000_0000 | Self.p | Self.w | Self.ps)           // 1 GiB at VA 1 GiB
        try set(0x2000, 0, 0x3000 | Self.p | Self.w)
        try set(0x3000, 3, 0x20_0000 | Self.p | Self.ps | (1 << 12))         // 2 MiB, PAT bit set
        let two = try memory.translate(0x60_0010, paging: long(), access: MemoryAccess(.read))
        #expect(two.physical.raw == 0x20_0010 && two.pageSize == 2 << 20 && !two.writable)
        let one = try memory.translate(0x4123_4567, paging: long(), access: MemoryAccess(.read))
        #expect(one.physical.raw == 0x4123_4567 && one.pageSize == 1 << 30)
        // Without 1-GiB page support the PS bit of a PDPTE is reserved.
        let noGB = PagingMode(cr0: Self.cr0, cr3: 0x1000, cr4: Self.cr4PAE, efer: Self.eferLong, gigabytePages: false)
        #expect(fault(0x4123_4567, noGB, MemoryAccess(.read))?.reason == .reservedBit)
        // Bits 20:13 of a 2-MiB PDE are reserved.
        try set(0x3000, 3, 0x20_0000 | Self.p | Self.ps | (1 << 13))
        let bad = fault(0x60_0010, long(), MemoryAccess(.write))
        #expect(bad?.reason == .reservedBit && bad?.errorCode == 0b1011)
        // PS in a PML4E is reserved.
        try set(0x1000, 0, 0x2000 | Self.p | Self.w | Self.ps)
        #expect(fault(0x60_0010, long(), MemoryAccess(.read))?.reason == .reservedBit)
    }

    @Test func notPresentAtEachLevelWithTheErrorCode() throws {
        try buildFourLevel()
        #expect(fault(0x80_0000_0000, long(), MemoryAccess(.read))?.errorCode == 0)          // PML4[1]
        #expect(fault(0x4000_0000, long(), MemoryAccess(.write))?.errorCode == 2)            // PDPT[1]
        #expect(fault(0x20_0000, long(), MemoryAccess(.read, user: true))?.errorCode == 4)   // PD[1]
        let pte = fault(0x40_4000, long(), MemoryAccess(.write, user: true))                 // PT[4]
        #expect(pte?.reason == .notPresent && pte?.errorCode == 6 && pte?.address == 0x40_4000)
        #expect(pte?.isPageFault == true)
    }

    @Test func writeProtectAndUserRights() throws {
        try buildFourLevel(pteFlags: Self.p)  // read-only, supervisor leaf
        let noWP = long(cr0: 0x8000_0001)
        #expect(fault(0x40_0000, noWP, MemoryAccess(.write)) == nil)     // CR0.WP=0: supervisor writes go through
        let wp = fault(0x40_0000, long(), MemoryAccess(.write))
        #expect(wp?.reason == .writeToReadOnly && wp?.errorCode == 3)
        let user = fault(0x40_0000, long(), MemoryAccess(.read, user: true))
        #expect(user?.reason == .userToSupervisor && user?.errorCode == 5)
        try buildFourLevel(pteFlags: Self.p | Self.u)
        let userWrite = fault(0x40_0000, noWP, MemoryAccess(.write, user: true))  // WP does not matter for users
        #expect(userWrite?.reason == .writeToReadOnly && userWrite?.errorCode == 7)
        // Rights combine over levels: a read-only PDE makes the page read-only.
        try buildFourLevel(pteFlags: Self.p | Self.w | Self.u)
        try set(0x3000, 2, 0x4000 | Self.p | Self.u)
        #expect(fault(0x40_0000, long(), MemoryAccess(.write, user: true))?.reason == .writeToReadOnly)
    }

    @Test func executeDisableSMEPAndSMAP() throws {
        try buildFourLevel(pteFlags: Self.p | Self.nx)
        let nx = fault(0x40_0000, long(), MemoryAccess(.execute))
        #expect(nx?.reason == .executeNoExecute && nx?.errorCode == 0x11)
        #expect(fault(0x40_0000, long(), MemoryAccess(.read)) == nil)
        // Without EFER.NXE bit 63 is reserved.
        let reserved = fault(0x40_0000, long(efer: (1 << 10) | (1 << 8)), MemoryAccess(.read))
        #expect(reserved?.reason == .reservedBit && reserved?.errorCode == 9)
        try buildFourLevel(pteFlags: Self.p | Self.w | Self.u)
        let smep = long(cr4: Self.cr4PAE | (1 << 20))
        #expect(fault(0x40_0000, smep, MemoryAccess(.execute))?.reason == .supervisorFetchFromUser)
        #expect(fault(0x40_0000, long(), MemoryAccess(.execute)) == nil)
        let smap = long(cr4: Self.cr4PAE | (1 << 21))
        #expect(fault(0x40_0000, smap, MemoryAccess(.read))?.reason == .supervisorAccessToUser)
        #expect(fault(0x40_0000, smap, MemoryAccess(.write, alignmentCheckFlag: true)) == nil)
        #expect(fault(0x40_0000, smap, MemoryAccess(.read, user: true)) == nil)
    }

    @Test func reservedBitsAboveMaxPhysicalAddress() throws {
        try buildFourLevel(pteFlags: Self.p | (1 << 40))
        #expect(fault(0x40_0000, long(bits: 52), MemoryAccess(.read)) == nil)
        #expect(fault(0x40_0000, long(bits: 39), MemoryAccess(.read))?.reason == .reservedBit)
    }

    @Test func fiveLevelAndCanonicalAddresses() throws {
        // PML5 0x5000 → PML4 0x1000 ...; VA bit 48 selects PML5[1].
        try buildFourLevel()
        try set(0x5000, 1, 0x1000 | Self.p | Self.w)
        let mode = PagingMode(cr0: Self.cr0, cr3: 0x5000, cr4: Self.cr4PAE | (1 << 12), efer: Self.eferLong)
        #expect(try memory.translate(0x1_0000_0040_0008, paging: mode, access: MemoryAccess(.read)).physical.raw == 0x10_0008)
        #expect(fault(0x40_0000, mode, MemoryAccess(.read))?.reason == .notPresent)   // PML5[0] empty
        // 0x1_0000_0000_0000 is canonical with 57 bits, not with 48.
        #expect(fault(0x1_0000_0040_0000, long(), MemoryAccess(.read))?.reason == .nonCanonical)
        #expect(fault(0x1_0000_0040_0000, long(), MemoryAccess(.read))?.isPageFault == false)
        #expect(mode.isCanonical(0xFF00_0000_0000_0000) && !long().isCanonical(0xFF00_0000_0000_0000))
        #expect(long().isCanonical(0xFFFF_8000_0000_0000))
    }

    @Test func paePaging() throws {
        // CR3 0x1020 (32-byte aligned) → PDPTE[1] → PD 0x3000; PD[0] → PT 0x4000, PD[1] a 2-MiB page.
        try set(0x1020, 1, 0x3000 | Self.p)
        try set(0x3000, 0, 0x4000 | Self.p | Self.w)
        try set(0x3000, 1, 0x60_0000 | Self.p | Self.w | Self.ps)
        try set(0x4000, 5, 0x12_3000 | Self.p | Self.w)
        let mode = PagingMode(cr0: Self.cr0, cr3: 0x1020, cr4: Self.cr4PAE, efer: 0)
        #expect(try memory.translate(0x4000_5678, paging: mode, access: MemoryAccess(.read)).physical.raw == 0x12_3678)
        #expect(try memory.translate(0x4020_0001, paging: mode, access: MemoryAccess(.read)).physical.raw == 0x60_0001)
        #expect(fault(0x0000_5678, mode, MemoryAccess(.read))?.reason == .notPresent)   // PDPTE[0]
        try set(0x1020, 1, 0x3000 | Self.p | Self.w)  // R/W is reserved in a PAE PDPTE
        #expect(fault(0x4000_5678, mode, MemoryAccess(.read))?.reason == .reservedBit)
    }

    @Test func thirtyTwoBitPagingWithAndWithoutPSE() throws {
        try set32(0x1000, 1, 0x2000 | 7)                       // PDE[1] → PT 0x2000
        try set32(0x2000, 3, 0x15_6000 | 3)                    // PTE[3]: supervisor page
        try set32(0x1000, 2, 0x40_0000 | 0x83 | (0x1 << 13))   // PDE[2]: 4 MiB, PA bit 32 set (PSE-36)
        let pse = PagingMode(cr0: Self.cr0, cr3: 0x1000, cr4: 1 << 4, efer: 0, physicalAddressBits: 36)
        #expect(try memory.translate(0x40_3abc, paging: pse, access: MemoryAccess(.read)).physical.raw == 0x15_6abc)
        let big = try memory.translate(0x80_0004, paging: pse, access: MemoryAccess(.read))
        #expect(big.physical.raw == 0x1_0040_0004 && big.pageSize == 4 << 20)
        #expect(fault(0x40_3abc, pse, MemoryAccess(.read, user: true))?.errorCode == 5)
        // Bit 21 of a 4-MiB PDE is reserved.
        try set32(0x1000, 2, 0x40_0000 | 0x83 | (1 << 21))
        #expect(fault(0x80_0004, pse, MemoryAccess(.read))?.reason == .reservedBit)
        // Without CR4.PSE the PS bit is ignored: PDE[2] points at a page table at 0x60_0000.
        let noPSE = PagingMode(cr0: Self.cr0, cr3: 0x1000, cr4: 0, efer: 0)
        try set32(0x60_0000, 0, 0x7000 | 1)
        #expect(try memory.translate(0x80_0004, paging: noPSE, access: MemoryAccess(.read)).physical.raw == 0x7004)
        // Linear addresses are 32 bits wide.
        #expect(try memory.translate(0x1_0040_3abc, paging: pse, access: MemoryAccess(.read)).physical.raw == 0x15_6abc)
    }

    @Test func pagingOffIsIdentity() throws {
        let off = PagingMode(cr0: 0x11, cr3: 0, cr4: 0, efer: 0)
        #expect(try memory.translate(0x1_0012_3456, paging: off, access: MemoryAccess(.write)).physical.raw == 0x12_3456)
    }

    @Test func hostileTablesFaultInsteadOfCrashing() throws {
        // PML4[0] points past the end of RAM, PML4[1] into the MMIO hole (IOAPIC page).
        try set(0x1000, 0, 0x1_0000_0000_0000 | Self.p)
        try set(0x1000, 1, 0xFEC0_0000 | Self.p)
        #expect(fault(0x1000, long(), MemoryAccess(.read))?.reason == .tableOutsideMemory(physical: 0x1_0000_0000_0000))
        #expect(fault(0x80_0000_0000, long(), MemoryAccess(.read))?.reason == .tableOutsideMemory(physical: 0xFEC0_0000))
        #expect(fault(0x80_0000_0000, long(), MemoryAccess(.read))?.isPageFault == false)
        // A table that points at itself at every level: the walk ends after four reads.
        try set(0x1000, 2, 0x1000 | Self.p | Self.w)
        let loop: UInt64 = (2 << 39) | (2 << 30) | (2 << 21) | (2 << 12) | 0x18
        let selfMapped = try memory.translate(loop, paging: long(), access: MemoryAccess(.read))
        #expect(selfMapped.physical.raw == 0x1018 && selfMapped.pageSize == 4096)
        // CR3 itself outside RAM.
        let wild = PagingMode(cr0: Self.cr0, cr3: 0xFFFF_F000, cr4: Self.cr4PAE, efer: Self.eferLong)
        #expect(fault(0, wild, MemoryAccess(.read))?.reason == .tableOutsideMemory(physical: 0xFFFF_F000))
        // A 1-GiB page near the top of the physical space: translation works, the copy refuses.
        try set(0x1000, 3, 0x2000 | Self.p)
        try set(0x2000, 0, 0xF_FFFF_C000_0000 | Self.p | Self.ps)
        let va: UInt64 = 3 << 39
        #expect(try memory.translate(va, paging: long(), access: MemoryAccess(.read)).physical.raw == 0xF_FFFF_C000_0000)
        #expect(throws: GuestMemory.VirtualAccessError.self) { try memory.readVirtual(at: va, count: 8, paging: long()) }
    }

    @Test func accessedAndDirtyBitsAreSetLikeTheCPU() throws {
        try buildFourLevel()
        _ = try memory.translate(0x40_0000, paging: long(), access: MemoryAccess(.read))
        #expect(try entry(0x1000, 0) & 0x20 != 0 && entry(0x4000, 0) & 0x60 == 0x20)
        _ = try memory.translate(0x40_0000, paging: long(), access: MemoryAccess(.write))
        #expect(try entry(0x4000, 0) & 0x60 == 0x60)
        // A debugger's access leaves no trace; a faulting access sets nothing either.
        _ = try memory.translate(0x40_1000, paging: long(), access: .debugger(.write))
        #expect(try entry(0x4000, 1) & 0x60 == 0)
        try set(0x4000, 2, 0x10_2000 | Self.p)
        _ = fault(0x40_2000, long(), MemoryAccess(.write))
        #expect(try entry(0x4000, 2) & 0x60 == 0)
        // 4-byte entries (32-bit paging) get their bits too, the neighbour untouched.
        try set32(0x6000, 0, 0x7000 | 3)
        try set32(0x7000, 1, 0x8000 | 3)
        try set32(0x7000, 0, 0x9000 | 3)
        let mode32 = PagingMode(cr0: Self.cr0, cr3: 0x6000, cr4: 0, efer: 0)
        _ = try memory.translate(0x1000, paging: mode32, access: MemoryAccess(.write))
        #expect(try memory.readInteger(UInt32.self, at: GuestAddress(0x7004)) == 0x8000 | 3 | 0x60)
        #expect(try memory.readInteger(UInt32.self, at: GuestAddress(0x7000)) == 0x9000 | 3)
    }

    @Test func debuggerAccessIgnoresRightsButNotPresence() throws {
        try buildFourLevel(pteFlags: Self.p | Self.nx)
        #expect(fault(0x40_0000, long(), .debugger(.write)) == nil)
        #expect(fault(0x40_0000, long(), .debugger(.execute)) == nil)
        #expect(fault(0x40_4000, long(), .debugger(.read))?.reason == .notPresent)
    }

    @Test func copyInAndOutAcrossDiscontiguousPages() throws {
        try buildFourLevel()
        // VA page 1 → PA 0x10_3000 (not contiguous with page 0 → 0x10_0000).
        try set(0x4000, 1, 0x10_3000 | Self.p | Self.w)
        try memory.writeVirtual(Array(0 ..< 16), at: 0x40_0FF8, paging: long())
        #expect(try memory.read(at: GuestAddress(0x10_0FF8), count: 8) == Array(0 ..< 8))
        #expect(try memory.read(at: GuestAddress(0x10_3000), count: 8) == Array(8 ..< 16))
        #expect(try memory.readVirtual(at: 0x40_0FF8, count: 16, paging: long()) == Array(0 ..< 16))
        #expect(try memory.readVirtualInteger(UInt64.self, at: 0x40_0FFC, paging: long()) == 0x0B0A_0908_0706_0504)
        let pieces = try memory.translateRange(0x40_0FF8, count: 16, paging: long(), access: MemoryAccess(.read))
        #expect(pieces.map(\.start.raw) == [0x10_0FF8, 0x10_3000] && pieces.map(\.length) == [8, 8])
    }

    @Test func aWriteThatFaultsOnItsSecondPageWritesNothing() throws {
        try buildFourLevel()
        try set(0x4000, 1, 0x10_1000 | Self.p)  // read-only second page
        try memory.fill(0xEE, at: GuestAddress(0x10_0FF8), count: 8)
        #expect(throws: GuestMemory.VirtualAccessError.fault(
            PageFault(address: 0x40_1000, reason: .writeToReadOnly, errorCode: 3))) {
            try memory.writeVirtual([UInt8](repeating: 0, count: 16), at: 0x40_0FF8, paging: long())
        }
        #expect(try memory.read(at: GuestAddress(0x10_0FF8), count: 8) == [UInt8](repeating: 0xEE, count: 8))
        // A leaf that maps into the MMIO hole: the translation is fine, the copy is refused.
        try set(0x4000, 2, 0xFEE0_0000 | Self.p | Self.w)
        #expect(try memory.translate(0x40_2000, paging: long(), access: MemoryAccess(.read)).physical.raw == 0xFEE0_0000)
        #expect(throws: GuestMemory.VirtualAccessError.self) { try memory.readVirtual(at: 0x40_2000, count: 4, paging: long()) }
        #expect(throws: GuestMemory.VirtualAccessError.self) { try memory.writeVirtual([1], at: 0x40_2000, paging: long()) }
    }

    @Test func atomicCompareExchange() throws {
        let a = GuestAddress(0x9000)
        try memory.writeInteger(UInt64(5), at: a)
        #expect(try memory.compareExchange(at: a, expected: 5, desired: 6) == GuestMemory.Exchange(exchanged: true, previous: 5))
        #expect(try memory.compareExchange(at: a, expected: 5, desired: 7) == GuestMemory.Exchange(exchanged: false, previous: 6))
        let pair = GuestMemory.Pair(low: 1, high: 2)
        try memory.writeInteger(UInt64(1), at: GuestAddress(0x9010))
        try memory.writeInteger(UInt64(2), at: GuestAddress(0x9018))
        let done = try memory.compareExchange(at: GuestAddress(0x9010), expected: pair, desired: .init(low: 3, high: 4))
        #expect(done.exchanged && done.previous == pair)
        let again = try memory.compareExchange(at: GuestAddress(0x9010), expected: pair, desired: .init(low: 9, high: 9))
        #expect(!again.exchanged && again.previous == .init(low: 3, high: 4))
        #expect(throws: GuestMemoryError.misaligned(address: 0x9008, alignment: 16)) {
            try memory.compareExchange(at: GuestAddress(0x9008), expected: pair, desired: pair)
        }
        #expect(throws: GuestMemoryError.self) {
            try memory.compareExchange(at: GuestAddress(0xFEC0_0000), expected: 0, desired: 1)
        }
    }
}
