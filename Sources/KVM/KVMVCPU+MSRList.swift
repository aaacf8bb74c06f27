import CKVM

extension KVMVCPU {
    /// `KVM_GET_MSRS` of every MSR in `indices` that KVM answers, in order; the ones it
    /// refuses (KVM stops a batch at the first, returning how many it read) are skipped.
    /// For the MSRs `KVM_GET_MSR_INDEX_LIST` names: some exist only with features this
    /// vCPU's CPUID does not have.
    public func readableMSRs(_ indices: [UInt32]) throws -> [(index: UInt32, value: UInt64)] {
        var result: [(index: UInt32, value: UInt64)] = []
        var rest = indices[...]
        while !rest.isEmpty {
            var entries = rest.map { kvm_msr_entry(index: $0, reserved: 0, data: 0) }
            let n = try transferMSRs(&entries, request: CKVM_GET_MSRS, name: "KVM_GET_MSRS")
            result += entries.prefix(n).map { ($0.index, $0.data) }
            rest = rest.dropFirst(n + 1)   // n answered, the next one refused
        }
        return result
    }
}
