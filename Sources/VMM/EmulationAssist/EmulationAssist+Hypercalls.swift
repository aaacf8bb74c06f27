import GuestMemory
import KVM

/// Hypercalls on a host that never returns from them (`HostEmulation.hypercallsHang`):
/// KVM's emulator meets `vmcall` at CPL 0, "fixes" it to the vendor's instruction and
/// re-executes it, forever, without an exit. The VMM does not offer the paravirtual
/// features that would make a guest call one (`CPUIDBuilder.withoutHypercallFeatures`),
/// but some calls come unasked — Linux's kvm_ptp makes KVM_HC_CLOCK_PAIRING as soon as
/// it sees KVM (issue 11 (d)). Such a vCPU makes no exit at all, so the machine's
/// no-progress probe finds it (`VCPURunner.probeHalted`) and the assist finishes the
/// call as KVM answers one it does not implement: RAX = -KVM_ENOSYS.
extension EmulationAssist {
    /// On the vCPU's thread, outside KVM_RUN: if the vCPU sits on a `vmcall`/`vmmcall`,
    /// finishes it and returns true.
    func finishStalledHypercall(on vcpu: KVMVCPU) -> Bool {
        guard host.hypercallsHang, var ctx = try? AssistContext(vcpu: vcpu, memory: memory), ctx.codeSize == .bits64 || ctx.protectedMode else {
            return false
        }
        let rip = ctx.codeSize == .bits64 ? ctx.regs.rip : (ctx.segment(.cs).base &+ ctx.regs.rip) & 0xFFFF_FFFF
        guard let bytes = try? memory.readVirtual(at: rip, count: 3, paging: ctx.paging, access: .debugger(.execute)),
              bytes == [0x0F, 0x01, 0xC1] || bytes == [0x0F, 0x01, 0xD9] else { return false }
        finishHypercall(&ctx, length: 3)
        ctx.commit()
        counters.bump("hypercall_stalled")
        return true
    }
}
