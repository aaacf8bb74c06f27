import Boot
import Devices
import GuestMemory
import KVM

extension Machine {
    /// The platform the ACPI tables describe: a local APIC per vCPU, the IOAPIC (with
    /// KVM's PIC and PIT when the irqchip is KVM's), COM1 on IRQ 4, the
    /// `ACPIPowerControl` registers and the virtio-mmio devices.
    var acpiPlatform: ACPITables.Platform {
        var platform = ACPITables.Platform(apicIDs: vcpus.map(\.id), powerPort: ACPIPowerControl.defaultPort,
                                           resetValue: ACPIPowerControl.resetValue, s5SleepType: ACPIPowerControl.s5SleepType)
        platform.devices += virtioACPIDevices
        platform.legacyInterruptControllers = config.irqchip == .kernel
        return platform
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

extension Machine {
    /// The features the template hides that `cpuid` (the boot vCPU's, as KVM kept it)
    /// still shows, logged.
    static func checkTemplate(_ config: MachineConfig, cpuid: [CPUIDEntry]) -> [CPUFeature] {
        let kept = config.cpuTemplate.featuresStillVisible(in: cpuid)
        if !kept.isEmpty {
            let names = kept.map(\.name).joined(separator: " ")
            config.logger.warning("CPU template \(config.cpuTemplate.name): this KVM still shows the guest \(names) (KVM_SET_CPUID2 could not hide them)")
        }
        return kept
    }
}

extension Machine {
    /// The configured command line, plus the Linux parameters the CPU template needs for
    /// features KVM would not hide (e.g. `noxsave`), for a Linux kernel only.
    static func commandLine(_ config: MachineConfig, templateCouldNotHide kept: [CPUFeature]) -> String {
        let extra = config.cpuTemplate.linuxParameters(for: kept)
            .filter { !config.commandLine.split(separator: " ").contains(Substring($0)) }
        guard !extra.isEmpty, BootImageFormat.isLinux(config.kernel) else { return config.commandLine }
        config.logger.warning("CPU template \(config.cpuTemplate.name): added \(extra.joined(separator: " ")) to the Linux command line")
        return ([config.commandLine] + extra).filter { !$0.isEmpty }.joined(separator: " ")
    }
}

extension Machine {
    /// Sets up the interrupt controllers `config` asks for: KVM's irqchip and PIT, or a
    /// split irqchip with the VMM's IOAPIC (returned), or none.
    static func createInterruptControllers(_ config: MachineConfig, vm: KVMVM, topology: CPUTopology) throws -> IOAPIC? {
        guard config.inKernelIRQChip else { return nil }
        switch config.irqchip {
        case .kernel:
            try vm.createIRQChip()
            try vm.createPIT()
            return nil
        case .split:
            try vm.enableSplitIRQChip(ioapicPins: UInt32(IOAPIC.pinCount))
            let apicIDs = (0 ..< config.cpus).map { topology.apicID(ofIndex: $0) }
            return IOAPIC(id: ACPITables.Platform(apicIDs: apicIDs).ioAPICID,
                          sink: KVMInterruptMessages(vm: vm, logger: config.logger))
        }
    }
}
