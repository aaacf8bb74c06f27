import KVM

extension CPUIDBuilder {
    static let leafCacheParameters: UInt32 = 4
    static let leafExtendedTopology: UInt32 = 0xB
    static let leafV2ExtendedTopology: UInt32 = 0x1F
    static let leafAMDSizeIdentifiers: UInt32 = 0x8000_0008
    static let leafAMDCacheTopology: UInt32 = 0x8000_001D
    static let leafAMDProcessorTopology: UInt32 = 0x8000_001E

    /// The leaves for the vCPU with `apicID` in `topology`: KVM's supported set with the
    /// vCPU's APIC ID and the topology in every leaf that reports them (Intel SDM Vol. 2,
    /// CPUID leaves 01H, 04H, 0BH, 1FH; AMD APM Vol. 3, E.4 leaves 8000_0008h, 8000_001Dh,
    /// 8000_001Eh).
    public static func entries(supported: [CPUIDEntry], apicID: UInt32, topology: CPUTopology) -> [CPUIDEntry] {
        let packageBits = topology.coreBits + topology.threadBits
        let logicalPerPackage = UInt32(1) << packageBits
        let hasLeaf = { (leaf: UInt32) in supported.contains { $0.function == leaf } }
        var result: [CPUIDEntry] = []
        for entry in supported {
            var e = entry
            switch e.function {
            case 1:
                // EBX[31:24] initial APIC ID, [23:16] addressable logical processors per package.
                e.ebx = (e.ebx & 0x0000_FFFF) | (apicID << 24) | (min(logicalPerPackage, 255) << 16)
                if logicalPerPackage > 1 { e.edx |= 1 << 28 } else { e.edx &= ~(1 << 28) }  // HTT
            case leafCacheParameters, leafAMDCacheTopology:
                e.eax = cacheSharing(e.eax, topology: topology, coresField: e.function == leafCacheParameters)
            case leafExtendedTopology, leafV2ExtendedTopology:
                continue  // rebuilt below
            case leafAMDSizeIdentifiers:
                // ECX[15:12] APIC ID bits for the package, [7:0] threads per package - 1.
                e.ecx = (e.ecx & ~0xF0FF) | UInt32(packageBits) << 12 | UInt32(topology.threadsPerSocket - 1)
            case leafAMDProcessorTopology:
                let core = (apicID >> topology.threadBits) & ((1 << topology.coreBits) - 1)
                e.eax = apicID
                e.ebx = (e.ebx & ~0xFFFF) | UInt32(topology.threadsPerCore - 1) << 8 | core
                e.ecx = (e.ecx & ~0xFF) | (apicID >> packageBits)
            case 0x8000_0001:
                // CmpLegacy: more than one logical processor per package.
                if topology.threadsPerSocket > 1 { e.ecx |= 1 << 1 } else { e.ecx &= ~(1 << 1) }
            default:
                break
            }
            result.append(e)
        }
        for leaf in [leafExtendedTopology, leafV2ExtendedTopology] where hasLeaf(leaf) {
            result += extendedTopology(leaf, apicID: apicID, topology: topology)
        }
        return result
    }

    /// Compatibility: a flat topology of `cpuCount` single-threaded cores.
    public static func entries(supported: [CPUIDEntry], apicID: UInt32, cpuCount: Int) -> [CPUIDEntry] {
        guard let flat = CPUTopology.flat(cpus: cpuCount) else { return supported }
        return entries(supported: supported, apicID: apicID, topology: flat)
    }

    /// Leaf 0BH/1FH: an SMT level, a core level, then the invalid level that ends the list.
    static func extendedTopology(_ leaf: UInt32, apicID: UInt32, topology: CPUTopology) -> [CPUIDEntry] {
        let levels: [(shift: Int, count: Int, type: UInt32)] = [
            (topology.threadBits, topology.threadsPerCore, 1),                       // SMT
            (topology.threadBits + topology.coreBits, topology.threadsPerSocket, 2),  // core
        ]
        var entries = levels.enumerated().map { i, level in
            CPUIDEntry(function: leaf, index: UInt32(i), flags: CPUIDEntry.significantIndex,
                       eax: UInt32(level.shift), ebx: UInt32(level.count), ecx: level.type << 8 | UInt32(i), edx: apicID)
        }
        entries.append(CPUIDEntry(function: leaf, index: 2, flags: CPUIDEntry.significantIndex, ecx: 2, edx: apicID))
        return entries
    }

    /// Leaf 04H/8000_001DH EAX: logical processors sharing the cache ([25:14], minus one),
    /// and for leaf 4 the cores per package ([31:26], minus one).
    static func cacheSharing(_ eax: UInt32, topology: CPUTopology, coresField: Bool) -> UInt32 {
        guard eax & 0x1F != 0 else { return eax }  // cache type 0: no more caches
        let level = (eax >> 5) & 0x7
        let sharingBits = level >= 3 ? topology.threadBits + topology.coreBits : topology.threadBits
        var v = (eax & ~(0xFFF << 14)) | UInt32((1 << sharingBits) - 1) << 14
        if coresField { v = (v & 0x03FF_FFFF) | UInt32((1 << topology.coreBits) - 1) << 26 }
        return v
    }
}
