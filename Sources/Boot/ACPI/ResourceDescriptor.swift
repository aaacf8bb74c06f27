/// Resource data types for `_CRS` buffers (ACPI 6.5, 6.4 "Resource Data Types for
/// ACPI"): what a device decodes (ports, memory) and the interrupts it raises.
public enum ResourceDescriptor: Sendable, Equatable {
    /// I/O Port Descriptor (6.4.2.5), 16-bit decode, a fixed range.
    case ioPort(base: UInt16, length: UInt8)
    /// IRQ Descriptor without flags (6.4.2.1): ISA IRQ, edge, active high.
    case irq(UInt8)
    /// 32-bit Fixed Memory Range Descriptor (6.4.3.4), read/write.
    case memory32Fixed(base: UInt32, length: UInt32)
    /// Extended Interrupt Descriptor (6.4.3.6): one GSI, consumer, exclusive.
    case interrupt(gsi: UInt32, levelTriggered: Bool, activeLow: Bool)

    public func encoded() throws -> [UInt8] {
        switch self {
        case .ioPort(let base, let length):
            let b = AML.littleEndian(UInt64(base), 2)
            return [0x47, 0x01] + b + b + [0x01, length]         // decode16, min, max, align 1, length
        case .irq(let irq):
            guard irq < 16 else { throw ACPIError.invalid("ISA IRQ \(irq) (IRQ descriptors cover 0-15)") }
            return [0x22] + AML.littleEndian(1 << UInt64(irq), 2)
        case .memory32Fixed(let base, let length):
            return [0x86, 9, 0, 0x01] + le32(base) + le32(length)
        case .interrupt(let gsi, let level, let low):
            let flags: UInt8 = 0x01 | (level ? 0 : 0x02) | (low ? 0x04 : 0)  // consumer, edge bit, polarity
            return [0x89, 6, 0, flags, 1] + le32(gsi)
        }
    }

    /// A ResourceTemplate: the descriptors and an End Tag (6.4.2.9), as an AML buffer.
    public static func template(_ descriptors: [ResourceDescriptor]) throws -> AML {
        var bytes = try descriptors.flatMap { try $0.encoded() }
        bytes += [0x79, 0]   // End Tag; checksum 0 means "treat as correct"
        return .buffer(bytes)
    }
}
