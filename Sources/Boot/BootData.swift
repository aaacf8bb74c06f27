import GuestMemory

/// What the user asks to boot: the parts every protocol shares.
public struct BootRequest: Sendable {
    public var kernel: [UInt8]
    public var initrd: [UInt8]?
    public var commandLine: String
    /// Guest-physical address of the ACPI RSDP, when tables were built.
    public var rsdp: GuestAddress?

    public init(kernel: [UInt8], initrd: [UInt8]? = nil, commandLine: String = "", rsdp: GuestAddress? = nil) {
        self.kernel = kernel; self.initrd = initrd; self.commandLine = commandLine; self.rsdp = rsdp
    }
}

/// Placement helpers shared by the image loaders.
enum BootData {
    /// Writes the NUL-terminated command line at `BootLayout.commandLine`.
    static func writeCommandLine(_ line: String, into memory: GuestMemory, limit: Int = BootLayout.commandLineLimit) throws -> UInt64 {
        let bytes = Array(line.utf8) + [0]
        guard bytes.count <= limit else { throw BootError.commandLineTooLong(length: bytes.count - 1, limit: limit - 1) }
        try BootError.memory { try memory.load(bytes, at: BootLayout.commandLine) }
        return BootLayout.commandLine.raw
    }

    /// Checks that `[address, address + size)` is system RAM (not the hole, not a ROM)
    /// and does not overlap boot data.
    static func checkLoadable(index: Int, address: UInt64, size: UInt64, in memory: GuestMemory) throws {
        guard let (segment, _) = try? memory.resolve(GuestAddress(address), length: size),
              segment.kind == .systemRAM, !segment.readOnly else {
            throw BootError.segmentOutsideRAM(index: index, address: address, size: size)
        }
        for (name, base, length) in BootLayout.reserved where address < base + length && base < address + size {
            throw BootError.overlap("segment \(index) at 0x\(String(address, radix: 16)): it overlaps the \(name)")
        }
    }

    /// Copies an ELF's PT_LOAD segments to their physical addresses, zeroing the tail
    /// (p_memsz beyond p_filesz). Returns the end of the highest segment.
    static func loadSegments(of image: ELFImage, into memory: GuestMemory) throws -> UInt64 {
        var end: UInt64 = 0
        for (i, s) in image.segments.enumerated() {
            try checkLoadable(index: i, address: s.physicalAddress, size: s.memorySize, in: memory)
            try BootError.memory {
                try memory.load(image.fileBytes(of: s), at: GuestAddress(s.physicalAddress))
                if s.memorySize > s.fileSize {
                    try memory.fill(0, at: GuestAddress(s.physicalAddress + s.fileSize), count: s.memorySize - s.fileSize)
                }
            }
            end = max(end, s.physicalAddress + s.memorySize)
        }
        return end
    }

    /// Places the initrd as high as possible in RAM below `limit`, page aligned, above
    /// `kernelEnd`. Returns its address.
    static func placeInitrd(_ initrd: [UInt8], above kernelEnd: UInt64, below limit: UInt64,
                            in memory: GuestMemory) throws -> UInt64 {
        let size = UInt64(initrd.count)
        let page: UInt64 = 4096
        for range in memory.ramRanges.reversed() {
            guard let last = range.last else { continue }
            let top = min(last.raw, limit &- 1) &+ 1   // exclusive end, clipped to the limit
            guard top > size, top <= limit else { continue }
            let address = (top - size) & ~(page - 1)
            guard address >= max(range.start.raw, kernelEnd, BootLayout.highMemoryStart) else { continue }
            try BootError.memory { try memory.load(initrd, at: GuestAddress(address)) }
            return address
        }
        throw BootError.initrdTooLarge(size: initrd.count)
    }

    /// Checks that the entry point lies in guest RAM.
    static func checkEntry(_ entry: UInt64, in memory: GuestMemory) throws {
        guard let (segment, _) = try? memory.resolve(GuestAddress(entry), length: 1), segment.kind == .systemRAM else {
            throw BootError.entryOutsideRAM(entry)
        }
    }
}
