import Boot
import KVM
import Testing

/// A small supported-CPUID list shaped like KVM's on Intel and AMD hosts.
let fakeSupportedCPUID: [CPUIDEntry] = [
    CPUIDEntry(function: 0, eax: 0x1F),
    CPUIDEntry(function: 1, eax: 0x806F8, ebx: 0x0000_0800, ecx: 1 << 13 | 1 << 26 | 1 << 28 | 1 << 0, edx: 1 << 0),
    // Leaf 4: L1d (type 1, level 1), L2 (type 3, level 2), L3 (type 3, level 3), end.
    CPUIDEntry(function: 4, index: 0, flags: CPUIDEntry.significantIndex, eax: 0xFC00_4121),
    CPUIDEntry(function: 4, index: 1, flags: CPUIDEntry.significantIndex, eax: 0xFC00_4143),
    CPUIDEntry(function: 4, index: 2, flags: CPUIDEntry.significantIndex, eax: 0xFC07_C163),
    CPUIDEntry(function: 4, index: 3, flags: CPUIDEntry.significantIndex, eax: 0),
    CPUIDEntry(function: 7, index: 0, flags: CPUIDEntry.significantIndex, ebx: 1 << 5 | 1 << 16 | 1 << 9),
    CPUIDEntry(function: 7, index: 1, flags: CPUIDEntry.significantIndex, eax: 1 << 4 | 1 << 5 | 1 << 0),
    CPUIDEntry(function: 0xB, index: 0, flags: CPUIDEntry.significantIndex, eax: 1, ebx: 2, ecx: 0x100),
    CPUIDEntry(function: 0xD, index: 0, flags: CPUIDEntry.significantIndex, eax: 7),
    CPUIDEntry(function: 0xD, index: 1, flags: CPUIDEntry.significantIndex, eax: 0xF),
    CPUIDEntry(function: 0x8000_0001, ecx: 1 << 0 | 1 << 11, edx: 1 << 29),
    CPUIDEntry(function: 0x8000_0008, ecx: 0xFFFF),
    CPUIDEntry(function: 0x8000_001E, eax: 0xFF, ebx: 0xFFFF, ecx: 0xFF),
]

@Suite struct CPUTopologyTests {
    @Test func apicIDsLeaveRoomForEachLevel() throws {
        let t = try CPUTopology(sockets: 2, coresPerSocket: 3, threadsPerCore: 2)
        #expect(t.cpuCount == 12 && t.threadBits == 1 && t.coreBits == 2)
        #expect((0 ..< 12).map { t.apicID(ofIndex: $0) } == [0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13])
        let flat = try #require(CPUTopology.flat(cpus: 4))
        #expect((0 ..< 4).map { flat.apicID(ofIndex: $0) } == [0, 1, 2, 3])
    }

    @Test func parsesAndRefuses() throws {
        #expect(try CPUTopology(parsing: "sockets=2,cores=2,threads=2") == CPUTopology(sockets: 2, coresPerSocket: 2, threadsPerCore: 2))
        #expect(try CPUTopology(parsing: "cores=4").cpuCount == 4)
        for bad in ["sockets=0", "cores=x", "dies=2", "cores", "threads=-1", "sockets=2,cores=200"] {
            #expect(throws: TopologyError.self, "\(bad)") { try CPUTopology(parsing: bad) }
        }
    }
}

@Suite struct CPUIDBuilderTests {
    let topology: CPUTopology
    init() throws { topology = try CPUTopology(sockets: 2, coresPerSocket: 2, threadsPerCore: 2) }

    @Test func leafOneCarriesTheAPICIDAndPackageSize() throws {
        let e = CPUIDBuilder.entries(supported: fakeSupportedCPUID, apicID: 5, topology: topology)
        let leaf1 = try #require(e.leaf(1))
        #expect(leaf1.ebx >> 24 == 5)
        #expect((leaf1.ebx >> 16) & 0xFF == 4)         // 2 cores × 2 threads per package
        #expect(leaf1.ebx & 0xFFFF == 0x0800)            // CLFLUSH size kept
        #expect(leaf1.edx & (1 << 28) != 0)              // HTT
        let single = CPUIDBuilder.entries(supported: fakeSupportedCPUID, apicID: 0, cpuCount: 1)
        #expect(try #require(single.leaf(1)).edx & (1 << 28) == 0)
    }

    @Test func extendedTopologyLevels() throws {
        let e = CPUIDBuilder.entries(supported: fakeSupportedCPUID, apicID: 6, topology: topology)
        do {
            let leaf: UInt32 = 0xB
            let levels = e.filter { $0.function == leaf }.sorted { $0.index < $1.index }
            #expect(levels.count == 3)
            #expect(levels.allSatisfy { $0.edx == 6 && $0.flags & CPUIDEntry.significantIndex != 0 })
            #expect(levels[0].eax == 1 && levels[0].ebx == 2 && levels[0].ecx == 0x100)   // SMT: shift 1, 2 threads
            #expect(levels[1].eax == 2 && levels[1].ebx == 4 && levels[1].ecx == 0x201)   // core: shift 2, 4 per package
            #expect(levels[2].eax == 0 && levels[2].ebx == 0 && levels[2].ecx == 2)       // end
        }
        // 0x1F is only given when KVM lists it.
        #expect(!e.contains { $0.function == 0x1F })
    }

    @Test func cacheSharingAndAMDLeaves() throws {
        let e = CPUIDBuilder.entries(supported: fakeSupportedCPUID, apicID: 6, topology: topology)
        let caches = e.filter { $0.function == 4 }.sorted { $0.index < $1.index }
        #expect(caches[0].eax >> 26 == 1)                    // 2 cores per package, minus one
        #expect((caches[0].eax >> 14) & 0xFFF == 1)          // L1: the two threads of a core
        #expect((caches[2].eax >> 14) & 0xFFF == 3)          // L3: the whole package
        #expect(caches[0].eax & 0x3FFF == 0x0121)            // type and level kept
        #expect(caches[3].eax == 0)                          // the terminator is untouched
        let size = try #require(e.leaf(0x8000_0008))
        #expect(size.ecx & 0xFF == 3 && (size.ecx >> 12) & 0xF == 2)
        let amd = try #require(e.leaf(0x8000_001E))
        #expect(amd.eax == 6 && amd.ebx & 0xFF == 1 && (amd.ebx >> 8) & 0xFF == 1 && amd.ecx & 0xFF == 1)
        #expect(try #require(e.leaf(0x8000_0001)).ecx & 0x2 != 0)   // CmpLegacy
    }
}

@Suite struct CPUTemplateTests {
    @Test func emulationSafeHidesCX16AndTheXSAVEFamily() throws {
        let e = CPUTemplate.emulationSafe.apply(to: fakeSupportedCPUID)
        let leaf1 = try #require(e.leaf(1))
        #expect(leaf1.ecx & (1 << 13) == 0, "cx16")
        #expect(leaf1.ecx & (1 << 26) == 0, "xsave")
        #expect(leaf1.ecx & (1 << 28) == 0, "avx")
        #expect(leaf1.ecx & 1 == 1, "sse3 stays")
        #expect(!e.contains { $0.function == 0xD }, "leaf 0xD is gone")
        let leaf7 = try #require(e.leaf(7, index: 0))
        #expect(leaf7.ebx == 0, "avx2, avx512f and erms (the emulator runs rep movsb a byte a step) hidden")
        let leaf71 = try #require(e.leaf(7, index: 1))
        #expect(leaf71.eax == 1 << 0, "avx_vnni and avx512_bf16 hidden in sub-leaf 1 only")
        #expect(try #require(e.leaf(0x8000_0001)).ecx == 1 << 0, "xop hidden, lahf kept")
    }

    @Test func hostChangesNothingAndNamesResolve() throws {
        #expect(CPUTemplate.host.apply(to: fakeSupportedCPUID) == fakeSupportedCPUID)
        #expect(try CPUTemplate.named("emulation-safe") == .emulationSafe)
        #expect(throws: CPUTemplateError.self) { try CPUTemplate.named("T2") }
        #expect(Set(CPUTemplate.all.map(\.name)).count == CPUTemplate.all.count)
    }
}

@Suite struct ParavirtFeatureTests {
    /// Issue 11 (b): where vmcall never returns, PV IPIs hung SMP bring-up. The features
    /// that are hypercalls go; kvmclock, steal time, PV EOI and the rest stay.
    @Test func hypercallFeaturesAreClearedInEveryKVMBlock() {
        let signature = (ebx: UInt32(0x4B4D_564B), ecx: UInt32(0x564B_4D56), edx: UInt32(0x4D))
        let all: UInt32 = 0x0100_7EFB  // this host's KVM_CPUID_FEATURES
        let entries = [
            CPUIDEntry(function: 0x4000_0000, index: 0, flags: 0, eax: 0x4000_0001, ebx: 1, ecx: 2, edx: 3),  // not KVM
            CPUIDEntry(function: 0x4000_0001, index: 0, flags: 0, eax: all, ebx: 0, ecx: 0, edx: 0),
            CPUIDEntry(function: 0x4000_0100, index: 0, flags: 0, eax: 0x4000_0101, ebx: signature.ebx, ecx: signature.ecx, edx: signature.edx),
            CPUIDEntry(function: 0x4000_0101, index: 0, flags: 0, eax: all, ebx: 0, ecx: 0, edx: 0),
        ]
        let (result, cleared) = CPUIDBuilder.withoutHypercallFeatures(entries)
        #expect(cleared == (1 << 7) | (1 << 11) | (1 << 13))
        #expect(result[1].eax == all, "a leaf that does not follow a KVM signature is left alone")
        #expect(result[3].eax == all & ~cleared)
        #expect(result[3].eax & (1 << 3 | 1 << 24) == 1 << 3 | 1 << 24, "kvmclock and its stable bit stay")
    }
}
