import CSys

/// Compiles `SyscallPolicy` into a classic-BPF seccomp program (seccomp(2),
/// Documentation/userspace-api/seccomp_filter.rst).
///
/// Layout: check the architecture (x86-64, and not the x32 ABI), then one block per
/// entry — `A = nr; if A != nr, skip the block` — each block ending in a return, and a
/// final KILL_PROCESS. Blocks are small, so every jump fits BPF's 8-bit offsets.
enum SeccompFilter {
    static let retKillProcess: UInt32 = 0x8000_0000
    static let retAllow: UInt32 = 0x7FFF_0000
    static func retErrno(_ e: Int32) -> UInt32 { 0x0005_0000 | (UInt32(e) & 0xFFFF) }
    static let auditArchX86_64: UInt32 = 0xC000_003E
    static let x32SyscallBit: UInt32 = 0x4000_0000

    // struct seccomp_data: nr (u32) at 0, arch (u32) at 4, ip at 8, args[6] (u64) from 16.
    static let offsetNR: UInt32 = 0
    static let offsetArch: UInt32 = 4
    static func offsetArgumentLow(_ i: Int) -> UInt32 { 16 + UInt32(i) * 8 }   // little endian

    // Classic BPF opcodes (linux/bpf_common.h).
    static let ldAbsW: UInt16 = 0x20      // BPF_LD | BPF_W | BPF_ABS
    static let jeqK: UInt16 = 0x15        // BPF_JMP | BPF_JEQ | BPF_K
    static let jgeK: UInt16 = 0x35        // BPF_JMP | BPF_JGE | BPF_K
    static let jsetK: UInt16 = 0x45       // BPF_JMP | BPF_JSET | BPF_K
    static let retK: UInt16 = 0x06        // BPF_RET | BPF_K

    static func load(_ offset: UInt32) -> sock_filter { sock_filter(code: ldAbsW, jt: 0, jf: 0, k: offset) }
    static func ret(_ value: UInt32) -> sock_filter { sock_filter(code: retK, jt: 0, jf: 0, k: value) }
    /// A conditional jump on the constant `k`: `jt`/`jf` instructions forward.
    static func jump(_ op: UInt16, _ k: UInt32, _ jt: UInt8, _ jf: UInt8) -> sock_filter {
        sock_filter(code: op, jt: jt, jf: jf, k: k)
    }

    /// The whole program for `entries`.
    static func program(_ entries: [SyscallPolicy.Entry]) throws -> [sock_filter] {
        var p: [sock_filter] = [
            load(offsetArch),
            jump(jeqK, auditArchX86_64, 1, 0),
            ret(retKillProcess),
            load(offsetNR),
            jump(jgeK, x32SyscallBit, 0, 1),
            ret(retKillProcess),
        ]
        for entry in entries {
            let body = try block(entry.rule)
            guard body.count <= 255 else { throw SandboxError("filter block for \(entry.name) is too long") }
            p.append(load(offsetNR))
            p.append(jump(jeqK, UInt32(bitPattern: entry.number), 0, UInt8(body.count)))
            p += body
        }
        p.append(ret(retKillProcess))
        guard p.count <= 4096 else { throw SandboxError("seccomp program of \(p.count) instructions is too long") }
        return p
    }

    /// The instructions after "this is the system call": each path ends in a return.
    static func block(_ rule: SyscallPolicy.Rule) throws -> [sock_filter] {
        switch rule {
        case .allow:
            return [ret(retAllow)]
        case .fail(let e):
            return [ret(retErrno(e))]
        case .argumentIn(let index, let values):
            guard !values.isEmpty, values.count < 254 else { throw SandboxError("bad value list") }
            var b = [load(offsetArgumentLow(index))]
            for (i, v) in values.enumerated() {
                // Match: jump over the remaining compares and the kill, to the allow.
                b.append(jump(jeqK, v, UInt8(values.count - 1 - i + 1), 0))
            }
            b.append(ret(retKillProcess))
            b.append(ret(retAllow))
            return b
        case .argumentHasBits(let index, let mask):
            // JSET tests (A & mask) != 0: one bit at a time so that all must be set.
            var b = [load(offsetArgumentLow(index))]
            let bits = (0 ..< 32).map { UInt32(1) << $0 }.filter { mask & $0 != 0 }
            for bit in bits { b.append(jump(jsetK, bit, 1, 0)); b.append(ret(retKillProcess)) }
            // Each "jset ok -> skip the kill" lands on the next test, the last on allow.
            b.append(ret(retAllow))
            return b
        case .argumentLacksBits(let index, let mask):
            return [load(offsetArgumentLow(index)), jump(jsetK, mask, 0, 1),
                    ret(retKillProcess), ret(retAllow)]
        }
    }
}

struct SandboxError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
