import GuestMemory
import KVM

/// How the boot CPU starts: the mode, where, and the registers a boot protocol defines.
public struct BootEntry: Sendable {
    public enum Mode: Sendable, Equatable {
        /// 32-bit protected mode, paging off, flat segments (PVH, multiboot, bzImage 32-bit).
        case protected32
        /// 64-bit long mode with identity-mapped page tables at `pageTables` (bzImage 64-bit entry).
        case long64(pageTables: UInt64)
    }

    public var mode: Mode
    public var rip: UInt64
    /// Boot-protocol registers: EBX for PVH (start_info), ESI for Linux (boot_params), ...
    public var registers: [(VCPURegister, UInt64)]

    public init(mode: Mode, rip: UInt64, registers: [(VCPURegister, UInt64)]) {
        self.mode = mode; self.rip = rip; self.registers = registers
    }

    /// Selectors of the GDT written at `BootLayout.gdt` (see `writeGDT`). Code and data
    /// are Linux's `__BOOT_CS` (0x10) and `__BOOT_DS` (0x18), which its 32- and 64-bit boot
    /// protocols require; PVH and multiboot leave the selector values to the loader.
    public static let codeSelector: UInt16 = 0x10
    public static let dataSelector: UInt16 = 0x18
    public static let tssSelector: UInt16 = 0x20

    /// The GDT: null, an unused 32-bit code descriptor, code (32-bit, or 64-bit for the
    /// long-mode entry), flat data, 32-bit TSS.
    static func gdtEntries(for mode: Mode) -> [UInt64] {
        let code: UInt64
        switch mode {
        case .protected32: code = 0x00CF_9B00_0000_FFFF  // base 0, limit 4 GiB, 32-bit, exec/read, accessed
        case .long64: code = 0x00AF_9B00_0000_FFFF       // the same with L=1, D=0: 64-bit
        }
        return [
            0,
            0x00CF_9B00_0000_FFFF,  // 0x08: 32-bit code
            code,                   // 0x10: __BOOT_CS
            0x00CF_9300_0000_FFFF,  // 0x18: __BOOT_DS, base 0, limit 4 GiB, read/write, accessed
            0x0000_8B00_0000_0067,  // 0x20: 32-bit TSS (busy), base 0, limit 0x67
        ]
    }

    /// Writes the GDT the entry state's selectors refer to, so a guest that reloads a
    /// segment register before installing its own GDT gets the same descriptor.
    public static func writeGDT(into memory: GuestMemory, mode: Mode = .protected32) throws {
        let entries = gdtEntries(for: mode)
        var w = ByteWriter(size: entries.count * 8)
        for (i, e) in entries.enumerated() { w.put(e, at: i * 8) }
        try BootError.memory { try memory.load(w.bytes, at: BootLayout.gdt) }
    }

    /// Puts `vcpu` in this entry state (after `resetToPowerOnState`, or on a vCPU
    /// KVM_CREATE_VCPU has just made, which is in that state already).
    public func apply(to vcpu: KVMVCPU) throws {
        var sregs = try vcpu.specialRegisters()
        let code32 = Segment.make(selector: Self.codeSelector, base: 0, limit: 0xFFFF_FFFF, type: 0xB, db: true, g: true)
        let data = Segment.make(selector: Self.dataSelector, base: 0, limit: 0xFFFF_FFFF, type: 0x3, db: true, g: true)
        sregs.cs = code32
        sregs.ds = data; sregs.es = data; sregs.fs = data; sregs.gs = data; sregs.ss = data
        sregs.tr = .make(selector: Self.tssSelector, base: 0, limit: 0x67, type: 0xB, s: false)
        sregs.gdt.base = BootLayout.gdt.raw
        sregs.gdt.limit = UInt16(Self.gdtEntries(for: mode).count * 8 - 1)
        sregs.cr0 = 0x11  // PE | ET; paging, caching flags off
        sregs.cr4 = 0
        sregs.efer = 0
        if case .long64(let pageTables) = mode {
            sregs.cs = .make(selector: Self.codeSelector, base: 0, limit: 0xFFFF_FFFF, type: 0xB, l: true, g: true)
            sregs.cr3 = pageTables
            sregs.cr4 = 1 << 5                        // PAE
            sregs.cr0 = 0x8000_0011                   // PG | ET | PE
            sregs.efer = (1 << 8) | (1 << 10)         // LME | LMA
        }
        var regs = Registers()
        regs.rip = rip
        regs.rflags = 0x2
        // The protocol's registers go into the same two structures: one KVM_SET_SREGS
        // and one KVM_SET_REGS (each vCPU ioctl costs a vcpu_load, ~10 µs on this host).
        for (reg, value) in registers { KVMVCPU.assign(reg, value, &regs, &sregs) }
        try vcpu.setSpecialRegisters(sregs)
        try vcpu.setRegisters(regs)
    }
}
