import Boot
import Devices
import GuestMemory
import Testing
import VMM

/// A multiboot header: magic, flags, checksum, and the a.out kludge's five addresses.
func multibootHeader(flags: UInt32, checksum: UInt32? = nil, header: UInt32 = 0x100000, load: UInt32 = 0x100000,
                     loadEnd: UInt32 = 0, bssEnd: UInt32 = 0, entry: UInt32 = 0x100020) -> [UInt8] {
    let magic = MultibootHeader.magic
    return [magic, flags, checksum ?? (0 &- (magic &+ flags)), header, load, loadEnd, bssEnd, entry].flatMap { v in
        (0 ..< 4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) }
    }
}

@Suite struct MultibootHeaderTests {
    @Test func findsAnAlignedHeaderWithAValidChecksumInTheFirst8KiB() {
        #expect(MultibootHeader.find(in: [UInt8](repeating: 0, count: 12) + multibootHeader(flags: 0)) == 12)
        #expect(MultibootHeader.find(in: [0, 0] + multibootHeader(flags: 0)) == nil)          // not 4-aligned
        #expect(MultibootHeader.find(in: multibootHeader(flags: 0, checksum: 1)) == nil)     // bad checksum
        #expect(MultibootHeader.find(in: [UInt8](repeating: 0, count: 8192) + multibootHeader(flags: 0)) == nil)
        #expect(MultibootHeader.find(in: Array(multibootHeader(flags: 0).prefix(10))) == nil) // truncated
        #expect(MultibootHeader.find(in: []) == nil)
    }

    @Test func refusesUnknownRequirementsAndAbsurdAddresses() {
        #expect(throws: BootError.self) { try MultibootHeader(image: multibootHeader(flags: 1 << 5)) }
        #expect(throws: BootError.self) { try MultibootHeader(image: [0x7F, 0x45, 0x4C, 0x46]) }
        // load_addr above header_addr; the load start would lie before the file.
        #expect(throws: BootError.self) {
            try MultibootHeader(image: multibootHeader(flags: 1 << 16, header: 0x100000, load: 0x100004))
        }
        #expect(throws: BootError.self) {
            try MultibootHeader(image: multibootHeader(flags: 1 << 16, header: 0x200000, load: 0x100000))
        }
        #expect(throws: BootError.self) {   // load_end below load
            try MultibootHeader(image: multibootHeader(flags: 1 << 16, loadEnd: 0x80000))
        }
        #expect(throws: BootError.self) {   // bss_end below load_end
            try MultibootHeader(image: multibootHeader(flags: 1 << 16, loadEnd: 0x100100, bssEnd: 0x100010))
        }
        // The a.out fields themselves cut off.
        #expect(throws: BootError.truncated("multiboot address fields")) {
            try MultibootHeader(image: Array(multibootHeader(flags: 1 << 16).prefix(16)))
        }
    }

    @Test func aoutKludgeLoadsTheFileAndClearsTheBSS() throws {
        let memory = try GuestMemory.create(ramSize: 8 << 20)
        var image = multibootHeader(flags: 1 << 16 | 1 << 1, loadEnd: 0x100040, bssEnd: 0x101000, entry: 0x100020)
        image += [UInt8](repeating: 0x90, count: 0x40 - image.count) + [0xEE, 0xEE]   // past load_end: not loaded
        try memory.fill(0xCC, at: GuestAddress(0x100000), count: 0x2000)
        let entry = try MultibootLoader.load(BootRequest(kernel: image, initrd: [1, 2, 3], commandLine: "mb"), into: memory)
        #expect(entry.mode == .protected32 && entry.rip == 0x100020)
        #expect(entry.registers.contains { $0.0 == .rax && $0.1 == 0x2BAD_B002 })
        #expect(entry.registers.contains { $0.0 == .rbx && $0.1 == BootLayout.bootInfo.raw })
        #expect(try memory.read(at: GuestAddress(0x100000), count: 0x40) == Array(image.prefix(0x40)))
        #expect(try memory.read(at: GuestAddress(0x100040), count: 0x1000 - 0x40).allSatisfy { $0 == 0 })
        #expect(try memory.read(at: GuestAddress(0x101000), count: 1) == [0xCC])

        let info = BootLayout.bootInfo.raw
        let flags = try memory.readInteger(UInt32.self, at: GuestAddress(info))
        #expect(flags & (1 << 0 | 1 << 2 | 1 << 3 | 1 << 6 | 1 << 9) == (1 << 0 | 1 << 2 | 1 << 3 | 1 << 6 | 1 << 9))
        #expect(try memory.readInteger(UInt32.self, at: GuestAddress(info + 4)) == 0x9FC00 >> 10)       // mem_lower
        #expect(try memory.readInteger(UInt32.self, at: GuestAddress(info + 8)) == (8 << 10) - 1024)    // mem_upper
        let cmdline = try memory.readInteger(UInt32.self, at: GuestAddress(info + 16))
        #expect(try memory.readCString(at: GuestAddress(UInt64(cmdline)), maxLength: 10) == "mb")
        #expect(try memory.readInteger(UInt32.self, at: GuestAddress(info + 20)) == 1)
        let mods = UInt64(try memory.readInteger(UInt32.self, at: GuestAddress(info + 24)))
        let start = try memory.readInteger(UInt32.self, at: GuestAddress(mods))
        let end = try memory.readInteger(UInt32.self, at: GuestAddress(mods + 4))
        #expect(start % 4096 == 0 && end - start == 3)
        #expect(try memory.read(at: GuestAddress(UInt64(start)), count: 3) == [1, 2, 3])
        let mmapLength = try memory.readInteger(UInt32.self, at: GuestAddress(info + 44))
        let mmap = UInt64(try memory.readInteger(UInt32.self, at: GuestAddress(info + 48)))
        #expect(mmapLength == 4 * 24)
        #expect(try memory.readInteger(UInt32.self, at: GuestAddress(mmap)) == 20)                      // size
        #expect(try memory.readInteger(UInt64.self, at: GuestAddress(mmap + 4 + 24 * 3)) == 0x100000)   // 4th: base
        let name = try memory.readInteger(UInt32.self, at: GuestAddress(info + 64))
        #expect(try memory.readCString(at: GuestAddress(UInt64(name)), maxLength: 20) == "swift-vmm")
    }

    @Test func aoutKludgeRefusesTruncatedFilesAndPlacesOutsideRAM() throws {
        let memory = try GuestMemory.create(ramSize: 8 << 20)
        let short = multibootHeader(flags: 1 << 16, loadEnd: 0x100100)   // asks for 256 bytes, has 32
        #expect(throws: BootError.self) { try MultibootLoader.load(BootRequest(kernel: short), into: memory) }
        let high = multibootHeader(flags: 1 << 16, header: 0xF000_0000, load: 0xF000_0000, entry: 0xF000_0020)
        #expect(throws: BootError.self) { try MultibootLoader.load(BootRequest(kernel: high), into: memory) }
        let lowData = multibootHeader(flags: 1 << 16, header: 0x6000, load: 0x6000, entry: 0x6020)  // over the boot info
        #expect(throws: BootError.self) { try MultibootLoader.load(BootRequest(kernel: lowData), into: memory) }
        // No a.out kludge and not an ELF: says both.
        #expect(throws: BootError.badFormat("a multiboot kernel without the a.out kludge (flag 16) must be an ELF; image is truncated: ELF identification extends past the end of the file")) {
            try MultibootLoader.load(BootRequest(kernel: multibootHeader(flags: 0).prefix(12) + []), into: memory)
        }
    }

    @Test func formatDetection() throws {
        #expect(try BootImageFormat.detect(multibootHeader(flags: 1 << 16)) == .multiboot)
        #expect(try BootImageFormat.detect(ELFWriter(loadAddress: 0x100000, code: [0xF4]).bytes()) == .pvhELF)
        var noNote = ELFWriter(loadAddress: 0x100000, code: [0xF4])
        noNote.pvhNote = false
        #expect(throws: BootError.missingPVHNote) { try BootImageFormat.detect(noNote.bytes()) }
        var mbELF = ELFWriter(loadAddress: 0x100000, code: multibootHeader(flags: 0) + [0xF4])
        mbELF.pvhNote = false
        #expect(try BootImageFormat.detect(mbELF.bytes()) == .multiboot)
        #expect(throws: BootError.self) { try BootImageFormat.detect([1, 2, 3]) }
        #expect(throws: BootError.self) { try BootImageFormat.detect([]) }
    }
}

@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct MultibootGuestTests {
    func run(_ image: [UInt8]) throws -> (StopReason, String) {
        var config = MachineConfig()
        config.memoryMiB = 32
        config.kernel = image
        config.initrd = Array("ramdisk-contents".utf8) + [0]
        config.commandLine = "multi boot=1"
        config.debugExit = true
        let output = BufferOutput()
        config.serialOutput = output
        let machine = try Machine(config: config)
        #expect(machine.bootFormat == .multiboot)
        return (try machine.run(), output.text)
    }

    static let expected = "multiboot: swift-vmm\ncmdline: multi boot=1\nmodule: initrd ramdisk-contents\nmmap: 4\n"

    @Test func elfMultibootKernelGetsItsBootInformation() throws {
        let (reason, out) = try run(TestGuests.image("multiboot"))
        #expect(out == Self.expected)
        #expect(reason == .powerOff)
    }

    @Test func aoutKludgeKernelGetsItsBootInformation() throws {
        let (reason, out) = try run(TestGuests.file("multiboot-aout.bin"))
        #expect(out == Self.expected)
        #expect(reason == .powerOff)
    }
}
