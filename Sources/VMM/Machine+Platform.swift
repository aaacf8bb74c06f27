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

extension Machine {
    /// The configured topology, or one socket of `cpus` cores; its count must match `cpus`.
    static func topology(of config: MachineConfig) throws -> CPUTopology {
        guard let topology = config.topology ?? CPUTopology.flat(cpus: config.cpus) else {
            throw MachineError.invalidConfig("\(config.cpus) vCPUs do not fit one socket; give a topology")
        }
        guard topology.cpuCount == config.cpus else {
            throw MachineError.invalidConfig("topology \(topology) has \(topology.cpuCount) CPUs, but cpus is \(config.cpus)")
        }
        return topology
    }
}
