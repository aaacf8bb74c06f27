import Testing
@testable import VMM

/// The emulation assist's decoder on hand-assembled bytes (objdump-checked encodings).
@Suite struct X86DecoderTests {
    func decode(_ bytes: [UInt8], _ size: DecodedInstruction.CodeSize = .bits64) throws -> DecodedInstruction {
        try X86Decoder.decode(bytes + [0x90, 0x90], codeSize: size)
    }

    @Test func popcntWithPrefixesREXAndRegisterOperands() throws {
        // f3 48 0f b8 c7: popcnt %rdi, %rax (Linux's __bitmap_weight)
        let insn = try decode([0xF3, 0x48, 0x0F, 0xB8, 0xC7])
        #expect(insn.length == 5 && insn.map == .twoByte && insn.opcode == 0xB8)
        #expect(insn.repeatPrefix == 0xF3 && insn.rexW && insn.operandSize == 64)
        #expect(insn.modrm?.reg == 0 && insn.modrm?.rm == 7 && insn.memory == nil)
        #expect(AssistedInstruction.identify(insn) == .popcnt)
        // 66 f3 45 0f b8 c8: popcnt %r8w, %r9w (REX.R and REX.B extend reg and r/m)
        let wide = try decode([0x66, 0xF3, 0x45, 0x0F, 0xB8, 0xC8])
        #expect(wide.operandSize == 16 && wide.modrm?.reg == 9 && wide.modrm?.rm == 8)
    }

    @Test func cmpxchg16bWithSIBDisplacementAndSegmentOverride() throws {
        // f0 48 0f c7 0f: lock cmpxchg16b (%rdi)
        let plain = try decode([0xF0, 0x48, 0x0F, 0xC7, 0x0F])
        #expect(plain.lock && plain.length == 5 && AssistedInstruction.identify(plain) == .cmpxchg16b)
        #expect(plain.memory == DecodedInstruction.Memory(segment: .ds, base: 7, addressSize: .bits64))
        // 65 f0 48 0f c7 4e 10: lock cmpxchg16b %gs:0x10(%rsi)
        let gs = try decode([0x65, 0xF0, 0x48, 0x0F, 0xC7, 0x4E, 0x10])
        #expect(gs.length == 7 && gs.memory?.segment == .gs && gs.memory?.base == 6 && gs.memory?.displacement == 0x10)
        // f0 4a 0f c7 8c c3 00 01 00 00: lock cmpxchg16b 0x100(%rbx,%r8,8) (REX.X extends the index)
        let sib = try decode([0xF0, 0x4A, 0x0F, 0xC7, 0x8C, 0xC3, 0x00, 0x01, 0x00, 0x00])
        #expect(sib.length == 10 && sib.memory?.base == 3 && sib.memory?.index == 8 && sib.memory?.scale == 8)
        #expect(sib.memory?.displacement == 0x100)
        // Without REX.W it is cmpxchg8b, which the assist does not take.
        #expect(AssistedInstruction.identify(try decode([0xF0, 0x0F, 0xC7, 0x0F])) == .refused("cmpxchg8b"))
    }

    @Test func ripRelativeAndStackSegmentDefaults() throws {
        // 48 0f c7 0d 78 56 34 12: cmpxchg16b 0x12345678(%rip)
        let rip = try decode([0x48, 0x0F, 0xC7, 0x0D, 0x78, 0x56, 0x34, 0x12])
        #expect(rip.memory?.ripRelative == true && rip.memory?.base == nil && rip.memory?.displacement == 0x1234_5678)
        // f3 48 0f b8 44 24 f8: popcnt -8(%rsp), %rax: SIB with base RSP, default SS, disp8 -8
        let stack = try decode([0xF3, 0x48, 0x0F, 0xB8, 0x44, 0x24, 0xF8])
        #expect(stack.memory?.segment == .ss && stack.memory?.base == 4 && stack.memory?.index == nil)
        #expect(stack.memory?.displacement == -8)
        // SIB base 101 with mod 00: disp32 and no base; in 32-bit mode ModRM 05 is absolute.
        let absolute = try decode([0x0F, 0x00, 0x2D, 0x00, 0x10, 0x00, 0x00], .bits32)  // verw 0x1000
        #expect(absolute.memory?.ripRelative == false && absolute.memory?.base == nil && absolute.memory?.displacement == 0x1000)
        #expect(AssistedInstruction.identify(absolute) == .verw)
        // 67 prefix: 32-bit addressing in 64-bit mode.
        #expect(try decode([0x67, 0x0F, 0x00, 0x2F]).memory?.addressSize == .bits32)
    }

    @Test func sixteenBitAddressing() throws {
        // 0f 00 6a 04 in 16-bit code: verw 4(%bp,%si), default segment SS
        let insn = try decode([0x0F, 0x00, 0x6A, 0x04], .bits16)
        #expect(insn.memory?.addressSize == .bits16 && insn.memory?.base == 5 && insn.memory?.index == 6)
        #expect(insn.memory?.segment == .ss && insn.memory?.displacement == 4 && insn.length == 4)
        // mod 00 r/m 110: a bare disp16.
        let direct = try decode([0x0F, 0x00, 0x2E, 0x34, 0x12], .bits16)
        #expect(direct.memory?.base == nil && direct.memory?.displacement == 0x1234 && direct.length == 5)
    }

    @Test func theInstructionsTheAssistNames() throws {
        #expect(AssistedInstruction.identify(try decode([0xCC])) == .int3)
        #expect(AssistedInstruction.identify(try decode([0xCD, 0x80])) == .interrupt(0x80))
        #expect(AssistedInstruction.identify(try decode([0x0F, 0x01, 0xCA])) == .clac)
        #expect(AssistedInstruction.identify(try decode([0x0F, 0x01, 0xCB])) == .stac)
        #expect(AssistedInstruction.identify(try decode([0x0F, 0x01, 0xF9])) == .rdtscp)
        #expect(AssistedInstruction.identify(try decode([0x0F, 0x01, 0xD0])) == .xgetbv)
        #expect(AssistedInstruction.identify(try decode([0x9B])) == .fwait)
        #expect(AssistedInstruction.identify(try decode([0x48, 0x0F, 0xC7, 0xF0])) == .rdrand)
        #expect(AssistedInstruction.identify(try decode([0x0F, 0xC7, 0xF8])) == .rdseed)
        #expect(AssistedInstruction.identify(try decode([0xF3, 0x0F, 0xC7, 0xF8])) == .refused("rdpid"))
        #expect(AssistedInstruction.identify(try decode([0x0F, 0x01, 0xC1])) == .hypercall)
        #expect(AssistedInstruction.identify(try decode([0x0F, 0x1F, 0x44, 0x00, 0x00])) == .nop)
        #expect(AssistedInstruction.identify(try decode([0xF3, 0x0F, 0x1E, 0xFA])) == .nop)  // endbr64
        // What stays refused is named.
        #expect(AssistedInstruction.identify(try decode([0x0F, 0xAE, 0x27])) == .refused("xsave"))
        #expect(AssistedInstruction.identify(try decode([0x48, 0x0F, 0xAE, 0x37])) == .refused("xsaveopt64"))
        #expect(AssistedInstruction.identify(try decode([0x66, 0x0F, 0xEF, 0xC9])) == .refused("an SSE/MMX instruction (0f ef)"))
        #expect(AssistedInstruction.identify(try decode([0x0F, 0x01, 0xD1])) == .refused("xsetbv"))
    }

    @Test func immediatesAndLengths() throws {
        // 66 0f 3a 0f c1 08: palignr $8, %xmm1, %xmm0 (three-byte map with imm8)
        let palignr = try decode([0x66, 0x0F, 0x3A, 0x0F, 0xC1, 0x08])
        #expect(palignr.map == .threeByte3A && palignr.length == 6 && palignr.immediate == 8)
        // 0f 84 rel32: jcc has no ModRM and a 4-byte immediate.
        #expect(try decode([0x0F, 0x84, 1, 2, 3, 4]).length == 6)
        // A REX that is not directly before the opcode is ignored (48 66 ... : 66 wins, no REX.W).
        let ignored = try decode([0x48, 0x66, 0xF3, 0x0F, 0xB8, 0xC0])
        #expect(!ignored.rexW && ignored.operandSize == 16)
    }

    @Test func malformedInput() {
        #expect(throws: X86Decoder.Failure.truncated) { try X86Decoder.decode([0xF3, 0x48, 0x0F], codeSize: .bits64) }
        #expect(throws: X86Decoder.Failure.truncated) { try X86Decoder.decode([], codeSize: .bits64) }
        #expect(throws: X86Decoder.Failure.tooLong) {
            try X86Decoder.decode([UInt8](repeating: 0x66, count: 15) + [0x90], codeSize: .bits64)
        }
        #expect(throws: X86Decoder.Failure.self) { try X86Decoder.decode([0xC5, 0xFE, 0x6F, 0x07], codeSize: .bits64) }  // AVX
        #expect(throws: X86Decoder.Failure.unknownOpcode("opcode 01")) { try X86Decoder.decode([0x01, 0xC0], codeSize: .bits64) }
    }
}
