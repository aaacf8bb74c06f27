import KVM

/// One CPUID feature flag: the leaf, sub-leaf, register and bit that report it (Intel
/// SDM Vol. 2A, CPUID, "Feature Information"; AMD APM Vol. 3, appendix E).
public struct CPUFeature: Sendable, Equatable, Hashable {
    public enum Register: Sendable, Hashable { case eax, ebx, ecx, edx }

    public let name: String
    public let leaf: UInt32
    public let subleaf: UInt32
    public let register: Register
    public let bit: UInt32

    public init(_ name: String, leaf: UInt32, subleaf: UInt32 = 0, _ register: Register, bit: UInt32) {
        self.name = name; self.leaf = leaf; self.subleaf = subleaf; self.register = register; self.bit = bit
    }

    /// Whether `entry` is the leaf and sub-leaf that carries this feature.
    func isReported(by entry: CPUIDEntry) -> Bool {
        entry.function == leaf && (entry.flags & CPUIDEntry.significantIndex == 0 || entry.index == subleaf)
    }

    /// The feature's bit in `entry`.
    public func isSet(in entry: CPUIDEntry) -> Bool {
        isReported(by: entry) && value(of: entry) & (1 << bit) != 0
    }

    func value(of e: CPUIDEntry) -> UInt32 {
        switch register {
        case .eax: return e.eax
        case .ebx: return e.ebx
        case .ecx: return e.ecx
        case .edx: return e.edx
        }
    }

    /// `entry` with this feature's bit cleared.
    func clearing(in entry: CPUIDEntry) -> CPUIDEntry {
        guard isReported(by: entry) else { return entry }
        var e = entry
        let mask = ~(UInt32(1) << bit)
        switch register {
        case .eax: e.eax &= mask
        case .ebx: e.ebx &= mask
        case .ecx: e.ecx &= mask
        case .edx: e.edx &= mask
        }
        return e
    }
}

extension CPUFeature {
    // CPUID.01H:ECX.
    public static let cx16 = CPUFeature("cx16", leaf: 1, .ecx, bit: 13)
    public static let fma = CPUFeature("fma", leaf: 1, .ecx, bit: 12)
    public static let xsave = CPUFeature("xsave", leaf: 1, .ecx, bit: 26)
    public static let osxsave = CPUFeature("osxsave", leaf: 1, .ecx, bit: 27)
    public static let avx = CPUFeature("avx", leaf: 1, .ecx, bit: 28)
    public static let f16c = CPUFeature("f16c", leaf: 1, .ecx, bit: 29)
    // CPUID.(EAX=07H,ECX=0):EBX.
    public static let avx2 = CPUFeature("avx2", leaf: 7, .ebx, bit: 5)
    public static let ssse3 = CPUFeature("ssse3", leaf: 1, .ecx, bit: 9)
    public static let erms = CPUFeature("erms", leaf: 7, .ebx, bit: 9)
    public static let avx512f = CPUFeature("avx512f", leaf: 7, .ebx, bit: 16)
    public static let avx512dq = CPUFeature("avx512dq", leaf: 7, .ebx, bit: 17)
    public static let avx512ifma = CPUFeature("avx512ifma", leaf: 7, .ebx, bit: 21)
    public static let avx512pf = CPUFeature("avx512pf", leaf: 7, .ebx, bit: 26)
    public static let avx512er = CPUFeature("avx512er", leaf: 7, .ebx, bit: 27)
    public static let avx512cd = CPUFeature("avx512cd", leaf: 7, .ebx, bit: 28)
    public static let avx512bw = CPUFeature("avx512bw", leaf: 7, .ebx, bit: 30)
    public static let avx512vl = CPUFeature("avx512vl", leaf: 7, .ebx, bit: 31)
    // CPUID.(EAX=07H,ECX=0):ECX.
    public static let avx512vbmi = CPUFeature("avx512vbmi", leaf: 7, .ecx, bit: 1)
    public static let pku = CPUFeature("pku", leaf: 7, .ecx, bit: 3)
    public static let ospke = CPUFeature("ospke", leaf: 7, .ecx, bit: 4)
    public static let avx512vbmi2 = CPUFeature("avx512_vbmi2", leaf: 7, .ecx, bit: 6)
    public static let vaes = CPUFeature("vaes", leaf: 7, .ecx, bit: 9)
    public static let vpclmulqdq = CPUFeature("vpclmulqdq", leaf: 7, .ecx, bit: 10)
    public static let avx512vnni = CPUFeature("avx512_vnni", leaf: 7, .ecx, bit: 11)
    public static let avx512bitalg = CPUFeature("avx512_bitalg", leaf: 7, .ecx, bit: 12)
    public static let avx512vpopcntdq = CPUFeature("avx512_vpopcntdq", leaf: 7, .ecx, bit: 14)
    // CPUID.(EAX=07H,ECX=0):EDX.
    public static let fsrm = CPUFeature("fsrm", leaf: 7, .edx, bit: 4)
    public static let avx512vp2intersect = CPUFeature("avx512_vp2intersect", leaf: 7, .edx, bit: 8)
    public static let avx512fp16 = CPUFeature("avx512_fp16", leaf: 7, .edx, bit: 23)
    public static let amxBF16 = CPUFeature("amx_bf16", leaf: 7, .edx, bit: 22)
    public static let amxTile = CPUFeature("amx_tile", leaf: 7, .edx, bit: 24)
    public static let amxInt8 = CPUFeature("amx_int8", leaf: 7, .edx, bit: 25)
    // CPUID.(EAX=07H,ECX=1):EAX.
    public static let avxVNNI = CPUFeature("avx_vnni", leaf: 7, subleaf: 1, .eax, bit: 4)
    public static let avx512bf16 = CPUFeature("avx512_bf16", leaf: 7, subleaf: 1, .eax, bit: 5)
    // CPUID.80000001H:ECX (AMD).
    public static let xop = CPUFeature("xop", leaf: 0x8000_0001, .ecx, bit: 11)
    public static let fma4 = CPUFeature("fma4", leaf: 0x8000_0001, .ecx, bit: 16)
}
