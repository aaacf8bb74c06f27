import KVM

/// Builds what CPUID reports to each vCPU, starting from KVM's supported CPUID
/// (`KVM_GET_SUPPORTED_CPUID`) and making it per-vCPU consistent.
public enum CPUIDBuilder {
    /// The leaves for vCPU `apicID` of `cpuCount`: KVM's supported set with the initial
    /// APIC ID in leaf 1 EBX[31:24] and the x2APIC ID in leaves 0xB/0x1F EDX, and the
    /// logical processor count in leaf 1 EBX[23:16] with HTT set when there are several.
    public static func entries(supported: [CPUIDEntry], apicID: UInt32, cpuCount: Int) -> [CPUIDEntry] {
        supported.map { entry in
            var e = entry
            switch e.function {
            case 1:
                e.ebx = (e.ebx & 0x0000_FFFF) | (apicID << 24) | (UInt32(min(cpuCount, 255)) << 16)
                if cpuCount > 1 { e.edx |= 1 << 28 }  // HTT: the count field is valid
            case 0xB, 0x1F:
                e.edx = apicID
            default:
                break
            }
            return e
        }
    }

    /// CPUID.1:EAX (family, model, stepping), which a reset CPU leaves in EDX.
    public static func signature(_ entries: [CPUIDEntry]) -> UInt32 {
        entries.leaf(1)?.eax ?? 0x600
    }
}
