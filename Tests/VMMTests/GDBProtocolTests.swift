@testable import Debug
import KVM
import Testing
@testable import VMM

/// The GDB remote protocol's byte layer and packet parsing, without KVM.
struct GDBPacketTests {
    private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    @Test func checksumAndFraming() {
        // The manual's example: "$g#67" (0x67 = 'g').
        #expect(PacketCodec.frame(bytes("g")) == bytes("$g#67"))
        #expect(PacketCodec.frame(bytes("OK")) == bytes("$OK#9a"))
        #expect(PacketCodec.frame([]) == bytes("$#00"))
        #expect(PacketCodec.checksum(bytes("qSupported")) == 0x37)
    }

    @Test func escapingRoundTrips() {
        let raw: [UInt8] = [0x23, 0x24, 0x7D, 0x2A, 0x00, 0xFF, 0x41]
        let escaped = PacketCodec.escape(raw)
        #expect(escaped == [0x7D, 0x03, 0x7D, 0x04, 0x7D, 0x5D, 0x7D, 0x0A, 0x00, 0xFF, 0x41])
        #expect(PacketCodec.unescape(escaped) == raw)
        #expect(PacketCodec.unescape([0x41, 0x7D]) == nil, "an escape cut off at the end")
        let all = (0 ... 255).map { UInt8($0) }
        #expect(PacketCodec.unescape(PacketCodec.escape(all)) == all)
        #expect(!PacketCodec.escape(all).contains(UInt8(ascii: "#")) && !PacketCodec.escape(all).contains(UInt8(ascii: "$")))
    }

    @Test func runLengthEncoding() {
        // Runs under four are left alone; "0000" -> "0* " (3 more, ' ' = 29 + 3).
        #expect(PacketCodec.runLengthEncode(bytes("000")) == bytes("000"))
        #expect(PacketCodec.runLengthEncode(bytes("0000")) == bytes("0* "))
        #expect(PacketCodec.runLengthEncode(bytes("00000")) == bytes("0*!"))
        // Runs of 7 and 8 would need '#' and '$' as the count: cut to 6 and the rest.
        #expect(PacketCodec.runLengthEncode(bytes("0000000")) == bytes("0*\"0"))
        #expect(PacketCodec.runLengthEncode(bytes("00000000")) == bytes("0*\"00"))
        for n in 0 ... 300 {
            let text = [UInt8](repeating: UInt8(ascii: "f"), count: n) + bytes("12") + [UInt8](repeating: UInt8(ascii: "0"), count: n / 3)
            let encoded = PacketCodec.runLengthEncode(text)
            #expect(!encoded.contains(UInt8(ascii: "#")) && !encoded.contains(UInt8(ascii: "$")))
            #expect(encoded.allSatisfy { $0 <= 126 }, "count characters stay printable")
            #expect(PacketCodec.runLengthDecode(encoded) == text, "run of \(n)")
        }
        #expect(PacketCodec.runLengthDecode(bytes("*!")) == nil, "a count with nothing to repeat")
    }

    @Test func hexHelpers() {
        #expect(PacketCodec.hex([0x00, 0xAB, 0x10]) == bytes("00ab10"))
        #expect(PacketCodec.unhex(bytes("00AB10")) == [0x00, 0xAB, 0x10])
        #expect(PacketCodec.unhex(bytes("abc")) == nil && PacketCodec.unhex(bytes("zz")) == nil)
        #expect(PacketCodec.number(bytes("ffffffff80100000")) == 0xFFFF_FFFF_8010_0000)
        #expect(PacketCodec.number(bytes("10000000000000000")) == nil, "more than 64 bits")
        #expect(PacketCodec.number([]) == nil)
        #expect(PacketCodec.hexLittleEndian(0x1234, size: 4) == bytes("34120000"))
    }

    @Test func readerSplitsTheStream() {
        var reader = PacketReader(maxPayload: 16)
        // A packet split across reads, an ack, an interrupt, noise.
        #expect(reader.feed(bytes("+$g")) == [.ack])
        #expect(reader.feed(bytes("#6")) == [])
        #expect(reader.feed(bytes("7x\u{03}-")) == [.packet(bytes("g")), .interrupt, .nack])
        #expect(reader.feed(bytes("$g#00")) == [.badChecksum])
        #expect(reader.feed(bytes("$g#zz")) == [.badChecksum])
        // Longer than the limit: swallowed to its end, reported once, memory bounded.
        #expect(reader.feed(bytes("$" + String(repeating: "A", count: 10_000) + "#00$?#3f")) == [.tooLong, .packet(bytes("?"))])
        // A '$' inside a packet starts a new one.
        #expect(reader.feed(bytes("$m0,$?#3f")) == [.packet(bytes("?"))])
    }

    @Test func commandsParse() {
        func parse(_ s: String) -> GDBCommand { GDBCommand.parse(Array(s.utf8)) }
        #expect(parse("?") == .haltReason)
        #expect(parse("g") == .readRegisters)
        #expect(parse("p10") == .readRegister(16))
        #expect(parse("P10=0000100000000000") == .writeRegister(16, [0, 0, 0x10, 0, 0, 0, 0, 0]))
        #expect(parse("mffffffff80106000,40") == .readMemory(address: 0xFFFF_FFFF_8010_6000, length: 0x40))
        #expect(parse("M1000,2:abcd") == .writeMemory(address: 0x1000, bytes: [0xAB, 0xCD]))
        #expect(GDBCommand.parse(bytes("X1000,2:") + [0x7D, 0x03, 0x41]) == .writeMemory(address: 0x1000, bytes: [0x23, 0x41]))
        #expect(parse("X1000,0:") == .writeMemory(address: 0x1000, bytes: []))
        #expect(parse("c") == .resume(step: false, address: nil))
        #expect(parse("s100018") == .resume(step: true, address: 0x100018))
        #expect(parse("C05;1000") == .resume(step: false, address: 0x1000))
        #expect(parse("vCont?") == .vContQuery)
        #expect(parse("vCont;s:1;c") == .vCont([VContAction(kind: .step, thread: .id(1)), VContAction(kind: .continue, thread: nil)]))
        #expect(parse("vCont;C02:2;t:-1") == .vCont([VContAction(kind: .continue, thread: .id(2)), VContAction(kind: .stop, thread: .all)]))
        #expect(parse("Hg2") == .setThread(operation: UInt8(ascii: "g"), .id(2)))
        #expect(parse("Hc-1") == .setThread(operation: UInt8(ascii: "c"), .all))
        #expect(parse("Hgp1.2") == .setThread(operation: UInt8(ascii: "g"), .id(2)))
        #expect(parse("T1") == .threadAlive(.id(1)))
        #expect(parse("Z0,ffffffff8010607e,1") == .insertPoint(type: 0, address: 0xFFFF_FFFF_8010_607E, kind: 1))
        #expect(parse("z2,1000,4") == .removePoint(type: 2, address: 0x1000, kind: 4))
        #expect(parse("Z0,1000,1;X2,0a") == .insertPoint(type: 0, address: 0x1000, kind: 1), "conditions are cut")
        #expect(parse("qSupported:multiprocess+;swbreak+;hwbreak+") == .supported(["multiprocess+", "swbreak+", "hwbreak+"]))
        #expect(parse("qXfer:features:read:target.xml:0,ffb") == .readFeatures(annex: "target.xml", offset: 0, length: 0xFFB))
        #expect(parse("qThreadExtraInfo,2") == .threadExtraInfo(.id(2)))
        #expect(parse("qRcmd,696e666f") == .monitor("info"))
        #expect(parse("D") == .detach && parse("D;1") == .detach && parse("k") == .kill && parse("vKill;1") == .vKill)
        #expect(parse("QStartNoAckMode") == .startNoAckMode)
        #expect(parse("vMustReplyEmpty") == .unsupported && parse("qTStatus") == .unsupported && parse("") == .unsupported)
    }

    @Test func badArgumentsAreErrorsNotCrashes() {
        func isMalformed(_ s: String) -> Bool {
            if case .malformed = GDBCommand.parse(Array(s.utf8)) { return true }
            return false
        }
        for bad in ["m", "m1000", "m1000,", "mzz,4", "m1000,ffffffff", "m0,100000000000000000", "M1000,4:ab",
                    "M1000,1:zz", "X1000,2:A", "p", "pzz", "P10", "P10=", "Pz=00", "Z0,1000", "Z9,1000,1", "Zx,1,1",
                    "H", "Hgzz", "T", "vCont;", "vCont;x", "vCont;s:zz", "vCont;C", "qThreadExtraInfo,", "qRcmd,6",
                    "s12345678901234567890", "g1", "qXfer:features:read:target.xml:zz"] {
            #expect(isMalformed(bad), "\(bad)")
        }
    }
}

/// gdb's view of the registers and the target description.
struct GDBRegisterTests {
    @Test func targetDescriptionNamesEveryRegisterOnce() {
        let xml = TargetDescription.xml
        #expect(xml.contains("<architecture>i386:x86-64</architecture>"))
        for feature in ["org.gnu.gdb.i386.core", "org.gnu.gdb.i386.sse", "org.gnu.gdb.i386.segments", "org.swift-vmm.x86.system"] {
            #expect(xml.components(separatedBy: "<feature name=\"\(feature)\">").count == 2, "\(feature)")
        }
        for name in ["rip", "eflags", "cs", "ss", "fs", "gs", "st7", "xmm15", "mxcsr", "fs_base", "gs_base", "k_gs_base",
                     "cr0", "cr2", "cr3", "cr4", "cr8", "efer"] {
            #expect(xml.components(separatedBy: "<reg name=\"\(name)\"").count == 2, "\(name)")
        }
        #expect(xml.components(separatedBy: "<reg ").count - 1 == RegisterFile.layout.count)
        #expect(xml.components(separatedBy: "<feature").count == xml.components(separatedBy: "</feature>").count)
        // gdb's amd64 numbering: rip is 16, eflags 17, cs 18, st0 24, xmm0 40, mxcsr 56.
        #expect(RegisterFile.layout[16].name == "rip" && RegisterFile.layout[17].name == "eflags")
        #expect(RegisterFile.layout[18].name == "cs" && RegisterFile.layout[24].name == "st0")
        #expect(RegisterFile.layout[40].name == "xmm0" && RegisterFile.layout[56].name == "mxcsr")
        #expect(RegisterFile.totalBytes == 16 * 8 + 8 + 4 + 6 * 4 + 8 * 10 + 8 * 4 + 16 * 16 + 4 + 3 * 8 + 6 * 8)
    }

    @Test func registersRoundTripThroughGPackets() {
        var regs = Registers()
        regs.rax = 0x1122_3344_5566_7788
        regs.rip = 0xFFFF_FFFF_8010_607E
        regs.rflags = 0x246
        var sregs = SpecialRegisters()
        sregs.cs.selector = 0x10
        sregs.fs.base = 0xDEAD_0000
        sregs.cr0 = 0x8000_0011
        sregs.efer = 0x500
        var fpu = FPUState()
        fpu.fcw = 0x37F
        fpu.mxcsr = 0x1F80
        var file = RegisterFile(regs: regs, sregs: sregs, fpu: fpu, kernelGSBase: 0xFFFF_8880_0000_0000)
        let all = file.all
        #expect(all.count == RegisterFile.totalBytes)
        #expect(Array(all[0 ..< 8]) == [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11], "rax, little-endian")
        var copy = RegisterFile(regs: Registers(), sregs: SpecialRegisters(), fpu: FPUState(), kernelGSBase: 0)
        let parts = copy.setAll(all)
        #expect(parts == [.general, .special, .fpu, .msr])
        #expect(copy == file)
        #expect(copy.regs.rip == regs.rip && copy.sregs.fs.base == 0xDEAD_0000 && copy.sregs.efer == 0x500)
        #expect(copy.setAll(Array(all.prefix(8 * 16))) == [], "a prefix that changes nothing")
        #expect(copy.setAll(Array(all.prefix(5))) == nil, "not at a register boundary")
        // eflags is 32 bits wide in gdb's view; the upper half of RFLAGS stays.
        file.regs.rflags = 0xFFFF_0000_0000_0002
        #expect(file.set(17, [0x46, 0x02, 0, 0]) == .general)
        #expect(file.regs.rflags == 0xFFFF_0000_0000_0246)
    }

    @Test func x87TagWordFromFXSAVE() {
        // TOP = 7; ST(0) (physical 7) holds 1.0, ST(1) (physical 0) holds +0.0; the rest empty.
        var one = [UInt8](repeating: 0, count: 10)
        one[7] = 0x80; one[8] = 0xFF; one[9] = 0x3F
        let zero = [UInt8](repeating: 0, count: 10)
        let registers = [one, zero] + Array(repeating: zero, count: 6)
        let full = X87Tags.full(abridged: 0b1000_0001, status: 7 << 11, registers: registers)
        #expect(full == 0b00_11_11_11_11_11_11_01, "physical 7 valid, 0 zero, others empty")
        #expect(X87Tags.abridged(full: full) == 0b1000_0001)
        #expect(X87Tags.full(abridged: 0, status: 0, registers: Array(repeating: zero, count: 8)) == 0xFFFF)
    }
}

/// How the debugger lays breakpoints and watchpoints onto DR0-DR3 and DR7.
struct DebugRegisterLayoutTests {
    @Test func watchedRangesSplitIntoAlignedPieces() {
        #expect(HardwareSlot.alignedChunks(0x1000, 4, atMost: 4)?.map { $0.1 } == [4])
        #expect(HardwareSlot.alignedChunks(0x1001, 4, atMost: 4)?.map { $0.0 } == [0x1001, 0x1002, 0x1004])
        #expect(HardwareSlot.alignedChunks(0x1001, 4, atMost: 4)?.map { $0.1 } == [1, 2, 1])
        #expect(HardwareSlot.alignedChunks(0x1000, 32, atMost: 4)?.count == 4)
        #expect(HardwareSlot.alignedChunks(0x1000, 33, atMost: 4) == nil)
        #expect(HardwareSlot.alignedChunks(0x1000, 1 << 30, atMost: 4) == nil, "a huge length gives up at once")
    }

    @Test func dr7EncodesTypeAndLength() throws {
        var slots: [HardwareSlot?] = [nil, nil, nil, nil]
        try HardwareSlot.allocate([HardwareSlot(point: .hardware(address: 0x100029), linear: 0x100029, type: 0, length: 1)], in: &slots)
        let watch = DebugPoint.watch(.write, address: 0x2000, length: 8)
        try HardwareSlot.allocate([HardwareSlot(point: watch, linear: 0x2000, type: 1, length: 8)], in: &slots)
        let r = HardwareSlot.debugRegisters(slots)
        #expect(r[0] == 0x100029 && r[1] == 0x2000)
        // L0, L1; R/W1 = 01 (write), LEN1 = 10 (8 bytes); bit 10 set.
        #expect(r.dr7 == (1 | 1 << 2 | 1 << 10 | 0b01 << 20 | 0b10 << 22))
        #expect(throws: MachineError.self) {
            try HardwareSlot.allocate((0 ..< 3).map { HardwareSlot(point: watch, linear: UInt64($0), type: 1, length: 1) }, in: &slots)
        }
        #expect(slots.compactMap { $0 }.count == 2, "all or nothing")
    }
}
