/// What the assist recognised in an emulation failure's bytes, and the statistic it counts.
enum AssistedInstruction: Sendable, Equatable {
    case int3
    case interrupt(UInt8)         // int imm8
    case clac, stac
    case popcnt
    case rdtscp
    case fwait
    case rdrand, rdseed
    case verr, verw
    case lsl                      // 0f 03 /r
    case cmpxchg16b
    case xgetbv
    case ldmxcsr, stmxcsr         // 0f ae /2, /3 with a memory operand
    case nop                      // nop, pause, hint nops, endbr: what a displaced instruction may be
    case cld
    case hypercall                // vmcall / vmmcall
    /// Decoded, but nothing the assist can finish exactly (the name says what it is).
    case refused(String)

    /// Identifies `insn`.
    static func identify(_ insn: DecodedInstruction) -> AssistedInstruction {
        let modrm = insn.modrm
        switch (insn.map, insn.opcode) {
        case (.primary, 0xCC): return .int3
        case (.primary, 0xCD): return .interrupt(UInt8(truncatingIfNeeded: insn.immediate))
        case (.primary, 0x9B): return .fwait
        case (.primary, 0x90): return .nop
        case (.primary, 0xFC): return .cld
        case (.twoByte, 0x1F): return .nop
        case (.twoByte, 0x1E) where insn.repeatPrefix == 0xF3 && (modrm?.raw == 0xFA || modrm?.raw == 0xFB): return .nop
        case (.twoByte, 0x01):
            switch modrm?.raw {
            case 0xCA: return .clac
            case 0xCB: return .stac
            case 0xD0: return .xgetbv
            case 0xF9: return .rdtscp
            case 0xC1, 0xD9: return .hypercall
            default: return .refused(mnemonic(insn))
            }
        case (.twoByte, 0xAE) where modrm.map({ $0.mod != 3 }) == true && insn.repeatPrefix == nil && !insn.operandSizeOverride:
            switch (modrm?.reg ?? 0) & 7 {
            case 2: return .ldmxcsr
            case 3: return .stmxcsr
            default: return .refused(mnemonic(insn))
            }
        case (.twoByte, 0xB8) where insn.repeatPrefix == 0xF3: return .popcnt
        case (.twoByte, 0x00) where (modrm?.reg ?? 0) & 7 == 4: return .verr
        case (.twoByte, 0x00) where (modrm?.reg ?? 0) & 7 == 5: return .verw
        case (.twoByte, 0x03) where modrm != nil: return .lsl
        case (.twoByte, 0xC7):
            guard let modrm else { return .refused(mnemonic(insn)) }
            switch (modrm.reg & 7, modrm.mod == 3) {
            case (1, false) where insn.rexW: return .cmpxchg16b
            case (6, true) where insn.repeatPrefix == nil: return .rdrand
            case (7, true) where insn.repeatPrefix == nil: return .rdseed
            default: return .refused(mnemonic(insn))
            }
        default:
            return .refused(mnemonic(insn))
        }
    }

    /// A name for `insn`, for messages (the refused ones included).
    static func mnemonic(_ insn: DecodedInstruction) -> String {
        let modrm = insn.modrm
        let reg = (modrm?.reg ?? 0) & 7
        let memory = modrm.map { $0.mod != 3 } ?? false
        switch (insn.map, insn.opcode) {
        case (.primary, 0xCC): return "int3"
        case (.primary, 0xCD): return "int $0x" + String(insn.immediate, radix: 16)
        case (.primary, 0xCE): return "into"
        case (.primary, 0xF1): return "int1"
        case (.primary, 0xF4): return "hlt"
        case (.primary, 0x9B): return "fwait"
        case (.twoByte, 0x01):
            let names: [UInt8: String] = [0xC1: "vmcall", 0xC8: "monitor", 0xC9: "mwait", 0xCA: "clac", 0xCB: "stac",
                                          0xD0: "xgetbv", 0xD1: "xsetbv", 0xD9: "vmmcall", 0xE8: "serialize",
                                          0xF8: "swapgs", 0xF9: "rdtscp", 0xFA: "monitorx", 0xFB: "mwaitx"]
            return modrm.flatMap { names[$0.raw] } ?? "0f 01 /\(reg)"
        case (.twoByte, 0xAE) where memory:
            return ["fxsave", "fxrstor", "ldmxcsr", "stmxcsr", "xsave", "xrstor", "xsaveopt", "clflush"][reg]
                + (insn.rexW && reg >= 4 && reg <= 6 ? "64" : "")
        case (.twoByte, 0xC7) where memory:
            let names = [1: insn.rexW ? "cmpxchg16b" : "cmpxchg8b", 3: "xrstors", 4: "xsavec", 5: "xsaves"]
            return names[reg] ?? "0f c7 /\(reg)"
        case (.twoByte, 0xC7): return reg == 6 ? "rdrand" : reg == 7 ? (insn.repeatPrefix == 0xF3 ? "rdpid" : "rdseed") : "0f c7 /\(reg)"
        case (.twoByte, 0xB8) where insn.repeatPrefix == 0xF3: return "popcnt"
        case (.twoByte, 0x00): return ["sldt", "str", "lldt", "ltr", "verr", "verw", "0f 00 /6", "0f 00 /7"][reg]
        case (.twoByte, 0x02): return "lar"
        case (.twoByte, 0x03): return "lsl"
        case (.threeByte38, 0x82) where insn.operandSizeOverride: return "invpcid"
        case (.threeByte38, 0xF0), (.threeByte38, 0xF1):
            return insn.repeatPrefix == 0xF2 ? "crc32" : "movbe"
        case (.twoByte, let op) where (0x10 ... 0x17).contains(op) || (0x28 ... 0x2F).contains(op)
                                   || (0x50 ... 0x7F).contains(op) || (0xC2 ... 0xC6).contains(op) || op >= 0xD0:
            return "an SSE/MMX instruction (0f \(X86Decoder.hex(op)))"
        case (.threeByte38, let op), (.threeByte3A, let op):
            return "an SSE4/AES/SHA instruction (0f \(insn.map == .threeByte38 ? "38" : "3a") \(X86Decoder.hex(op)))"
        default:
            let map = insn.map == .primary ? "" : "0f "
            return "opcode \(map)\(X86Decoder.hex(insn.opcode))" + (modrm.map { _ in " /\(reg)" } ?? "")
        }
    }

    /// The statistic this instruction counts under (`vmmctl stats`).
    var statisticName: String {
        switch self {
        case .int3: return "int3"
        case .interrupt: return "int_n"
        case .clac: return "clac"
        case .stac: return "stac"
        case .popcnt: return "popcnt"
        case .rdtscp: return "rdtscp"
        case .fwait: return "fwait"
        case .rdrand: return "rdrand"
        case .rdseed: return "rdseed"
        case .verr: return "verr"
        case .verw: return "verw"
        case .lsl: return "lsl"
        case .cmpxchg16b: return "cmpxchg16b"
        case .xgetbv: return "xgetbv"
        case .ldmxcsr: return "ldmxcsr"
        case .stmxcsr: return "stmxcsr"
        case .nop: return "nop"
        case .cld: return "cld"
        case .hypercall: return "hypercall"
        case .refused: return "refused"
        }
    }
}
