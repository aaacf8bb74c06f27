import GuestMemory
import KVM

/// Direct boot of an ELF kernel through the PVH entry point (Xen's "x86/HVM direct boot
/// ABI", docs/misc/pvh.pandoc): the loader places the ELF's segments, builds an
/// `hvm_start_info` with the memory map, command line and the initrd as module 0, and
/// the vCPU starts in 32-bit protected mode, paging off, at the note's entry with EBX
/// pointing at the start info.
public enum PVHLoader {
    /// Loads `request` (whose kernel must be a PVH ELF) into `memory`.
    public static func load(_ request: BootRequest, into memory: GuestMemory) throws -> BootEntry {
        let image = try ELFImage(bytes: request.kernel)
        return try load(image, request: request, into: memory)
    }

    public static func load(_ image: ELFImage, request: BootRequest, into memory: GuestMemory) throws -> BootEntry {
        guard let entry = image.pvhEntry else { throw BootError.missingPVHNote }
        let kernelEnd = try BootData.loadSegments(of: image, into: memory)
        try BootData.checkEntry(UInt64(entry), in: memory)

        var info = StartInfo()
        info.commandLineAddress = try BootData.writeCommandLine(request.commandLine, into: memory)
        if let initrd = request.initrd, !initrd.isEmpty {
            // PVH addresses are 64-bit, but a 32-bit entry can only reach the low 4 GiB.
            let address = try BootData.placeInitrd(initrd, above: kernelEnd, below: GuestMemory.mmioHoleStart, in: memory)
            try BootError.memory {
                try memory.load(StartInfo.encodeModule(address: address, size: UInt64(initrd.count)), at: BootLayout.moduleList)
            }
            info.moduleListAddress = BootLayout.moduleList.raw
            info.moduleCount = 1
        }
        let map = MemoryMapEntry.standardMap(for: memory)
        try BootError.memory { try memory.load(StartInfo.encodeMemoryMap(map), at: BootLayout.memoryMap) }
        info.memoryMapAddress = BootLayout.memoryMap.raw
        info.memoryMapEntries = UInt32(map.count)
        info.rsdpAddress = request.rsdp?.raw ?? 0
        try BootError.memory { try memory.load(info.encoded(), at: BootLayout.bootInfo) }
        try BootEntry.writeGDT(into: memory)

        return BootEntry(mode: .protected32, rip: UInt64(entry), registers: [(.rbx, BootLayout.bootInfo.raw)])
    }
}
