import GuestMemory
import KVM

/// Boots a Linux bzImage by the x86 boot protocol (Documentation/arch/x86/boot.rst,
/// protocol 2.10 and later) without running its real-mode setup code.
///
/// The protected-mode kernel goes at `pref_address` (relocatable kernels; the kernel
/// needs `init_size` bytes from there to decompress itself), the zero page gets the
/// setup header, the e820 map, the command line, the initrd and the RSDP.
///
/// Entry: the 64-bit entry (load address + 0x200) when the kernel has one
/// (XLF_KERNEL_64), in long mode with the low 4 GiB identity-mapped, RSI = zero page.
/// That is the protocol 64-bit loaders (kexec, the EFI stub's handover) use: the vCPU
/// starts in the mode the kernel runs in, and the decompressor skips its 32-bit
/// page-table setup and mode switch, which on a KVM that emulates CPL 0 costs emulated
/// instructions for nothing. A kernel without a 64-bit entry gets the 32-bit one at the
/// load address (`code32_start`): protected mode, paging off, ESI = zero page. Either
/// way CS is `__BOOT_CS` (0x10) and the data segments `__BOOT_DS` (0x18), interrupts off.
public enum BzImageLoader {
    /// The 64-bit entry's offset from the load address.
    public static let entry64Offset: UInt64 = 0x200
    /// Where a kernel that cannot relocate runs its protected-mode code (boot.rst: 0x100000).
    public static let defaultLoadAddress: UInt64 = 0x10_0000

    public static func load(_ request: BootRequest, into memory: GuestMemory) throws -> BootEntry {
        let header = try SetupHeader(image: request.kernel)
        return try load(header, request: request, into: memory)
    }

    public static func load(_ header: SetupHeader, request: BootRequest, into memory: GuestMemory) throws -> BootEntry {
        let kernel = request.kernel[header.setupSize...]
        let alignment = UInt64(header.kernelAlignment)
        let address = header.relocatable
            ? (max(header.preferredAddress, defaultLoadAddress) + alignment - 1) & ~(alignment - 1)
            : defaultLoadAddress
        // The kernel decompresses into [runtime address, + init_size), the runtime address
        // being pref_address for a relocatable kernel at or below it and for any other.
        let runtime = max(address, header.preferredAddress)
        let needed = runtime + UInt64(header.initSize)
        guard let (segment, _) = try? memory.resolve(GuestAddress(runtime), length: UInt64(header.initSize)),
              segment.kind == .systemRAM else {
            throw BootError.notEnoughRAM(address: runtime, size: UInt64(header.initSize))
        }
        try BootData.checkLoadable(index: 0, address: address, size: UInt64(kernel.count), in: memory)
        try BootError.memory { try memory.load(Array(kernel), at: GuestAddress(address)) }

        let limit = min(Int(header.commandLineSize) + 1, BootLayout.commandLineLimit)
        var params = BootParams(header: header, e820: MemoryMapEntry.standardMap(for: memory),
                                kernelAddress: UInt32(truncatingIfNeeded: address))
        params.commandLineAddress = try BootData.writeCommandLine(request.commandLine, into: memory, limit: limit)
        if let initrd = request.initrd, !initrd.isEmpty {
            let top = min(UInt64(header.initrdAddressMax) + 1, GuestMemory.mmioHoleStart)
            params.initrdAddress = try BootData.placeInitrd(initrd, above: needed, below: top, in: memory)
            params.initrdSize = UInt64(initrd.count)
        }
        params.rsdpAddress = request.rsdp?.raw ?? 0
        try BootError.memory { try memory.load(try params.encoded(), at: BootLayout.bootInfo) }

        let bootParams = (VCPURegister.rsi, BootLayout.bootInfo.raw)
        if header.has64BitEntry {
            let mode = BootEntry.Mode.long64(pageTables: try IdentityPageTables.write(into: memory))
            try BootEntry.writeGDT(into: memory, mode: mode)
            return BootEntry(mode: mode, rip: address + entry64Offset, registers: [bootParams])
        }
        try BootEntry.writeGDT(into: memory, mode: .protected32)
        return BootEntry(mode: .protected32, rip: address,
                         registers: [bootParams, (.rbp, 0), (.rdi, 0), (.rbx, 0)])
    }
}
