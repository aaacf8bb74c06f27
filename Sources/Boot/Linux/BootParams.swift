/// The zero page, `struct boot_params` (arch/x86/include/uapi/asm/bootparam.h and
/// Documentation/arch/x86/zero-page.rst): 4 KiB handed to the kernel in RSI, holding the
/// setup header, the e820 map, and where the command line, initrd and RSDP are.
public struct BootParams: Sendable, Equatable {
    public static let size = 4096
    public static let maxE820Entries = 128
    static let e820EntrySize = 20
    /// `type_of_loader` 0xFF: "undefined" (boot.rst: a loader without an assigned ID).
    public static let loaderType: UInt8 = 0xFF

    public var header: SetupHeader
    public var e820: [MemoryMapEntry]
    public var commandLineAddress: UInt64 = 0
    public var initrdAddress: UInt64 = 0
    public var initrdSize: UInt64 = 0
    public var rsdpAddress: UInt64 = 0
    /// Where the protected-mode kernel was loaded (`code32_start` for the 32-bit entry).
    public var kernelAddress: UInt32

    public init(header: SetupHeader, e820: [MemoryMapEntry], kernelAddress: UInt32) {
        self.header = header; self.e820 = e820; self.kernelAddress = kernelAddress
    }

    public func encoded() throws -> [UInt8] {
        guard e820.count <= Self.maxE820Entries else { throw BootError.implausible("\(e820.count) e820 entries (at most 128)") }
        var w = ByteWriter(size: Self.size)
        w.put(rsdpAddress, at: 0x070)                                   // acpi_rsdp_addr
        w.put(UInt32(truncatingIfNeeded: initrdAddress >> 32), at: 0x0C0)  // ext_ramdisk_image
        w.put(UInt32(truncatingIfNeeded: initrdSize >> 32), at: 0x0C4)     // ext_ramdisk_size
        w.put(UInt32(truncatingIfNeeded: commandLineAddress >> 32), at: 0x0C8)  // ext_cmd_line_ptr
        w.put(UInt8(e820.count), at: 0x1E8)                              // e820_entries
        w.put(header.bytes, at: SetupHeader.offset)                      // hdr; sentinel 0x1EF stays 0
        w.put(Self.loaderType, at: 0x210)
        w.put(kernelAddress, at: 0x214)                                  // code32_start
        w.put(UInt32(truncatingIfNeeded: initrdAddress), at: 0x218)      // ramdisk_image
        w.put(UInt32(truncatingIfNeeded: initrdSize), at: 0x21C)         // ramdisk_size
        w.put(UInt32(truncatingIfNeeded: commandLineAddress), at: 0x228) // cmd_line_ptr
        w.put(UInt32(0), at: 0x23C)                                      // hardware_subarch: a PC
        MemoryMapEntry.put(e820, into: &w, at: 0x2D0, stride: Self.e820EntrySize)  // e820_table
        return w.bytes
    }
}
