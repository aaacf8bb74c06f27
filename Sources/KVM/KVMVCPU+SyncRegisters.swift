import CKVM

/// Register state shared through `kvm_run` (`KVM_CAP_SYNC_REGS`, api.rst "kvm_valid_regs"):
/// KVM stores the chosen register sets into the run area on every exit and loads the
/// ones marked dirty on the next entry, so an exit handler can read and write registers
/// without a `KVM_GET_REGS`/`KVM_SET_REGS` round trip. Used by the hypercall path.
extension KVMVCPU {
    /// Asks KVM to publish general-purpose and segment registers on every exit
    /// (or stops it, with `false`). Costs a copy per exit, so only VMs that need it ask.
    public func setSyncRegisters(_ enabled: Bool) {
        let sets: UInt64 = enabled ? UInt64(CKVM_SYNC_X86_REGS | CKVM_SYNC_X86_SREGS) : 0
        // SAFETY: kvm_valid_regs is a u64 inside the mapped run area.
        run.storeBytes(of: sets, toByteOffset: CKVM_RUN_VALID_REGS, as: UInt64.self)
    }

    /// The general-purpose registers at the last exit (sync registers must be on).
    @inline(__always)
    public var syncedRegisters: Registers {
        // SAFETY: s.regs.regs is a kvm_regs inside the mapped run area.
        run.loadUnaligned(fromByteOffset: CKVM_RUN_SYNC_REGS, as: Registers.self)
    }

    /// Replaces the general-purpose registers for the next entry (works without
    /// `kvm_valid_regs`: KVM loads whatever `kvm_dirty_regs` names).
    @inline(__always)
    public func setSyncedRegisters(_ regs: Registers) {
        // SAFETY: s.regs.regs and kvm_dirty_regs lie inside the mapped run area.
        run.storeBytes(of: regs, toByteOffset: CKVM_RUN_SYNC_REGS, as: Registers.self)
        let dirty = run.load(fromByteOffset: CKVM_RUN_DIRTY_REGS, as: UInt64.self)
        run.storeBytes(of: dirty | UInt64(CKVM_SYNC_X86_REGS), toByteOffset: CKVM_RUN_DIRTY_REGS, as: UInt64.self)
    }

    /// Replaces the segment, control and descriptor-table registers for the next entry
    /// (`KVM_SYNC_X86_SREGS` in `kvm_dirty_regs`; works without `kvm_valid_regs`).
    public func setSyncedSpecialRegisters(_ sregs: SpecialRegisters) {
        // SAFETY: s.regs.sregs and kvm_dirty_regs lie inside the mapped run area.
        run.storeBytes(of: sregs, toByteOffset: CKVM_RUN_SYNC_SREGS, as: SpecialRegisters.self)
        let dirty = run.load(fromByteOffset: CKVM_RUN_DIRTY_REGS, as: UInt64.self)
        run.storeBytes(of: dirty | UInt64(CKVM_SYNC_X86_SREGS), toByteOffset: CKVM_RUN_DIRTY_REGS, as: UInt64.self)
    }

    /// The privilege level at the last exit: SS.DPL, which is the CPL on x86
    /// (the convention KVM itself uses).
    @inline(__always)
    public var syncedCPL: Int {
        // SAFETY: the byte lies inside the mapped run area.
        Int(run.load(fromByteOffset: CKVM_RUN_SYNC_SS_DPL, as: UInt8.self) & 3)
    }

    /// Whether the vCPU was executing 64-bit code (CS.L) at the last exit.
    @inline(__always)
    public var syncedLongMode: Bool {
        // SAFETY: the byte lies inside the mapped run area.
        run.load(fromByteOffset: CKVM_RUN_SYNC_CS_L, as: UInt8.self) != 0
    }
}
