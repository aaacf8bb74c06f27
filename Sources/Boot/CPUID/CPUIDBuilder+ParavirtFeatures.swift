import KVM

extension CPUIDBuilder {
    /// KVM paravirtual features (CPUID KVM_CPUID_FEATURES EAX, Documentation/virt/kvm/
    /// x86/cpuid.rst) whose use is a `vmcall`: PV_UNHALT (bit 7, KVM_HC_KICK_CPU from PV
    /// spinlocks), PV_SEND_IPI (11, KVM_HC_SEND_IPI), PV_SCHED_YIELD (13,
    /// KVM_HC_SCHED_YIELD), HC_MAP_GPA_RANGE (16). The MSR-based ones (kvmclock, steal
    /// time, PV EOI, async PF, poll control, PV TLB flush) need no hypercall.
    public static let hypercallFeatureBits: UInt32 = (1 << 7) | (1 << 11) | (1 << 13) | (1 << 16)

    /// Clears `hypercallFeatureBits` in the features leaf of every KVM signature block
    /// ("KVMKVMKVM" at 0x40000x00): for hosts where a guest's `vmcall` never returns, so
    /// a guest does not lean on hypercalls for IPIs and lock wake-ups. Returns the
    /// entries and the bits that were set before.
    public static func withoutHypercallFeatures(_ entries: [CPUIDEntry]) -> (entries: [CPUIDEntry], cleared: UInt32) {
        let kvmSignature: (UInt32, UInt32, UInt32) = (0x4B4D_564B, 0x564B_4D56, 0x4D)  // "KVMKVMKVM\0\0\0"
        let bases = entries.filter { ($0.function & 0xFFFF_00FF) == 0x4000_0000 && ($0.ebx, $0.ecx, $0.edx) == kvmSignature }
            .map(\.function)
        var cleared: UInt32 = 0
        let result = entries.map { entry -> CPUIDEntry in
            guard bases.contains(where: { $0 + 1 == entry.function }) else { return entry }
            var e = entry
            cleared |= e.eax & hypercallFeatureBits
            e.eax &= ~hypercallFeatureBits
            return e
        }
        return (result, cleared)
    }
}
