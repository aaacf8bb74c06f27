import CKVM

/// What KVM reports with an emulation failure (`KVM_EXIT_INTERNAL_ERROR`, suberror
/// `KVM_INTERNAL_ERROR_EMULATION`; api.rst "emulation_failure"): up to 15 bytes fetched
/// at RIP when `KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES` is set. Read on
/// demand by the emulation assist, so no other exit pays for the copy.
extension KVMVCPU {
    /// The instruction bytes of the last exit's emulation failure, or nil when KVM gave none.
    public func emulationFailureBytes() -> [UInt8]? {
        // SAFETY: every offset comes from offsetof(struct kvm_run, emulation_failure.*) and
        // insn_bytes is a 15-byte array inside the mapped run area.
        let flags = run.loadUnaligned(fromByteOffset: CKVM_RUN_EMULATION_FAILURE_FLAGS, as: UInt64.self)
        let ndata = run.loadUnaligned(fromByteOffset: CKVM_RUN_INTERNAL_NDATA, as: UInt32.self)
        guard flags & CKVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES != 0, ndata >= 3 else { return nil }
        let size = min(Int(run.load(fromByteOffset: CKVM_RUN_EMULATION_FAILURE_INSN_SIZE, as: UInt8.self)), 15)
        return (0 ..< size).map { run.load(fromByteOffset: CKVM_RUN_EMULATION_FAILURE_INSN_BYTES + $0, as: UInt8.self) }
    }
}
