import KVM

/// Builds what CPUID reports to each vCPU, starting from KVM's supported CPUID
/// (`KVM_GET_SUPPORTED_CPUID`) and making it per-vCPU consistent.
public enum CPUIDBuilder {
    /// CPUID.1:EAX (family, model, stepping), which a reset CPU leaves in EDX.
    public static func signature(_ entries: [CPUIDEntry]) -> UInt32 {
        entries.leaf(1)?.eax ?? 0x600
    }
}

extension CPUIDBuilder {
    /// Moves KVM's paravirtual leaves (0x40000000-0x400000FF: "KVMKVMKVM", features)
    /// up by 0x100 and puts `own` leaves in their place.
    ///
    /// Linux (and KVM itself) look for the KVM signature at every 0x100 step from
    /// 0x40000000, so the guest keeps kvmclock and the other paravirtual features while
    /// the first hypervisor leaf names this VMM.
    public static func relocatingHypervisorLeaves(_ entries: [CPUIDEntry], own: [CPUIDEntry],
                                                  kvmBase: UInt32 = 0x4000_0100) -> [CPUIDEntry] {
        let first: UInt32 = 0x4000_0000
        var result = entries.filter { !($0.function >= first && $0.function < first + 0x100) }
        for var e in entries where e.function >= first && e.function < first + 0x100 {
            if e.function == first {
                // EAX is the highest leaf of the range, as an absolute number (0 means first + 1).
                e.eax = e.eax >= first && e.eax < first + 0x100 ? e.eax - first + kvmBase : kvmBase + 1
            }
            e.function = e.function - first + kvmBase
            result.append(e)
        }
        return result + own
    }
}
