import Boot
import Devices
import GuestMemory

extension Machine {
    /// The platform the ACPI tables describe: a local APIC per vCPU, the IOAPIC, COM1 on
    /// IRQ 4 and the `ACPIPowerControl` registers.
    var acpiPlatform: ACPITables.Platform {
        ACPITables.Platform(apicIDs: vcpus.map(\.id), powerPort: ACPIPowerControl.defaultPort,
                            resetValue: ACPIPowerControl.resetValue, s5SleepType: ACPIPowerControl.s5SleepType)
    }

    /// Writes the ACPI tables and returns the RSDP's address, or nil when the machine has
    /// no ACPI (turned off, or no in-kernel irqchip for the MADT to describe).
    func writeACPITables() throws -> GuestAddress? {
        guard config.acpi, config.inKernelIRQChip else { return nil }
        return try ACPITables(platform: acpiPlatform).write(into: memory)
    }
}
