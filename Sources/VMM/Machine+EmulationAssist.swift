import Boot
import GuestMemory
import KVM

extension Machine {
    /// The emulation assist for `config` on this host, or nil when it is off.
    static func makeEmulationAssist(_ config: MachineConfig, kvm: KVMSystem, memory: GuestMemory) -> EmulationAssist? {
        guard config.emulationAssist != .off else { return nil }
        let host = HostEmulation.probe(kvm)
        guard config.emulationAssist == .on || host.needsAssist else { return nil }
        let assist = EmulationAssist(memory: memory, host: host)
        config.logger.info("emulation assist on: this KVM \(host)")
        return assist
    }

    /// CPUID without the paravirtual features that need `vmcall` when the host never
    /// returns from one (issue 11 (b): PV IPIs hung SMP bring-up).
    static func cpuidForAssist(_ cpuid: [CPUIDEntry], _ assist: EmulationAssist?, _ config: MachineConfig) -> [CPUIDEntry] {
        guard let assist, assist.host.hypercallsHang else { return cpuid }
        let (entries, cleared) = CPUIDBuilder.withoutHypercallFeatures(cpuid)
        if cleared != 0 {
            config.logger.info("emulation assist: KVM paravirtual features 0x\(String(cleared, radix: 16)) (PV unhalt, PV IPI, PV sched yield) hidden: this KVM never returns from vmcall")
        }
        return entries
    }
}
