import Boot
import GuestMemory
import KVM
import Testing

/// A synthetic bzImage: boot sector with the setup header, `setupSects` sectors of setup
/// code, then `kernelSize` bytes of "protected-mode kernel" (a counting pattern).
struct FakeBzImage {
    var version: UInt16 = 0x020F
    var setupSects: UInt8 = 1
    var loadFlags: UInt8 = 0x01
    var xLoadFlags: UInt16 = 0x3          // XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
    var kernelSize = 8192
    var initSize: UInt32 = 0x40_0000
    var alignment: UInt32 = 0x20_0000
    var preferred: UInt64 = 0x100_0000
    var relocatable: UInt8 = 1
    var commandLineSize: UInt32 = 2047
    var initrdMax: UInt32 = 0x7FFF_FFFF
    var payloadOffset: UInt32 = 0x100
    var payloadLength: UInt32 = 0x1000
    var headerEnd = 0x268
    var bootFlag: UInt16 = 0xAA55

    var setupSize: Int { (Int(setupSects == 0 ? 4 : setupSects) + 1) * 512 }

    func bytes() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: setupSize) + (0 ..< kernelSize).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        func put<T: FixedWidthInteger>(_ v: T, _ at: Int) {
            for i in 0 ..< MemoryLayout<T>.size { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) }
        }
        put(setupSects, 0x1F1)
        put(UInt32(kernelSize / 16), 0x1F4)
        put(bootFlag, 0x1FE)
        put(UInt8(0xEB), 0x200)
        put(UInt8(headerEnd - 0x202), 0x201)
        put(UInt32(0x5372_6448), 0x202)
        put(version, 0x206)
        put(loadFlags, 0x211)
        put(UInt32(0x10_0000), 0x214)
        put(initrdMax, 0x22C)
        put(alignment, 0x230)
        put(relocatable, 0x234)
        put(xLoadFlags, 0x236)
        put(commandLineSize, 0x238)
        put(payloadOffset, 0x248)
        put(payloadLength, 0x24C)
        put(preferred, 0x258)
        put(initSize, 0x260)
        return b
    }
}

@Suite struct SetupHeaderTests {
    @Test func parsesAValidHeader() throws {
        let h = try SetupHeader(image: FakeBzImage().bytes())
        #expect(h.version == 0x020F && h.setupSize == 1024 && h.has64BitEntry && h.relocatable)
        #expect(h.preferredAddress == 0x100_0000 && h.initSize == 0x40_0000 && h.kernelAlignment == 0x20_0000)
        #expect(h.commandLineSize == 2047 && h.initrdAddressMax == 0x7FFF_FFFF)
        #expect(h.bytes.count == 0x268 - 0x1F1)
        #expect(SetupHeader.matches(FakeBzImage().bytes()))
        // setup_sects 0 means 4.
        var four = FakeBzImage()
        four.setupSects = 0
        #expect(try SetupHeader(image: four.bytes()).setupSize == 5 * 512)
    }

    @Test func malformedHeadersGetClearErrors() {
        func refuses(_ change: (inout FakeBzImage) -> Void, _ comment: Comment) {
            var image = FakeBzImage()
            change(&image)
            #expect(throws: BootError.self, comment) { try SetupHeader(image: image.bytes()) }
        }
        refuses({ $0.bootFlag = 0x1234 }, "no boot flag")
        refuses({ $0.version = 0x0209 }, "protocol 2.09")
        refuses({ $0.loadFlags = 0 }, "zImage")
        refuses({ $0.alignment = 0x30_0000 }, "alignment not a power of two")
        refuses({ $0.alignment = 0 }, "alignment 0")
        refuses({ $0.preferred = 0x100_1000 }, "pref_address not aligned")
        refuses({ $0.initSize = 0x1000 }, "init_size below the kernel's size")
        refuses({ $0.initSize = 0x8000_0000 }, "init_size of 2 GiB")
        refuses({ $0.payloadLength = 0xFFFF_FFF0 }, "payload beyond the file")
        refuses({ $0.headerEnd = 0x240 }, "header ends before the 2.10 fields")
        refuses({ $0.setupSects = 200; $0.kernelSize = 16 }, "setup sectors beyond the file")
        // Truncated anywhere in the header: a clear error, never a crash.
        let whole = FakeBzImage().bytes()
        for length in [0, 1, 0x1FF, 0x203, 0x207, 0x230, 0x262, 0x267, 1024] {
            #expect(throws: BootError.self, "\(length) bytes") { try SetupHeader(image: Array(whole.prefix(length))) }
        }
        #expect(!SetupHeader.matches(Array(whole.prefix(0x204))))
    }
}

@Suite struct BzImageLoaderTests {
    let memory: GuestMemory
    init() throws { memory = try GuestMemory.create(ramSize: 64 << 20) }

    func zeroPage<T: FixedWidthInteger>(_ offset: UInt64, _ type: T.Type = T.self) throws -> T {
        try memory.readInteger(T.self, at: GuestAddress(BootLayout.bootInfo.raw + offset))
    }

    @Test func loadsTheKernelAndBuildsTheZeroPage() throws {
        let image = FakeBzImage()
        let bytes = image.bytes()
        let initrd = [UInt8](repeating: 0xA5, count: 5000)
        var request = BootRequest(kernel: bytes, initrd: initrd, commandLine: "console=ttyS0 root=/dev/ram0")
        request.rsdp = GuestAddress(0xE0000)
        let entry = try BzImageLoader.load(request, into: memory)

        // 64-bit entry at load + 0x200 with the identity-mapped tables, RSI = zero page.
        #expect(entry.mode == .long64(pageTables: BootLayout.pageTables.raw))
        #expect(entry.rip == 0x100_0200)
        #expect(entry.registers.first { $0.0 == .rsi }?.1 == BootLayout.bootInfo.raw)
        #expect(try memory.read(at: GuestAddress(0x100_0000), count: image.kernelSize) == Array(bytes[1024...]))

        // The setup header is copied, then the loader's fields are set.
        #expect(try zeroPage(0x1FE, UInt16.self) == 0xAA55)
        #expect(try zeroPage(0x202, UInt32.self) == 0x5372_6448)
        #expect(try zeroPage(0x1EF, UInt8.self) == 0)                       // sentinel
        #expect(try zeroPage(0x210, UInt8.self) == 0xFF)                    // type_of_loader
        #expect(try zeroPage(0x214, UInt32.self) == 0x100_0000)             // code32_start
        #expect(try zeroPage(0x070, UInt64.self) == 0xE0000)                // acpi_rsdp_addr
        let cmdline = UInt64(try zeroPage(0x228, UInt32.self)) | UInt64(try zeroPage(0x0C8, UInt32.self)) << 32
        #expect(try memory.readCString(at: GuestAddress(cmdline), maxLength: 100) == "console=ttyS0 root=/dev/ram0")
        let ramdisk = UInt64(try zeroPage(0x218, UInt32.self))
        #expect(try zeroPage(0x21C, UInt32.self) == 5000)
        #expect(ramdisk % 4096 == 0)
        #expect(ramdisk >= 0x100_0000 + 0x40_0000, "the initrd must not overlap [load, load + init_size)")
        #expect(ramdisk + 5000 <= 64 << 20)
        #expect(try memory.read(at: GuestAddress(ramdisk), count: 5000) == initrd)

        // e820: the same map PVH gets.
        let count = Int(try zeroPage(0x1E8, UInt8.self))
        let expected = MemoryMapEntry.standardMap(for: memory)
        #expect(count == expected.count)
        for (i, e) in expected.enumerated() {
            let at = UInt64(0x2D0 + i * 20)
            #expect(try zeroPage(at, UInt64.self) == e.base)
            #expect(try zeroPage(at + 8, UInt64.self) == e.size)
            #expect(try zeroPage(at + 16, UInt32.self) == e.kind.rawValue)
        }

        // Identity map: PML4[0] → PDPT, PDPT[3] → the fourth directory, whose last entry
        // maps 4 GiB - 2 MiB with a large page.
        let base = BootLayout.pageTables.raw
        #expect(try memory.readInteger(UInt64.self, at: GuestAddress(base)) == (base + 0x1000) | 0x3)
        #expect(try memory.readInteger(UInt64.self, at: GuestAddress(base + 0x1000 + 24)) == (base + 0x5000) | 0x3)
        #expect(try memory.readInteger(UInt64.self, at: GuestAddress(base + 0x5000 + 511 * 8)) == 0xFFE0_0000 | 0x83)
    }

    @Test func honoursInitrdAddressMaxAndTheEntryKind() throws {
        var image = FakeBzImage()
        image.initrdMax = 0x1FF_FFFF          // initrd must end at or below 32 MiB
        image.xLoadFlags = 0                  // no 64-bit entry
        let entry = try BzImageLoader.load(BootRequest(kernel: image.bytes(), initrd: [1, 2, 3]), into: memory)
        #expect(entry.mode == .protected32 && entry.rip == 0x100_0000)
        let ramdisk = UInt64(try zeroPage(0x218, UInt32.self))
        #expect(ramdisk + 3 <= 0x200_0000 && ramdisk >= 0x140_0000)

        var early = FakeBzImage()
        early.preferred = 0                     // below 1 MiB: loaded at 1 MiB rounded up to the alignment
        #expect(try BzImageLoader.load(BootRequest(kernel: early.bytes()), into: memory).rip == 0x20_0200)

        var fixed = FakeBzImage()
        fixed.relocatable = 0                 // a kernel that cannot relocate loads at 1 MiB
        #expect(try BzImageLoader.load(BootRequest(kernel: fixed.bytes()), into: memory).rip == 0x10_0200)
    }

    @Test func refusesWhatDoesNotFit() throws {
        let small = try GuestMemory.create(ramSize: 16 << 20)
        var big = FakeBzImage()
        big.initSize = 0x100_0000             // 16 MiB from pref_address 16 MiB: beyond RAM
        #expect(throws: BootError.notEnoughRAM(address: 0x100_0000, size: 0x100_0000)) {
            try BzImageLoader.load(BootRequest(kernel: big.bytes()), into: small)
        }
        #expect(BootError.notEnoughRAM(address: 0x100_0000, size: 0x3378000).description.hasSuffix("at least 68 MiB"))

        var short = FakeBzImage()
        short.commandLineSize = 10
        #expect(throws: BootError.commandLineTooLong(length: 11, limit: 10)) {
            try BzImageLoader.load(BootRequest(kernel: short.bytes(), commandLine: "01234567890"), into: memory)
        }
        var lowMax = FakeBzImage()
        lowMax.initrdMax = 0x140_0000         // no room between the kernel's init_size and the max
        #expect(throws: BootError.initrdTooLarge(size: 4096)) {
            try BzImageLoader.load(BootRequest(kernel: lowMax.bytes(), initrd: [UInt8](repeating: 0, count: 4096)), into: memory)
        }
    }

    @Test func zeroPageRefusesMoreThan128E820Entries() throws {
        let header = try SetupHeader(image: FakeBzImage().bytes())
        let map = (0 ..< 129).map { MemoryMapEntry(base: UInt64($0) << 20, size: 4096, kind: .ram) }
        #expect(throws: BootError.self) { try BootParams(header: header, e820: map, kernelAddress: 0).encoded() }
        #expect(try BootParams(header: header, e820: Array(map.prefix(128)), kernelAddress: 0).encoded().count == 4096)
    }

    @Test func detectedAsBzImage() throws {
        #expect(try BootImageFormat.detect(FakeBzImage().bytes()) == .bzImage)
        let (format, _) = try ImageLoader.load(BootRequest(kernel: FakeBzImage().bytes()), into: memory)
        #expect(format == .bzImage)
    }
}
