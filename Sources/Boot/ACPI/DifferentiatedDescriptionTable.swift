/// A device the DSDT describes: what the guest's ACPI namespace shows under `\_SB`.
/// COM1 is the one every machine has; a virtio-mmio transport is another
/// (`_HID` "LNRO0005", a Memory32Fixed window and an Extended Interrupt).
public struct ACPIDevice: Sendable, Equatable {
    /// `_HID`: a compressed EISA ID such as "PNP0501", or a string such as "LNRO0005".
    public enum HardwareID: Sendable, Equatable { case eisa(String), string(String) }

    public var name: String
    public var hardwareID: HardwareID
    public var uid: UInt64
    public var resources: [ResourceDescriptor]

    public init(name: String, hardwareID: HardwareID, uid: UInt64, resources: [ResourceDescriptor]) {
        self.name = name; self.hardwareID = hardwareID; self.uid = uid; self.resources = resources
    }

    /// The first 16550 UART: ports 0x3F8-0x3FF, ISA IRQ 4 (PNP0501, "16550A-compatible").
    public static func com1(port: UInt16 = 0x3F8, irq: UInt8 = 4) -> ACPIDevice {
        ACPIDevice(name: "COM1", hardwareID: .eisa("PNP0501"), uid: 1,
                   resources: [.ioPort(base: port, length: 8), .irq(irq)])
    }

    /// A virtio-mmio transport (the HID Linux's virtio_mmio driver matches).
    public static func virtioMMIO(index: Int, base: UInt32, length: UInt32 = 0x200, gsi: UInt32) -> ACPIDevice {
        ACPIDevice(name: indexedName("VR", index), hardwareID: .string("LNRO0005"), uid: UInt64(index),
                   resources: [.memory32Fixed(base: base, length: length),
                               .interrupt(gsi: gsi, levelTriggered: false, activeLow: false)])
    }

    /// `Device(NAME) { _HID, _UID, _CRS }`.
    public func aml() throws -> AML {
        let hid: AML
        switch hardwareID {
        case .eisa(let id): hid = try AML.eisaID(id)
        case .string(let id): hid = .string(id)
        }
        return .device(try AMLName(name), [
            .name(try AMLName("_HID"), hid),
            .name(try AMLName("_UID"), .integer(uid)),
            .name(try AMLName("_CRS"), try ResourceDescriptor.template(resources)),
        ])
    }
}

extension ACPIDevice {
    /// `prefix` + two hex digits: a four-character name for the `index`th device of a kind.
    static func indexedName(_ prefix: String, _ index: Int) -> String {
        let hex = String(index & 0xFF, radix: 16, uppercase: true)
        return prefix + (hex.count < 2 ? "0" : "") + hex
    }
}

/// The Differentiated System Description Table, "DSDT" (ACPI 6.5, 5.2.11.1): the AML
/// definition block with the platform's devices under `\_SB` and the `\_S5` sleep
/// package that tells the guest which SLP_TYP powers it off.
public enum DifferentiatedDescriptionTable {
    public static let revision: UInt8 = 2   // 64-bit integers in AML

    public static func table(devices: [ACPIDevice], s5SleepType: UInt8) throws -> SystemDescriptionTable {
        let body: [AML] = [
            .scope(try AMLName("\\_SB"), try devices.map { try $0.aml() }),
            // \_S5: SLP_TYPa, SLP_TYPb, two reserved (7.4.2 "\_Sx (System States)").
            .name(try AMLName("\\_S5"), .package([.integer(UInt64(s5SleepType)), .integer(0), .integer(0), .integer(0)])),
        ]
        return SystemDescriptionTable(signature: "DSDT", revision: Self.revision, body: try body.flatMap { try $0.encoded() })
    }
}
