/// The Fixed ACPI Description Table, "FACP" (ACPI 6.5, 5.2.9), for a hardware-reduced
/// platform (4.1): no PM1/GPE blocks and no SCI; power-off and reset go through the
/// sleep control/status registers (4.8.3.7) and the reset register (4.8.3.6), which
/// this VMM's `ACPIPowerControl` device implements at consecutive I/O ports.
public struct FixedDescriptionTable: Sendable, Equatable {
    /// Revision 6, minor version 5: ACPI 6.5's 276-byte layout.
    public static let revision: UInt8 = 6
    public static let minorVersion: UInt8 = 5
    public static let size = 276

    // Flags (Table 5.10).
    public static let flagWBINVD: UInt32 = 1 << 0
    public static let flagPowerButton: UInt32 = 1 << 4      // no fixed power button
    public static let flagSleepButton: UInt32 = 1 << 5      // no fixed sleep button
    public static let flagResetRegister: UInt32 = 1 << 10
    public static let flagHardwareReduced: UInt32 = 1 << 20
    // IA-PC boot architecture flags (Table 5.11).
    public static let bootArch8042: UInt16 = 1 << 1
    public static let bootArchNoVGA: UInt16 = 1 << 2
    public static let bootArchNoMSI: UInt16 = 1 << 3
    public static let bootArchNoCMOSRTC: UInt16 = 1 << 5

    public var dsdtAddress: UInt64
    public var sleepControl: GenericAddress
    public var sleepStatus: GenericAddress
    public var resetRegister: GenericAddress
    public var resetValue: UInt8
    /// Whether an i8042 is present (it is: reboot through 0xFE and Linux's probe).
    public var has8042 = true
    /// "Hypervisor Vendor Identity" (5.2.9): eight bytes naming the VMM.
    public var hypervisorVendor: UInt64 = 0x4D4D_5654_4649_5753  // "SWIFTVMM" little-endian

    public init(dsdtAddress: UInt64, sleepControl: GenericAddress, sleepStatus: GenericAddress,
                resetRegister: GenericAddress, resetValue: UInt8) {
        self.dsdtAddress = dsdtAddress; self.sleepControl = sleepControl; self.sleepStatus = sleepStatus
        self.resetRegister = resetRegister; self.resetValue = resetValue
    }

    public func table() -> SystemDescriptionTable {
        let h = SystemDescriptionTable.headerSize
        var w = ByteWriter(size: Self.size - h)
        func at(_ offset: Int) -> Int { offset - h }   // offsets below are the spec's, from the table start
        w.put(UInt32(truncatingIfNeeded: dsdtAddress), at: at(40))   // DSDT (32-bit copy of X_DSDT)
        var boot: UInt16 = Self.bootArchNoVGA | Self.bootArchNoMSI | Self.bootArchNoCMOSRTC
        if has8042 { boot |= Self.bootArch8042 }
        w.put(boot, at: at(109))                                      // IAPC_BOOT_ARCH
        w.put(Self.flagWBINVD | Self.flagPowerButton | Self.flagSleepButton
              | Self.flagResetRegister | Self.flagHardwareReduced, at: at(112))
        w.put(resetRegister.encoded(), at: at(116))
        w.put(resetValue, at: at(128))
        w.put(Self.minorVersion, at: at(131))
        w.put(dsdtAddress, at: at(140))                               // X_DSDT
        w.put(sleepControl.encoded(), at: at(244))
        w.put(sleepStatus.encoded(), at: at(256))
        w.put(hypervisorVendor, at: at(268))
        return SystemDescriptionTable(signature: "FACP", revision: Self.revision, body: w.bytes)
    }
}
