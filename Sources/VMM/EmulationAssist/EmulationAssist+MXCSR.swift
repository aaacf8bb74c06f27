import KVM

/// `ldmxcsr m32` and `stmxcsr m32` (0F AE /2 and /3, SDM vol. 2 "LDMXCSR", "STMXCSR").
///
/// MXCSR is read and written through the XSAVE area (`KVM_GET_XSAVE`/`KVM_SET_XSAVE`):
/// its legacy region is the FXSAVE image, MXCSR at byte 24 and MXCSR_MASK at 28, the
/// header's XSTATE_BV at 512. Not through `struct kvm_fpu`: on this project's hosts
/// (PVM) KVM_GET_FPU reads MXCSR as 0 and KVM_SET_FPU drops it, where the XSAVE area
/// round-trips and is what the guest's own `fxsave` then sees (checked on this host:
/// `KVMHandleTests.mxcsrRoundTripsThroughTheXSAVEArea`).
extension EmulationAssist {
    static let mxcsrOffset = 24, mxcsrMaskOffset = 28, xstateBVOffset = 512
    /// MXCSR_MASK when the FXSAVE image holds 0 there (SDM vol. 1, 11.6.6).
    static let defaultMXCSRMask: UInt32 = 0xFFBF

    func mxcsrInstruction(load: Bool, _ insn: DecodedInstruction, _ ctx: inout AssistContext) throws {
        // #UD: a LOCK prefix, CR0.EM, or CR4.OSFXSR clear (the OS has not enabled SSE
        // state); #NM: CR0.TS. (CPUID.SSE is always there in long mode, where the assist
        // meets these; a 32-bit guest shown no SSE would get the #UD from the CPU's fetch.)
        guard !insn.lock, insn.memory != nil else { throw GuestFault.invalidOpcode }
        guard ctx.sregs.cr0 & (1 << 2) == 0, ctx.sregs.cr4 & (1 << 9) != 0 else { throw GuestFault.invalidOpcode }
        guard ctx.sregs.cr0 & (1 << 3) == 0 else { throw GuestFault.deviceNotAvailable }
        guard let layout = xsaveLayout.withLock({ $0 }) else {
            throw Refusal("this KVM has no XSAVE area (KVM_CAP_XSAVE) to carry MXCSR")
        }
        var area = try ctx.vcpu.xsave(layout)
        if load {
            // The operand is read first: its #PF/#GP come before the reserved-bit #GP.
            let value = UInt32(truncatingIfNeeded: try readOperand(insn, size: 4, ctx))
            let stored = Self.little32(area, at: Self.mxcsrMaskOffset)
            let mask = stored == 0 ? Self.defaultMXCSRMask : stored
            guard value & ~mask == 0 else { throw GuestFault.generalProtection }
            for i in 0 ..< 4 { area[Self.mxcsrOffset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
            // KVM takes the legacy region's MXCSR from the buffer only when XSTATE_BV names
            // x87, SSE or AVX state; SSE (bit 1) it is. Were the XMM registers in their
            // initial state, the buffer holds that state (zeros) for them, so nothing else
            // changes.
            area[Self.xstateBVOffset] |= 1 << 1
            try ctx.vcpu.setXSAVE(area, layout)
        } else {
            let value = Self.little32(area, at: Self.mxcsrOffset)
            try writeOperand(insn, (0 ..< 4).map { UInt8(truncatingIfNeeded: value >> (8 * UInt32($0))) }, ctx)
        }
        ctx.advance(past: insn)
    }

    private static func little32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        (0 ..< 4).reduce(UInt32(0)) { $0 | UInt32(bytes[offset + $1]) << (8 * UInt32($1)) }
    }
}
