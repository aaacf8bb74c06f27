import GuestMemory
import KVM

/// Boots a Multiboot (v1) kernel (Multiboot Specification 0.6.96): an ELF whose segments
/// go to their physical addresses, or any file placed by the header's a.out kludge. The
/// kernel gets the memory map, the command line, the initrd as module 0 (page aligned)
/// and the loader's name, and starts as section 3.2 says: 32-bit protected mode, paging
/// off, flat segments, interrupts off, EAX = 0x2BADB002, EBX = the information structure.
public enum MultibootLoader {
    /// The module's string and the loader's name, next to the module list.
    static let moduleString = GuestAddress(BootLayout.moduleList.raw + 0x100)
    static let loaderName = GuestAddress(BootLayout.moduleList.raw + 0x200)
    public static let loaderNameText = "swift-vmm"

    public static func load(_ request: BootRequest, into memory: GuestMemory) throws -> BootEntry {
        let header = try MultibootHeader(image: request.kernel)
        let entry: UInt64, kernelEnd: UInt64
        if let layout = try header.aoutLayout(fileSize: request.kernel.count), let a = header.addresses {
            try BootData.checkLoadable(index: 0, address: layout.address, size: layout.bssEnd - layout.address, in: memory)
            let bytes = Array(request.kernel[layout.fileOffset ..< layout.fileOffset + Int(layout.size)])
            try BootError.memory {
                try memory.load(bytes, at: GuestAddress(layout.address))
                let loadedEnd = layout.address + layout.size
                if layout.bssEnd > loadedEnd { try memory.fill(0, at: GuestAddress(loadedEnd), count: layout.bssEnd - loadedEnd) }
            }
            entry = UInt64(a.entry)
            kernelEnd = layout.bssEnd
        } else {
            let image: ELFImage
            do { image = try ELFImage(bytes: request.kernel) } catch let error as BootError {
                throw BootError.badFormat("a multiboot kernel without the a.out kludge (flag 16) must be an ELF; \(error)")
            }
            kernelEnd = try BootData.loadSegments(of: image, into: memory)
            entry = image.physicalEntry
        }
        try BootData.checkEntry(entry, in: memory)

        var info = MultibootInfo()
        let map = MemoryMapEntry.standardMap(for: memory)
        (info.memoryLowerKiB, info.memoryUpperKiB) = MultibootInfo.memorySizes(map)
        info.commandLineAddress = UInt32(try BootData.writeCommandLine(request.commandLine, into: memory))
        let mmap = MultibootInfo.encodeMemoryMap(map)
        try BootError.memory { try memory.load(mmap, at: BootLayout.memoryMap) }
        info.memoryMapAddress = UInt32(BootLayout.memoryMap.raw)
        info.memoryMapLength = UInt32(mmap.count)
        if let initrd = request.initrd, !initrd.isEmpty {
            let address = try BootData.placeInitrd(initrd, above: kernelEnd, below: GuestMemory.mmioHoleStart, in: memory)
            try BootError.memory {
                try memory.load(Array("initrd".utf8) + [0], at: moduleString)
                try memory.load(MultibootInfo.encodeModule(start: UInt32(address), end: UInt32(address) + UInt32(initrd.count),
                                                           string: UInt32(moduleString.raw)), at: BootLayout.moduleList)
            }
            info.moduleCount = 1
            info.moduleListAddress = UInt32(BootLayout.moduleList.raw)
        }
        try BootError.memory { try memory.load(Array(loaderNameText.utf8) + [0], at: loaderName) }
        info.loaderNameAddress = UInt32(loaderName.raw)
        try BootError.memory { try memory.load(info.encoded(), at: BootLayout.bootInfo) }
        try BootEntry.writeGDT(into: memory, mode: .protected32)
        return BootEntry(mode: .protected32, rip: entry,
                         registers: [(.rax, UInt64(MultibootInfo.bootloaderMagic)), (.rbx, BootLayout.bootInfo.raw)])
    }
}
