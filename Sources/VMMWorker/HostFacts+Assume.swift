import KVM
import VMM
import WorkerProtocol

extension HostFacts {
    /// Makes the daemon's answers this process's, so that neither probe runs a VM here
    /// and KVM_GET_SUPPORTED_CPUID is not asked again.
    func assume(on kvm: KVMSystem) {
        let entries = supportedCPUID.compactMap(CPUIDEntry.init(words:))
        if !entries.isEmpty { kvm.adoptSupportedCPUID(entries) }
        HostEmulation.assume(HostEmulation(bits: emulation))
        GuestDebugSupport.assume(GuestDebugSupport(bits: debug))
    }
}
