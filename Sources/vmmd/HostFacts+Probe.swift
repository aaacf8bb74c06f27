import KVM
import VMM
import WorkerProtocol

extension HostFacts {
    /// Runs the VMM's probe VMs here (`HostEmulation.probe`, `GuestDebugSupport.probe`)
    /// and returns their answers for the workers; nil when either probe could not run to
    /// the end, so that each worker probes for itself as before.
    static func probe(_ kvm: KVMSystem) -> HostFacts? {
        let emulation = HostEmulation.probe(kvm), debug = GuestDebugSupport.probe(kvm)
        guard emulation.probeError == nil, debug.probeError == nil else { return nil }
        var f = HostFacts()
        f.refusesInstructions = emulation.refusesInstructions
        f.syscallBroken = emulation.syscallBroken
        f.hypercallsHang = emulation.hypercallsHang
        f.singleStep = debug.singleStep
        f.singleStepInUserMode = debug.singleStepInUserMode
        f.executionBreakpoints = debug.executionBreakpoints
        f.executionBreakpointsInUserMode = debug.executionBreakpointsInUserMode
        f.dataBreakpoints = debug.dataBreakpoints
        f.softwareBreakpointExits = debug.softwareBreakpointExits
        return f
    }
}
