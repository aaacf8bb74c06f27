import CSys

/// Compiles `SyscallPolicy` into a classic-BPF seccomp program (seccomp(2),
/// Documentation/userspace-api/seccomp_filter.rst).
///
/// Layout: check the architecture (x86-64, and not the x32 ABI) with the call's number
/// left in A; a binary search over the entries sorted by number (`jge` nodes, each leaf a
/// `jeq` that jumps with `ja` to its entry's block or falls to KILL_PROCESS); then the
/// entries' blocks, each ending in a return.
///
/// Why a search and not one compare per entry in a row: the kernel runs the filter for
/// every call it does not know to be always allowed (ioctl with KVM_RUN, on every exit),
/// and when the filter goes on it runs it once for every system call number to build
/// that knowledge (seccomp_cache_prepare, with interrupts off). With a row of ~50
/// compares that preparation was ~3.5% of a worker's start-up CPU (~0.2 ms, perf over
/// vmmd's lifecycle benchmark); the search takes ~12 instructions for a call, 48 at most
/// (ioctl and its list of KVM requests), where the row took up to ~100.
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
    static let ja: UInt16 = 0x05          // BPF_JMP | BPF_JA: k instructions forward (32 bits)
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
        let sorted = entries.sorted { UInt32(bitPattern: $0.number) < UInt32(bitPattern: $1.number) }
        for i in sorted.indices.dropFirst() where sorted[i].number == sorted[i - 1].number {
            throw SandboxError("system call \(sorted[i].number) is in the policy twice (\(sorted[i - 1].name), \(sorted[i].name))")
        }
        // The search, with each leaf's `ja` noted to be aimed once the blocks are placed.
        var leafJumps: [LeafJump] = []
        try search(sorted, 0 ..< sorted.count, into: &p, leafJumps: &leafJumps)
        var blockStart = [Int](repeating: 0, count: sorted.count)
        for (i, entry) in sorted.enumerated() {
            let body = try block(entry.rule)
            blockStart[i] = p.count
            p += body
        }
        for leaf in leafJumps { p[leaf.at].k = UInt32(blockStart[leaf.entry] - leaf.at - 1) }
        guard p.count <= 4096 else { throw SandboxError("seccomp program of \(p.count) instructions is too long") }
        return p
    }

    /// A leaf's `ja` (at `at`) and the entry whose block it goes to.
    private struct LeafJump {
        var at: Int
        var entry: Int
    }

    /// The search over `sorted[range]` (A holds the call's number): a leaf is `jeq` to
    /// its `ja` or past it to a kill; a node sends numbers below its pivot to the left
    /// half, which follows it, and jumps over that half for the rest.
    private static func search(_ sorted: [SyscallPolicy.Entry], _ range: Range<Int>, into p: inout [sock_filter],
                               leafJumps: inout [LeafJump]) throws {
        if range.isEmpty {
            p.append(ret(retKillProcess))
            return
        }
        if range.count == 1 {
            let i = range.lowerBound
            p.append(jump(jeqK, UInt32(bitPattern: sorted[i].number), 0, 1))
            leafJumps.append(LeafJump(at: p.count, entry: i))
            p.append(sock_filter(code: ja, jt: 0, jf: 0, k: 0))
            p.append(ret(retKillProcess))
            return
        }
        let mid = range.lowerBound + range.count / 2
        let node = p.count
        p.append(jump(jgeK, UInt32(bitPattern: sorted[mid].number), 0, 0))
        try search(sorted, range.lowerBound ..< mid, into: &p, leafJumps: &leafJumps)
        let left = p.count - node - 1
        guard left <= 255 else { throw SandboxError("seccomp search node spans \(left) instructions") }
        p[node].jt = UInt8(left)
        try search(sorted, mid ..< range.upperBound, into: &p, leafJumps: &leafJumps)
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
