/// The Multiboot information structure (Multiboot Specification 0.6.96, 3.3 "Boot
/// information format") a kernel finds at EBX, with the memory map and module list it
/// points to.
public struct MultibootInfo: Sendable, Equatable {
    /// EAX on entry: proof that a multiboot loader started the kernel.
    public static let bootloaderMagic: UInt32 = 0x2BAD_B002
    public static let size = 120
    public static let moduleEntrySize = 16
    static let mmapEntrySize = 24   // the size field (4) + base, length, type (20)

    // `flags` bits saying which fields are valid.
    public static let hasMemory: UInt32 = 1 << 0
    public static let hasCommandLine: UInt32 = 1 << 2
    public static let hasModules: UInt32 = 1 << 3
    public static let hasMemoryMap: UInt32 = 1 << 6
    public static let hasLoaderName: UInt32 = 1 << 9

    /// KiB of RAM from 0 and from 1 MiB (up to the first hole).
    public var memoryLowerKiB: UInt32 = 0
    public var memoryUpperKiB: UInt32 = 0
    public var commandLineAddress: UInt32 = 0
    public var moduleCount: UInt32 = 0
    public var moduleListAddress: UInt32 = 0
    public var memoryMapLength: UInt32 = 0
    public var memoryMapAddress: UInt32 = 0
    public var loaderNameAddress: UInt32 = 0

    public init() {}

    public func encoded() -> [UInt8] {
        var flags = Self.hasMemory | Self.hasMemoryMap | Self.hasCommandLine
        if moduleCount > 0 { flags |= Self.hasModules }
        if loaderNameAddress != 0 { flags |= Self.hasLoaderName }
        var w = ByteWriter(size: Self.size)
        w.put(flags, at: 0)
        w.put(memoryLowerKiB, at: 4)
        w.put(memoryUpperKiB, at: 8)
        w.put(commandLineAddress, at: 16)
        w.put(moduleCount, at: 20)
        w.put(moduleListAddress, at: 24)
        w.put(memoryMapLength, at: 44)
        w.put(memoryMapAddress, at: 48)
        w.put(loaderNameAddress, at: 64)
        return w.bytes
    }

    /// The `mmap_*` buffer: entries of { size = 20, base_addr, length, type }.
    public static func encodeMemoryMap(_ map: [MemoryMapEntry]) -> [UInt8] {
        var w = ByteWriter(size: map.count * mmapEntrySize)
        for i in map.indices { w.put(UInt32(mmapEntrySize - 4), at: i * mmapEntrySize) }  // size, itself excluded
        MemoryMapEntry.put(map, into: &w, at: 4, stride: mmapEntrySize)
        return w.bytes
    }

    /// One module entry: { mod_start, mod_end (exclusive), string, reserved }.
    public static func encodeModule(start: UInt32, end: UInt32, string: UInt32) -> [UInt8] {
        le32(start) + le32(end) + le32(string) + le32(0)
    }

    /// `mem_lower`/`mem_upper` from the map: RAM at 0 (capped at 640 KiB) and the RAM
    /// run starting at 1 MiB.
    static func memorySizes(_ map: [MemoryMapEntry]) -> (lower: UInt32, upper: UInt32) {
        let lower = map.first { $0.kind == .ram && $0.base == 0 }.map { min($0.size, 640 << 10) >> 10 } ?? 0
        let upper = map.first { $0.kind == .ram && $0.base == BootLayout.highMemoryStart }
            .map { min($0.size >> 10, UInt64(UInt32.max)) } ?? 0
        return (UInt32(lower), UInt32(upper))
    }
}
