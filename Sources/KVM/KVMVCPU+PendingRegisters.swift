import CKVM

extension KVMVCPU {
    /// Applies register writes still waiting in the sync-register area (`kvm_dirty_regs`)
    /// with `KVM_SET_REGS`/`KVM_SET_SREGS`, and clears them, so that `KVM_GET_REGS` from another thread
    /// sees the state the next `KVM_RUN` resumes from, and a `KVM_SET_REGS` from a debugger
    /// is not overwritten by stale sync registers at that entry. Call it on the vCPU's own
    /// thread, outside `KVM_RUN`; it does nothing (one load) when no write is pending.
    public func applyPendingSyncedRegisterWrites() throws {
        // SAFETY: kvm_dirty_regs is a u64 inside the mapped run area.
        let dirty = run.load(fromByteOffset: CKVM_RUN_DIRTY_REGS, as: UInt64.self)
        guard dirty != 0 else { return }
        if dirty & UInt64(CKVM_SYNC_X86_REGS) != 0 { try setRegisters(syncedRegisters) }
        if dirty & UInt64(CKVM_SYNC_X86_SREGS) != 0 {
            // SAFETY: s.regs.sregs is a kvm_sregs inside the mapped run area.
            try setSpecialRegisters(run.loadUnaligned(fromByteOffset: CKVM_RUN_SYNC_SREGS, as: SpecialRegisters.self))
        }
        // SAFETY: as above.
        run.storeBytes(of: dirty & ~UInt64(CKVM_SYNC_X86_REGS | CKVM_SYNC_X86_SREGS), toByteOffset: CKVM_RUN_DIRTY_REGS,
                       as: UInt64.self)
    }
}
