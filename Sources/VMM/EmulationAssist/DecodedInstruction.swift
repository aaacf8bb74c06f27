/// One x86 instruction as the decoder saw it (Intel SDM vol. 2, chapter 2, "Instruction
/// format"): prefixes, REX, opcode, ModRM/SIB/displacement, immediate, and its length.
struct DecodedInstruction: Sendable, Equatable {
    /// The opcode map the opcode byte belongs to.
    enum OpcodeMap: Sendable, Equatable { case primary, twoByte, threeByte38, threeByte3A }

    /// The code size the instruction was decoded for (CS.L / CS.D, CR0.PE).
    enum CodeSize: Int, Sendable { case bits16 = 16, bits32 = 32, bits64 = 64 }

    /// A memory operand: `segment:[base + index * scale + displacement]` or RIP-relative.
    struct Memory: Sendable, Equatable {
        var segment: SegmentRegisterName
        /// Register numbers (0-15), nil when absent.
        var base: Int?
        var index: Int?
        var scale: UInt64 = 1
        var displacement: Int64 = 0
        /// RIP-relative (64-bit mode, ModRM mod 00 r/m 101): relative to the next instruction.
        var ripRelative = false
        /// 16-bit addressing (ModRM's BX/BP/SI/DI forms).
        var addressSize: CodeSize
    }

    /// The ModRM fields.
    struct ModRM: Sendable, Equatable {
        /// The byte itself (for opcodes such as 0F 01 whose mod-11 forms are named by it).
        let raw: UInt8
        let mod: UInt8
        /// The reg field with REX.R applied (0-15).
        let reg: Int
        /// The r/m field with REX.B applied (0-15) when mod == 3.
        let rm: Int
    }

    var codeSize: CodeSize
    var length: Int
    var map: OpcodeMap
    var opcode: UInt8
    var operandSizeOverride = false  // 66
    var addressSizeOverride = false  // 67
    var lock = false                 // F0
    var repeatPrefix: UInt8?         // F2 or F3 (the last one given)
    var segmentOverride: SegmentRegisterName?
    var rex: UInt8 = 0
    var modrm: ModRM?
    var memory: Memory?
    var immediate: UInt64 = 0
    /// The instruction's bytes.
    var bytes: [UInt8]

    var rexW: Bool { rex & 8 != 0 }

    /// The operand size of an instruction whose default is 32 bits (16 with 66, 64 with REX.W).
    var operandSize: Int {
        if rexW { return 64 }
        switch codeSize {
        case .bits16: return operandSizeOverride ? 32 : 16
        default: return operandSizeOverride ? 16 : 32
        }
    }

    /// The address size (67 switches 64→32, 32→16, 16→32).
    var addressSize: CodeSize {
        switch codeSize {
        case .bits64: return addressSizeOverride ? .bits32 : .bits64
        case .bits32: return addressSizeOverride ? .bits16 : .bits32
        case .bits16: return addressSizeOverride ? .bits32 : .bits16
        }
    }

    /// The bytes as hex, for messages.
    var hexBytes: String { bytes.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined(separator: " ") }
}

/// The segment registers in their ModRM/prefix encoding order (ES=0 ... GS=5).
enum SegmentRegisterName: Int, Sendable, Equatable, CustomStringConvertible {
    case es = 0, cs, ss, ds, fs, gs

    var description: String { ["es", "cs", "ss", "ds", "fs", "gs"][rawValue] }
}
