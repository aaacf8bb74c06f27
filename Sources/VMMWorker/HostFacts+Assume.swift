import KVM
import VMM
import WorkerProtocol

extension HostFacts {
    /// Makes the daemon's answers this process's, so that neither probe runs a VM here
    /// and KVM_GET_SUPPORTED_CPUID is not asked again.
    func assume(on kvm: KVMSystem) {
        let entries = supportedCPUID.filter { $0.count == 7 }.map {
            CPUIDEntry(function: $0[0], index: $0[1], flags: $0[2], eax: $0[3], ebx: $0[4], ecx: $0[5], edx: $0[6])
        }
        if !entries.isEmpty { kvm.adoptSupportedCPUID(entries) }
        HostEmulation.assume(HostEmulation(refusesInstructions: refusesInstructions, syscallBroken: syscallBroken,
                                           hypercallsHang: hypercallsHang))
        var debug = GuestDebugSupport()
        debug.singleStep = singleStep
        debug.singleStepInUserMode = singleStepInUserMode
        debug.executionBreakpoints = executionBreakpoints
        debug.executionBreakpointsInUserMode = executionBreakpointsInUserMode
        debug.dataBreakpoints = dataBreakpoints
        debug.softwareBreakpointExits = softwareBreakpointExits
        GuestDebugSupport.assume(debug)
    }
}
