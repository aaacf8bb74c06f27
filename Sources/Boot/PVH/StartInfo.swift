/// `struct hvm_start_info` and its tables (Xen's xen/include/public/arch-x86/hvm/start_info.h,
/// version 1): what a PVH kernel finds at EBX on entry.
public struct StartInfo: Sendable, Equatable {
    public static let magic: UInt32 = 0x336E_C578
    public static let version: UInt32 = 1
    public static let size = 56
    public static let moduleEntrySize = 32
    public static let memoryMapEntrySize = 24

    public var moduleListAddress: UInt64 = 0
    public var moduleCount: UInt32 = 0
    public var commandLineAddress: UInt64 = 0
    public var rsdpAddress: UInt64 = 0
    public var memoryMapAddress: UInt64 = 0
    public var memoryMapEntries: UInt32 = 0

    public init() {}

    /// The 56-byte structure.
    public func encoded() -> [UInt8] {
        var w = ByteWriter(size: Self.size)
        w.put(Self.magic, at: 0)
        w.put(Self.version, at: 4)
        w.put(UInt32(0), at: 8)               // flags
        w.put(moduleCount, at: 12)
        w.put(moduleListAddress, at: 16)
        w.put(commandLineAddress, at: 24)
        w.put(rsdpAddress, at: 32)
        w.put(memoryMapAddress, at: 40)
        w.put(memoryMapEntries, at: 48)
        return w.bytes
    }

    /// `hvm_memmap_table_entry` array.
    public static func encodeMemoryMap(_ map: [MemoryMapEntry]) -> [UInt8] {
        var w = ByteWriter(size: map.count * memoryMapEntrySize)
        MemoryMapEntry.put(map, into: &w, at: 0, stride: memoryMapEntrySize)
        return w.bytes
    }

    /// One `hvm_modlist_entry`.
    public static func encodeModule(address: UInt64, size: UInt64, commandLine: UInt64 = 0) -> [UInt8] {
        var w = ByteWriter(size: moduleEntrySize)
        w.put(address, at: 0)
        w.put(size, at: 8)
        w.put(commandLine, at: 16)
        return w.bytes
    }
}
