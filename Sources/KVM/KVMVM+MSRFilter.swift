import CKVM

/// Userspace MSR handling (api.rst 4.97 `KVM_X86_SET_MSR_FILTER`, 7.21
/// `KVM_CAP_X86_USER_SPACE_MSR`): guest `rdmsr`/`wrmsr` of chosen MSRs exit to the VMM as
/// `KVM_EXIT_X86_RDMSR`/`KVM_EXIT_X86_WRMSR` instead of being handled by KVM. The VMM's
/// own `KVM_GET_MSRS`/`KVM_SET_MSRS` are host-initiated and never filtered.
extension KVMVM {
    /// One range of MSRs whose guest reads and/or writes exit.
    public struct MSRTrap: Sendable, Equatable {
        public let first: UInt32
        /// Consecutive MSRs from `first` (1 to 64); `trapped` bit i covers `first + i`.
        public let count: Int
        public let trapped: UInt64
        public let reads: Bool
        public let writes: Bool

        public init(first: UInt32, count: Int, trapped: UInt64, reads: Bool, writes: Bool) {
            self.first = first
            self.count = count
            self.trapped = trapped
            self.reads = reads
            self.writes = writes
        }
    }

    /// `KVM_ENABLE_CAP(KVM_CAP_X86_USER_SPACE_MSR, KVM_MSR_EXIT_REASON_FILTER)` and
    /// `KVM_X86_SET_MSR_FILTER` allowing everything but `traps`.
    public func trapMSRs(_ traps: [MSRTrap]) throws {
        var cap = kvm_enable_cap()
        cap.cap = UInt32(KVM_CAP_X86_USER_SPACE_MSR)
        cap.args.0 = UInt64(KVM_MSR_EXIT_REASON_FILTER)
        try ioctlValue(fd.raw, CKVM_ENABLE_CAP, &cap, "KVM_ENABLE_CAP(KVM_CAP_X86_USER_SPACE_MSR)")

        guard traps.count <= Int(KVM_MSR_FILTER_MAX_RANGES), traps.allSatisfy({ (1 ... 64).contains($0.count) }) else {
            throw KVMError(operation: "KVM_X86_SET_MSR_FILTER", errno: 0, detail: "at most \(KVM_MSR_FILTER_MAX_RANGES) ranges of 1-64 MSRs")
        }
        // In a filter range a set bit allows the access, a clear one denies (and exits).
        var bitmaps = traps.map { ~$0.trapped }
        var filter = kvm_msr_filter()
        filter.flags = UInt32(KVM_MSR_FILTER_DEFAULT_ALLOW)
        try bitmaps.withUnsafeMutableBufferPointer { maps in
            withUnsafeMutableBytes(of: &filter.ranges) { raw in
                let ranges = raw.bindMemory(to: kvm_msr_filter_range.self)
                for (i, trap) in traps.enumerated() {
                    ranges[i].flags = (trap.reads ? UInt32(KVM_MSR_FILTER_READ) : 0) | (trap.writes ? UInt32(KVM_MSR_FILTER_WRITE) : 0)
                    ranges[i].base = trap.first
                    ranges[i].nmsrs = UInt32(trap.count)
                    // SAFETY: the bitmap buffer outlives the ioctl below; KVM copies it.
                    ranges[i].bitmap = maps.baseAddress.map { UnsafeMutableRawPointer($0 + i).assumingMemoryBound(to: UInt8.self) }
                }
            }
            // SAFETY: kvm_msr_filter is a fixed-size struct; its bitmaps are alive here.
            try ioctlValue(fd.raw, CKVM_X86_SET_MSR_FILTER, &filter, "KVM_X86_SET_MSR_FILTER")
        }
    }
}
