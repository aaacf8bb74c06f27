import KVM
import VMM
import WorkerProtocol

extension HostFacts {
    /// Runs the VMM's probe VMs here (`HostEmulation.probe`, `GuestDebugSupport.probe`)
    /// and asks KVM_GET_SUPPORTED_CPUID, and returns the answers for the workers; nil
    /// when any of them could not finish, so that each worker asks for itself as before.
    static func probe(_ kvm: KVMSystem) -> HostFacts? {
        // Every worker takes this answer: a vmcall counts as hanging only after 200 ms (not
        // the 10 ms a worker's own probe allows), so that a probe thread descheduled while
        // system VMs start does not hide the PV features from every guest.
        let emulation = HostEmulation.probe(kvm, hangTimeoutMS: 200), debug = GuestDebugSupport.probe(kvm)
        guard emulation.probeError == nil, debug.probeError == nil, let cpuid = try? kvm.supportedCPUID() else { return nil }
        return HostFacts(emulation: emulation.bits, debug: debug.bits, supportedCPUID: cpuid.map(\.words))
    }
}
