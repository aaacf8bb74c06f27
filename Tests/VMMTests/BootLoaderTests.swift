import Boot
import GuestMemory
import Testing

@Suite struct PVHLoaderTests {
    let memory: GuestMemory
    init() throws { memory = try GuestMemory.create(ramSize: 32 << 20) }

    func request(_ elf: ELFWriter, initrd: [UInt8]? = nil, cmdline: String = "console=ttyS0") -> BootRequest {
        BootRequest(kernel: elf.bytes(), initrd: initrd, commandLine: cmdline)
    }

    @Test func loadsSegmentsStartInfoAndModule() throws {
        var elf = ELFWriter(loadAddress: 0x100000, code: [0xF4, 0xEB, 0xFD])
        elf.bssSize = 0x1000
        try memory.fill(0xCC, at: GuestAddress(0x100003), count: 0x1000)  // must be zeroed (p_memsz)
        let initrd = [UInt8](repeating: 0x5A, count: 10000)
        let entry = try PVHLoader.load(request(elf, initrd: initrd), into: memory)
        #expect(entry.mode == .protected32)
        #expect(entry.rip == 0x100000)
        #expect(entry.registers.first?.1 == BootLayout.bootInfo.raw)
        #expect(try memory.read(at: GuestAddress(0x100000), count: 3) == [0xF4, 0xEB, 0xFD])
        #expect(try memory.read(at: GuestAddress(0x100003), count: 0x1000).allSatisfy { $0 == 0 })

        let info = BootLayout.bootInfo
        #expect(try memory.readInteger(UInt32.self, at: info) == StartInfo.magic)
        #expect(try memory.readInteger(UInt32.self, at: GuestAddress(info.raw + 4)) == 1)
        #expect(try memory.readInteger(UInt32.self, at: GuestAddress(info.raw + 12)) == 1)
        let cmdline = try memory.readInteger(UInt64.self, at: GuestAddress(info.raw + 24))
        #expect(try memory.readCString(at: GuestAddress(cmdline), maxLength: 100) == "console=ttyS0")
        let modlist = try memory.readInteger(UInt64.self, at: GuestAddress(info.raw + 16))
        let modAddr = try memory.readInteger(UInt64.self, at: GuestAddress(modlist))
        #expect(try memory.readInteger(UInt64.self, at: GuestAddress(modlist + 8)) == 10000)
        #expect(modAddr % 4096 == 0 && modAddr + 10000 <= 32 << 20 && modAddr >= 0x102000)
        #expect(try memory.read(at: GuestAddress(modAddr), count: 10000) == initrd)

        let mapAddr = try memory.readInteger(UInt64.self, at: GuestAddress(info.raw + 40))
        let entries = try memory.readInteger(UInt32.self, at: GuestAddress(info.raw + 48))
        let map = try (0 ..< UInt64(entries)).map { i -> (UInt64, UInt64, UInt32) in
            let at = mapAddr + i * 24
            return (try memory.readInteger(UInt64.self, at: GuestAddress(at)),
                    try memory.readInteger(UInt64.self, at: GuestAddress(at + 8)),
                    try memory.readInteger(UInt32.self, at: GuestAddress(at + 16)))
        }
        #expect(map.contains { $0 == (0, 0x9FC00, 1) })
        #expect(map.contains { $0 == (0x100000, (32 << 20) - 0x100000, 1) })
        #expect(map.contains { $0.0 == 0xE0000 && $0.2 == 2 })
    }

    @Test func missingNoteIsRefused() {
        var elf = ELFWriter(loadAddress: 0x100000, code: [0xF4])
        elf.pvhNote = false
        #expect(throws: BootError.missingPVHNote) { try PVHLoader.load(request(elf), into: memory) }
        #expect(throws: BootError.missingPVHNote) { try BootImageFormat.detect(elf.bytes()) }
    }

    @Test func truncatedImagesAreRefusedAtEveryLength() {
        let bytes = ELFWriter(loadAddress: 0x100000, code: [UInt8](repeating: 0x90, count: 64)).bytes()
        for length in 0 ..< bytes.count {
            #expect(throws: BootError.self) { try PVHLoader.load(BootRequest(kernel: Array(bytes.prefix(length))), into: memory) }
        }
    }

    @Test func segmentOutsideRAMOrInTheHoleIsRefused() {
        let outside = ELFWriter(loadAddress: 0x0300_0000, code: [0xF4])  // 48 MiB, RAM is 32
        #expect(throws: BootError.segmentOutsideRAM(index: 0, address: 0x0300_0000, size: 1)) {
            try PVHLoader.load(request(outside), into: memory)
        }
        let hole = ELFWriter(loadAddress: 0xFEE0_0000, code: [0xF4])
        #expect(throws: BootError.segmentOutsideRAM(index: 0, address: 0xFEE0_0000, size: 1)) {
            try PVHLoader.load(request(hole), into: memory)
        }
        var crossing = ELFWriter(loadAddress: 0x01FF_F000, code: [0xF4])
        crossing.bssSize = 0x2000
        #expect(throws: BootError.self) { try PVHLoader.load(request(crossing), into: memory) }
    }

    @Test func hugeMemorySizeIsRefused() {
        var elf = ELFWriter(loadAddress: 0x100000, code: [0xF4])
        elf.bssSize = 0xFFFF_FF00  // p_memsz near 4 GiB
        #expect(throws: BootError.self) { try PVHLoader.load(request(elf), into: memory) }
    }

    @Test func entryOutsideRAMIsRefused() {
        let elf = ELFWriter(loadAddress: 0x100000, code: [0xF4], entry: 0xC000_0000)
        #expect(throws: BootError.entryOutsideRAM(0xC000_0000)) { try PVHLoader.load(request(elf), into: memory) }
    }

    @Test func segmentOverBootDataIsRefused() {
        let elf = ELFWriter(loadAddress: 0x6000, code: [0xF4])
        #expect(throws: BootError.self) { try PVHLoader.load(request(elf), into: memory) }
    }

    @Test func overlongCommandLineIsRefused() {
        let elf = ELFWriter(loadAddress: 0x100000, code: [0xF4])
        let line = String(repeating: "x", count: BootLayout.commandLineLimit)
        #expect(throws: BootError.commandLineTooLong(length: line.count, limit: BootLayout.commandLineLimit - 1)) {
            try PVHLoader.load(request(elf, cmdline: line), into: memory)
        }
    }

    @Test func initrdThatCannotFitIsRefused() {
        let elf = ELFWriter(loadAddress: 0x100000, code: [0xF4])
        #expect(throws: BootError.initrdTooLarge(size: 40 << 20)) {
            try PVHLoader.load(request(elf, initrd: [UInt8](repeating: 0, count: 40 << 20)), into: memory)
        }
    }

    @Test func corruptHeadersNeverCrash() throws {
        // Flip every byte of the headers and notes in turn: each load either succeeds or
        // throws a BootError; nothing traps.
        let good = ELFWriter(loadAddress: 0x100000, code: [0xF4, 0x90, 0x90, 0x90]).bytes()
        for i in 0 ..< min(good.count, 0x90) {
            for value in [0x00, 0xFF, 0x7F] as [UInt8] {
                var bad = good
                bad[i] = value
                do { _ = try PVHLoader.load(BootRequest(kernel: bad), into: memory) } catch is BootError {}
            }
        }
    }

    @Test func absurdProgramHeaderCountIsRefused() {
        var bytes = ELFWriter(loadAddress: 0x100000, code: [0xF4]).bytes()
        bytes[44] = 0xFF; bytes[45] = 0xFF  // e_phnum = 65535
        #expect(throws: BootError.self) { try ELFImage(bytes: bytes) }
    }

    @Test func demoGuestIsAWellFormedPVHImage() throws {
        let image = try ELFImage(bytes: DemoGuest.image())
        #expect(image.pvhEntry == DemoGuest.loadAddress)
        #expect(image.elfClass == .elf32)
    }
}
