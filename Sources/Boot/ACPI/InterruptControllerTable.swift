/// The Multiple APIC Description Table, "APIC" (ACPI 6.5, 5.2.12): one local APIC per
/// vCPU, the I/O APIC, the ISA interrupt source overrides and the LINT1 NMI wiring.
/// Without it (and with no MP table) Linux sees one CPU.
public struct InterruptControllerTable: Sendable, Equatable {
    public static let revision: UInt8 = 5
    public static let localAPICAddress: UInt32 = 0xFEE0_0000
    public static let ioAPICAddress: UInt32 = 0xFEC0_0000
    /// MADT flag PCAT_COMPAT: a dual 8259 is present too (KVM's in-kernel PIC).
    public static let pcatCompatible: UInt32 = 1

    /// An ISA IRQ routed to another GSI or with non-default polarity/trigger (5.2.12.5).
    public struct SourceOverride: Sendable, Equatable {
        public var irq: UInt8
        public var gsi: UInt32
        /// MPS INTI flags: bits 0-1 polarity, 2-3 trigger mode; 0 = bus default.
        public var flags: UInt16 = 0
        public init(irq: UInt8, gsi: UInt32, flags: UInt16 = 0) { self.irq = irq; self.gsi = gsi; self.flags = flags }
    }

    /// The APIC IDs of the processors, in the order their ACPI processor UIDs count up.
    public var apicIDs: [UInt32]
    public var ioAPICID: UInt8
    /// The PIT drives IOAPIC pin 2, not 0: that is where KVM's in-kernel PIT signals IRQ 0.
    public var overrides: [SourceOverride] = [SourceOverride(irq: 0, gsi: 2)]
    /// Sets PCAT_COMPAT: there is a dual 8259 beside the IOAPIC.
    public var hasLegacyPIC = true

    public init(apicIDs: [UInt32], ioAPICID: UInt8) {
        self.apicIDs = apicIDs; self.ioAPICID = ioAPICID
    }

    public func table() -> SystemDescriptionTable {
        var body: [UInt8] = []
        body += le32(Self.localAPICAddress) + le32(hasLegacyPIC ? Self.pcatCompatible : 0)
        for (uid, apicID) in apicIDs.enumerated() {
            // Processor Local APIC (5.2.12.2): type 0, length 8, enabled.
            body += [0, 8, UInt8(truncatingIfNeeded: uid), UInt8(truncatingIfNeeded: apicID)] + le32(1)
        }
        // I/O APIC (5.2.12.3): type 1, length 12, GSI base 0.
        body += [1, 12, ioAPICID, 0] + le32(Self.ioAPICAddress) + le32(0)
        for o in overrides {
            // Interrupt Source Override (5.2.12.5): type 2, length 10, bus 0 (ISA).
            body += [2, 10, 0, o.irq] + le32(o.gsi) + [UInt8(o.flags & 0xFF), UInt8(o.flags >> 8)]
        }
        // Local APIC NMI (5.2.12.7): type 4, length 6, all processors (0xFF), LINT1.
        body += [4, 6, 0xFF, 0, 0, 1]
        return SystemDescriptionTable(signature: "APIC", revision: Self.revision, body: body)
    }
}
