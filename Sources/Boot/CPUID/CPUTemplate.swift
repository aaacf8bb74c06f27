import KVM

/// A named CPU model: which of KVM's supported CPUID features the guest may see
/// (Firecracker's and cloud-hypervisor's "CPU templates"). A template only hides; it
/// never adds what KVM cannot provide.
public struct CPUTemplate: Sendable, Equatable {
    public let name: String
    /// One line for `vmmctl cpu-templates`.
    public let summary: String
    /// Features cleared in every vCPU's CPUID.
    public let hiddenFeatures: [CPUFeature]
    /// Leaves removed entirely (e.g. 0DH, which enumerates XSAVE state components).
    public let hiddenLeaves: [UInt32]

    /// Linux parameters that turn a feature off in the kernel, for when KVM cannot hide
    /// it from CPUID: `noxsave` clears X86_FEATURE_XSAVE (and with it AVX*) at boot.
    public let linuxParameters: [(feature: CPUFeature, parameter: String)]

    public init(name: String, summary: String, hiddenFeatures: [CPUFeature] = [], hiddenLeaves: [UInt32] = [],
                linuxParameters: [(feature: CPUFeature, parameter: String)] = []) {
        self.name = name; self.summary = summary; self.hiddenFeatures = hiddenFeatures; self.hiddenLeaves = hiddenLeaves
        self.linuxParameters = linuxParameters
    }

    public static func == (a: CPUTemplate, b: CPUTemplate) -> Bool {
        a.name == b.name && a.hiddenFeatures == b.hiddenFeatures && a.hiddenLeaves == b.hiddenLeaves
            && a.linuxParameters.map(\.parameter) == b.linuxParameters.map(\.parameter)
    }

    /// The Linux parameters needed because `stillVisible` features could not be hidden.
    public func linuxParameters(for stillVisible: [CPUFeature]) -> [String] {
        var result: [String] = []
        for (feature, parameter) in linuxParameters where stillVisible.contains(feature) && !result.contains(parameter) {
            result.append(parameter)
        }
        return result
    }

    /// `entries` with this template's features and leaves hidden.
    public func apply(to entries: [CPUIDEntry]) -> [CPUIDEntry] {
        entries.filter { !hiddenLeaves.contains($0.function) }.map { entry in
            hiddenFeatures.reduce(entry) { $1.clearing(in: $0) }
        }
    }

    /// Everything KVM supports (`KVM_GET_SUPPORTED_CPUID`), the hypervisor leaves aside.
    public static let host = CPUTemplate(
        name: "host", summary: "everything this host's KVM supports (the default)")

    /// Hides what an instruction-emulating KVM cannot execute.
    ///
    /// Some KVMs run guest code at CPL 0 through KVM's instruction emulator (PVM, the
    /// "software-assisted" KVM of the machines this project is tested on). That emulator
    /// has no `cmpxchg16b` and none of the XSAVE family (`xsave`, `xrstor`, `xsaves`,
    /// `xgetbv`, ...). Linux uses both as soon as CPUID says they exist — SLUB's
    /// lock-free fast path needs CX16, the FPU code saves state with XSAVE — and stops
    /// with an emulation failure when the instruction cannot run. So this template hides
    /// CX16, XSAVE/OSXSAVE with leaf 0DH (the XSAVE state components), and every feature
    /// whose state only XSAVE can manage: AVX, AVX2, FMA, F16C, AVX-512, AVX-VNNI, VAES,
    /// VPCLMULQDQ, AMX, PKU, XOP, FMA4. Linux then uses FXSAVE and the locked SLUB path,
    /// and boots. It also hides ERMS and FSRM ("fast" `rep movsb`/`stosb`): that emulator
    /// runs a string instruction one element per step (~0.8 µs), so Linux's byte-wise
    /// `rep stosb` page clear costs 3 ms a page where the `rep stosq` it uses without ERMS
    /// costs an eighth of that (measured here: 32 KiB by `rep movsb` 25 ms, by `rep movsd`
    /// 5 ms). And SSSE3: Debian's kernel runs blake2s's SSSE3 code at CPL 0 while it
    /// unpacks the initramfs (`movd %ecx,%xmm15`), which that emulator refuses; PVM will
    /// not hide it through CPUID either, so Linux gets `clearcpuid=` for it too.
    ///
    /// A KVM may refuse to hide some of them: PVM passes CPUID leaf 1's XSAVE and the AVX
    /// bits through from the host whatever KVM_SET_CPUID2 says (`vmmctl cpu-templates`
    /// shows which). For a Linux kernel the machine then adds `noxsave` to the command
    /// line, which makes Linux drop XSAVE and everything built on it, and logs that it did.
    public static let emulationSafe = CPUTemplate(
        name: "emulation-safe",
        summary: "host without cmpxchg16b, the XSAVE family (and AVX*, which need XSAVE) and fast rep movsb: for KVMs that emulate guest CPL 0",
        hiddenFeatures: [
            .cx16, .xsave, .osxsave, .avx, .fma, .f16c, .avx2,
            .avx512f, .avx512dq, .avx512ifma, .avx512pf, .avx512er, .avx512cd, .avx512bw, .avx512vl,
            .avx512vbmi, .avx512vbmi2, .avx512vnni, .avx512bitalg, .avx512vpopcntdq, .avx512vp2intersect,
            .avx512fp16, .avx512bf16, .avxVNNI, .vaes, .vpclmulqdq, .amxBF16, .amxTile, .amxInt8,
            .pku, .ospke, .xop, .fma4, .erms, .fsrm, .ssse3,
        ],
        hiddenLeaves: [0xD],
        linuxParameters: [(.xsave, "noxsave"), (.osxsave, "noxsave"), (.avx, "noxsave"),
                          (.erms, "clearcpuid=erms,fsrm,ssse3"), (.fsrm, "clearcpuid=erms,fsrm,ssse3"),
                          (.ssse3, "clearcpuid=erms,fsrm,ssse3")])

    /// The hidden features that are still set in `readback`, what `KVM_GET_CPUID2`
    /// returns after `KVM_SET_CPUID2`: a KVM that passes some leaves through from the
    /// host (PVM does, for XSAVE and AVX*) cannot hide them, and a caller should say so.
    public func featuresStillVisible(in readback: [CPUIDEntry]) -> [CPUFeature] {
        hiddenFeatures.filter { f in readback.contains { f.isSet(in: $0) } }
    }

    /// Every template, in the order `vmmctl cpu-templates` lists them.
    public static let all: [CPUTemplate] = [.host, .emulationSafe]

    /// The template called `name`.
    public static func named(_ name: String) throws -> CPUTemplate {
        guard let t = all.first(where: { $0.name == name }) else {
            throw CPUTemplateError(name: name)
        }
        return t
    }
}

public struct CPUTemplateError: Error, Equatable, Sendable, CustomStringConvertible {
    public let name: String
    public var description: String {
        "no CPU template named \"\(name)\"; known: " + CPUTemplate.all.map(\.name).joined(separator: ", ")
    }
}
