import GuestMemory

/// One entry of the guest's physical memory map: the BIOS E820 types (ACPI 6.5,
/// 15.1 "INT 15H, E820H - Query System Address Map"), used by `boot_params.e820_table`,
/// PVH's `hvm_memmap_table_entry` and multiboot's mmap alike.
public struct MemoryMapEntry: Sendable, Equatable {
    public enum Kind: UInt32, Sendable {
        case ram = 1, reserved = 2, acpiReclaimable = 3, acpiNVS = 4, unusable = 5
    }
    public let base: UInt64
    public let size: UInt64
    public let kind: Kind

    public init(base: UInt64, size: UInt64, kind: Kind) {
        self.base = base; self.size = size; self.kind = kind
    }
}

/// Fixed guest-physical places for boot data, shared by every boot protocol, chosen
/// in the low 640 KiB that a PC guest expects to be RAM (and that Linux reserves).
public enum BootLayout {
    /// A GDT matching the selectors of the entry state (`BootEntry.apply`).
    public static let gdt = GuestAddress(0x500)
    /// PVH `hvm_start_info` / Linux `boot_params` (zero page).
    public static let bootInfo = GuestAddress(0x6000)
    /// PVH memory map entries.
    public static let memoryMap = GuestAddress(0x6800)
    /// PVH module list.
    public static let moduleList = GuestAddress(0x7000)
    /// Identity-mapping page tables for a 64-bit entry (`IdentityPageTables`), 24 KiB.
    public static let pageTables = GuestAddress(0x10000)
    /// Kernel command line (NUL-terminated).
    public static let commandLine = GuestAddress(0x20000)
    /// Longest command line accepted, NUL included.
    public static let commandLineLimit = 4096
    /// Start of the extended BIOS data area: RAM below it is the guest's.
    public static let ebdaStart: UInt64 = 0x9FC00
    /// The BIOS area, where ACPI's RSDP must sit so that a scan finds it.
    public static let biosAreaStart: UInt64 = 0xE0000
    public static let highMemoryStart: UInt64 = 0x100000
    /// The smallest RAM a guest can be booted with here: boot data below 1 MiB, kernel above.
    public static let minimumRAM: UInt64 = 2 << 20
    /// Boot data ranges an ELF kernel segment must not overlap. (The bzImage page tables
    /// are not among them: only the bzImage loader writes them, and its kernel sits at
    /// 1 MiB or above.)
    static let reserved: [(String, UInt64, UInt64)] = [
        ("GDT", gdt.raw, 0x28), ("boot info and memory map", bootInfo.raw, 0x2000),
        ("command line", commandLine.raw, UInt64(commandLineLimit)),
    ]
}

extension MemoryMapEntry {
    /// The map every boot protocol hands the guest: conventional memory up to the EBDA,
    /// the EBDA and BIOS area reserved, RAM from 1 MiB, RAM above 4 GiB, and any device
    /// memory segment reserved. The MMIO hole is left out (a gap means "not RAM").
    public static func standardMap(for memory: GuestMemory) -> [MemoryMapEntry] {
        var map: [MemoryMapEntry] = []
        for segment in memory.segments {
            let base = segment.guestBase.raw, size = segment.size
            guard segment.kind == .systemRAM else {
                map.append(MemoryMapEntry(base: base, size: size, kind: .reserved))
                continue
            }
            guard base == 0, size > BootLayout.highMemoryStart else {
                map.append(MemoryMapEntry(base: base, size: size, kind: .ram))
                continue
            }
            map.append(MemoryMapEntry(base: 0, size: BootLayout.ebdaStart, kind: .ram))
            map.append(MemoryMapEntry(base: BootLayout.ebdaStart, size: 0xA0000 - BootLayout.ebdaStart, kind: .reserved))
            map.append(MemoryMapEntry(base: BootLayout.biosAreaStart,
                                      size: BootLayout.highMemoryStart - BootLayout.biosAreaStart, kind: .reserved))
            map.append(MemoryMapEntry(base: BootLayout.highMemoryStart, size: size - BootLayout.highMemoryStart, kind: .ram))
        }
        return map.sorted { $0.base < $1.base }
    }
}

extension MemoryMapEntry {
    /// Writes `map` as { u64 base, u64 length, u32 type } records every `stride` bytes
    /// from `offset`: the e820 record that boot_params, PVH and multiboot all use.
    static func put(_ map: [MemoryMapEntry], into w: inout ByteWriter, at offset: Int, stride: Int) {
        for (i, e) in map.enumerated() {
            w.put(e.base, at: offset + i * stride)
            w.put(e.size, at: offset + i * stride + 8)
            w.put(e.kind.rawValue, at: offset + i * stride + 16)
        }
    }
}
