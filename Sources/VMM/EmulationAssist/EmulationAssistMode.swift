/// `MachineConfig.emulationAssist`, `vmmctl run --emulation-assist`, vmmd's
/// `emulation_assist`.
public enum EmulationAssistMode: String, Sendable, CaseIterable, Codable {
    /// On when `HostEmulation.probe` finds something to finish (this project's PVM hosts),
    /// off on hardware-virtualised KVM.
    case auto
    /// Always on (it is entered only from emulation failures, so it costs nothing where
    /// there are none); the syscall repair and the hypercall measures still follow the probe.
    case on
    /// Never: a refused instruction stops the VM (exit status 8), as KVM reports it.
    case off
}
