/// Where a machine's interrupt controllers live (the local APICs are always KVM's).
public enum IRQChipMode: String, Sendable, CaseIterable {
    /// `KVM_CAP_SPLIT_IRQCHIP`: the IOAPIC is the VMM's (`Devices.IOAPIC`), delivering
    /// through `KVM_SIGNAL_MSI` and GSI routes; there is no PIC and no PIT, which a guest
    /// on hardware-reduced ACPI (as the FADT says) does not look for: Linux then takes
    /// its timer from the local APIC and kvmclock. A VM like this closes in well under
    /// a millisecond, and the kernel's IOAPIC/PIC/PIT emulation is not exposed to the guest.
    case split
    /// `KVM_CREATE_IRQCHIP` + `KVM_CREATE_PIT2`: KVM's PIC pair, IOAPIC and i8254, for
    /// guests that need a PIC or PIT (a kernel booted with `acpi=off`, a legacy OS).
    /// Closing such a VM waits for SRCU grace periods (8-24 ms on this project's hosts).
    case kernel
}
