import VMM
import WorkerProtocol

extension HostFacts {
    /// Makes the daemon's answers this process's, so that neither probe runs a VM here.
    func assume() {
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
