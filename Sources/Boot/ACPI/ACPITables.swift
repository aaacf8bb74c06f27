import GuestMemory

/// The ACPI tables of a machine, built at boot and placed in the BIOS area
/// (0xE0000-0xFFFFF, reserved in the e820 map) with the RSDP first, 16-byte aligned, so
/// that a guest scanning for "RSD PTR " finds it as well as one told its address
/// (`boot_params.acpi_rsdp_addr`, PVH `rsdp_paddr`).
public struct ACPITables: Sendable {
    /// What the tables describe.
    public struct Platform: Sendable, Equatable {
        /// One local APIC per vCPU, by APIC ID.
        public var apicIDs: [UInt32]
        /// The IOAPIC's ID: the first after the CPUs', as PCs number them.
        public var ioAPICID: UInt8
        public var devices: [ACPIDevice] = [.com1()]
        /// A dual 8259 and an i8254 whose IRQ 0 is on GSI 2, as KVM's in-kernel irqchip
        /// and PIT have them (MADT PCAT_COMPAT and an IRQ 0 override); false for a
        /// platform with only the IOAPIC.
        public var legacyInterruptControllers = true
        /// The power registers (`ACPIPowerControl`): sleep control at `powerPort`,
        /// sleep status at +1, reset at +2.
        public var powerPort: UInt16
        public var resetValue: UInt8
        public var s5SleepType: UInt8

        public init(apicIDs: [UInt32], powerPort: UInt16 = 0x600, resetValue: UInt8 = 1, s5SleepType: UInt8 = 5) {
            self.apicIDs = apicIDs
            self.ioAPICID = UInt8(truncatingIfNeeded: min((apicIDs.max() ?? 0) + 1, 0xFE))
            self.powerPort = powerPort; self.resetValue = resetValue; self.s5SleepType = s5SleepType
        }
    }

    /// Where the RSDP goes: the start of the BIOS read-only area.
    public static let rsdpAddress = GuestAddress(BootLayout.biosAreaStart)
    /// The end of the area the tables may use (the 1 MiB line).
    public static let areaEnd = BootLayout.highMemoryStart

    /// Each table with its guest-physical address, RSDP first.
    public let placed: [(signature: String, address: UInt64, bytes: [UInt8])]

    /// Lays the tables out from `rsdpAddress` up.
    public init(platform: Platform) throws {
        let base = Self.rsdpAddress.raw
        func align(_ v: UInt64) -> UInt64 { (v + 15) & ~15 }
        let dsdt = try DifferentiatedDescriptionTable.table(devices: platform.devices, s5SleepType: platform.s5SleepType).encoded()
        var interruptControllers = InterruptControllerTable(apicIDs: platform.apicIDs, ioAPICID: platform.ioAPICID)
        if !platform.legacyInterruptControllers {
            interruptControllers.hasLegacyPIC = false
            interruptControllers.overrides = []
        }
        let madt = interruptControllers.table().encoded()
        let xsdtAt = align(base + UInt64(RootPointer.size))
        let xsdtSize = UInt64(SystemDescriptionTable.headerSize + 2 * 8)
        let fadtAt = align(xsdtAt + xsdtSize)
        let madtAt = align(fadtAt + UInt64(FixedDescriptionTable.size))
        let dsdtAt = align(madtAt + UInt64(madt.count))
        let end = dsdtAt + UInt64(dsdt.count)
        guard end <= Self.areaEnd else {
            throw ACPIError.doesNotFit("\(end - base) bytes of tables from 0x\(String(base, radix: 16))")
        }
        let fadt = FixedDescriptionTable(
            dsdtAddress: dsdtAt,
            sleepControl: .ioPort(platform.powerPort), sleepStatus: .ioPort(platform.powerPort + 1),
            resetRegister: .ioPort(platform.powerPort + 2), resetValue: platform.resetValue).table().encoded()
        let xsdt = ExtendedSystemDescriptionTable.table(entries: [fadtAt, madtAt]).encoded()
        placed = [
            ("RSDP", base, RootPointer(xsdtAddress: xsdtAt).encoded()),
            ("XSDT", xsdtAt, xsdt), ("FACP", fadtAt, fadt), ("APIC", madtAt, madt), ("DSDT", dsdtAt, dsdt),
        ]
    }

    /// The RSDP's address.
    public var rsdp: GuestAddress { GuestAddress(placed[0].address) }

    /// Copies every table into guest memory; returns the RSDP's address.
    @discardableResult
    public func write(into memory: GuestMemory) throws -> GuestAddress {
        for table in placed {
            try BootError.memory { try memory.load(table.bytes, at: GuestAddress(table.address)) }
        }
        return rsdp
    }
}
