/// An x86 instruction decoder for the instructions the emulation assist finishes (SDM
/// vol. 2, 2.1-2.2): legacy prefixes in any order and number (up to the 15-byte limit),
/// REX (64-bit mode only, and only directly before the opcode), the one-, two- and
/// three-byte opcode maps, ModRM, SIB and displacements in 16-, 32- and 64-bit
/// addressing (RIP-relative included), and immediates. Opcodes outside its tables
/// are reported with their bytes, never guessed at.
enum X86Decoder {
    enum Failure: Error, Equatable {
        /// The bytes end before the instruction does (the caller may fetch more).
        case truncated
        /// Longer than the architectural 15 bytes: the CPU raises #GP.
        case tooLong
        /// An opcode the decoder does not know the shape of.
        case unknownOpcode(String)
    }

    static let maxLength = 15

    /// Decodes the instruction at the start of `bytes`.
    static func decode(_ bytes: [UInt8], codeSize: DecodedInstruction.CodeSize) throws(Failure) -> DecodedInstruction {
        var cursor = Cursor(bytes: bytes)
        var insn = DecodedInstruction(codeSize: codeSize, length: 0, map: .primary, opcode: 0, bytes: [])

        // Legacy prefixes (groups 1-4) and REX: only a REX directly before the opcode
        // counts, one followed by a legacy prefix is ignored (SDM 2.2.1).
        prefixes: while true {
            let byte = try cursor.peek()
            if codeSize == .bits64, byte & 0xF0 == 0x40 {
                insn.rex = byte
                try cursor.skip()
                continue
            }
            switch byte {
            case 0xF0: insn.lock = true
            case 0xF2, 0xF3: insn.repeatPrefix = byte
            case 0x26: insn.segmentOverride = .es
            case 0x2E: insn.segmentOverride = .cs
            case 0x36: insn.segmentOverride = .ss
            case 0x3E: insn.segmentOverride = .ds
            case 0x64: insn.segmentOverride = .fs
            case 0x65: insn.segmentOverride = .gs
            case 0x66: insn.operandSizeOverride = true
            case 0x67: insn.addressSizeOverride = true
            default: break prefixes
            }
            insn.rex = 0
            try cursor.skip()
        }

        var opcode = try cursor.next()
        var hasModRM = false
        var immediateBytes = 0
        switch opcode {
        case 0x0F:
            opcode = try cursor.next()
            switch opcode {
            case 0x38:
                insn.map = .threeByte38
                opcode = try cursor.next()
                hasModRM = true
            case 0x3A:
                insn.map = .threeByte3A
                opcode = try cursor.next()
                hasModRM = true
                immediateBytes = 1
            default:
                insn.map = .twoByte
                hasModRM = Self.twoByteHasModRM(opcode)
                immediateBytes = Self.twoByteImmediate(opcode, insn)
            }
        case 0xC4, 0xC5, 0x62:
            // VEX/EVEX in 64-bit mode, or outside it when the next byte's mod is 11
            // (otherwise LES/LDS/BOUND, which the assist does not meet).
            let next = try cursor.peek()
            let vex = codeSize == .bits64 || next >= 0xC0
            throw .unknownOpcode(vex ? (opcode == 0x62 ? "EVEX-encoded instruction (AVX-512)" : "VEX-encoded instruction (AVX, BMI...)")
                                     : "opcode \(hex(opcode))")
        default:
            guard let shape = Self.primaryShape(opcode, insn) else {
                throw .unknownOpcode("opcode \(hex(opcode))")
            }
            (hasModRM, immediateBytes) = shape
        }
        insn.opcode = opcode

        if hasModRM { try decodeModRM(&cursor, &insn) }
        insn.immediate = try cursor.little(immediateBytes)
        insn.length = cursor.offset
        guard insn.length <= maxLength else { throw .tooLong }
        insn.bytes = Array(bytes.prefix(insn.length))
        return insn
    }

    // MARK: - Opcode shapes

    /// (has ModRM, immediate bytes) for the one-byte opcodes the assist meets.
    private static func primaryShape(_ opcode: UInt8, _ insn: DecodedInstruction) -> (Bool, Int)? {
        switch opcode {
        case 0x90, 0x9B, 0xCC, 0xF4, 0xFA, 0xFB, 0xFC, 0xFD, 0xF1, 0xCE: return (false, 0)  // nop/pause, fwait, int3, hlt, cli, sti, cld, std, int1, into
        case 0xCD: return (false, 1)                                                       // int imm8
        default: return nil
        }
    }

    /// The two-byte opcodes without a ModRM byte (SDM vol. 2, appendix A, table A-3).
    private static func twoByteHasModRM(_ opcode: UInt8) -> Bool {
        switch opcode {
        case 0x05, 0x06, 0x07, 0x08, 0x09, 0x0B, 0x0E, 0x30 ... 0x37, 0x77, 0x80 ... 0x8F,
             0xA0, 0xA1, 0xA2, 0xA8, 0xA9, 0xAA, 0xC8 ... 0xCF:
            return false
        default:
            return true
        }
    }

    private static func twoByteImmediate(_ opcode: UInt8, _ insn: DecodedInstruction) -> Int {
        switch opcode {
        case 0x70 ... 0x73, 0xA4, 0xAC, 0xBA, 0xC2, 0xC4, 0xC5, 0xC6: return 1
        case 0x80 ... 0x8F: return insn.codeSize == .bits16 && !insn.operandSizeOverride ? 2 : 4  // jcc rel
        default: return 0
        }
    }

    // MARK: - ModRM, SIB, displacement

    private static func decodeModRM(_ cursor: inout Cursor, _ insn: inout DecodedInstruction) throws(Failure) {
        let byte = try cursor.next()
        let mod = byte >> 6
        let reg = Int((byte >> 3) & 7) | (insn.rex & 4 != 0 ? 8 : 0)
        let rmLow = Int(byte & 7)
        let rm = rmLow | (insn.rex & 1 != 0 ? 8 : 0)
        insn.modrm = DecodedInstruction.ModRM(raw: byte, mod: mod, reg: reg, rm: mod == 3 ? rm : rmLow)
        guard mod != 3 else { return }

        let addressSize = insn.addressSize
        var memory = DecodedInstruction.Memory(segment: .ds, addressSize: addressSize)
        if addressSize == .bits16 {
            // [BX+SI], [BX+DI], [BP+SI], [BP+DI], [SI], [DI], [BP] (disp16 if mod 0), [BX].
            let pairs: [(Int?, Int?)] = [(3, 6), (3, 7), (5, 6), (5, 7), (6, nil), (7, nil), (5, nil), (3, nil)]
            memory.base = pairs[rmLow].0
            memory.index = pairs[rmLow].1
            if rmLow == 6 && mod == 0 { memory.base = nil }
            if memory.base == 5 { memory.segment = .ss }
            switch mod {
            case 0 where rmLow == 6: memory.displacement = Int64(Int16(truncatingIfNeeded: try cursor.little(2)))
            case 1: memory.displacement = Int64(Int8(truncatingIfNeeded: try cursor.next()))
            case 2: memory.displacement = Int64(Int16(truncatingIfNeeded: try cursor.little(2)))
            default: break
            }
        } else {
            var base: Int? = rm
            if rmLow == 4 {
                let sib = try cursor.next()
                let index = Int((sib >> 3) & 7) | (insn.rex & 2 != 0 ? 8 : 0)
                memory.index = index == 4 ? nil : index  // index 100 (without REX.X) means none
                memory.scale = 1 << UInt64(sib >> 6)
                let sibBase = Int(sib & 7) | (insn.rex & 1 != 0 ? 8 : 0)
                base = (sib & 7) == 5 && mod == 0 ? nil : sibBase  // disp32 with no base
            } else if rmLow == 5 && mod == 0 {
                base = nil
                memory.ripRelative = insn.codeSize == .bits64
            }
            memory.base = base
            if let base, base & 7 == 4 || base & 7 == 5 { memory.segment = .ss }  // RSP/RBP-based
            switch mod {
            case 0 where base == nil: memory.displacement = Int64(Int32(truncatingIfNeeded: try cursor.little(4)))
            case 1: memory.displacement = Int64(Int8(truncatingIfNeeded: try cursor.next()))
            case 2: memory.displacement = Int64(Int32(truncatingIfNeeded: try cursor.little(4)))
            default: break
            }
        }
        if let override = insn.segmentOverride { memory.segment = override }
        insn.memory = memory
    }

    /// Reads bytes in order; running out is `.truncated`.
    private struct Cursor {
        let bytes: [UInt8]
        var offset = 0

        func peek() throws(Failure) -> UInt8 {
            guard offset < bytes.count else { throw offset >= X86Decoder.maxLength ? .tooLong : .truncated }
            return bytes[offset]
        }

        mutating func next() throws(Failure) -> UInt8 {
            let byte = try peek()
            offset += 1
            return byte
        }

        mutating func skip() throws(Failure) { _ = try next() }

        mutating func little(_ count: Int) throws(Failure) -> UInt64 {
            var value: UInt64 = 0
            for i in 0 ..< count { value |= UInt64(try next()) << UInt64(8 * i) }
            return value
        }
    }

    static func hex(_ byte: UInt8) -> String { byte < 16 ? "0" + String(byte, radix: 16) : String(byte, radix: 16) }
}
