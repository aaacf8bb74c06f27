/// An interrupt as a message to the local APICs, in the MSI format (Intel SDM vol. 3,
/// 11.11 "Message Signalled Interrupts"): the address names the destination, the data
/// the vector, delivery mode and trigger mode. An IOAPIC redirection entry says the same
/// things, and with the local APICs in KVM it is delivered as exactly this message.
public struct InterruptMessage: Sendable, Equatable {
    /// 0xFEEx_xxxx: destination ID in bits 12-19, destination mode (1 = logical) in bit 2.
    public var address: UInt32
    /// Vector in bits 0-7, delivery mode in 8-10, level assert in 14, trigger mode
    /// (1 = level) in 15.
    public var data: UInt32

    public init(address: UInt32, data: UInt32) { self.address = address; self.data = data }

    /// The message an IOAPIC redirection table entry (82093AA datasheet 3.2.4) sends.
    init(redirectionEntry e: UInt64) {
        let destination = UInt32(truncatingIfNeeded: e >> 56)
        let logical = (e >> 11) & 1 == 1
        let level = (e >> 15) & 1 == 1
        address = 0xFEE0_0000 | destination << 12 | (logical ? 1 << 2 : 0)
        data = UInt32(truncatingIfNeeded: e & 0xFF) | UInt32(truncatingIfNeeded: (e >> 8) & 7) << 8
            | (level ? 1 << 15 | 1 << 14 : 0)
    }

    public var vector: UInt8 { UInt8(truncatingIfNeeded: data) }
    public var isLevelTriggered: Bool { data & (1 << 15) != 0 }
}

/// Where an `IOAPIC` sends its interrupts: to the local APICs, which are not the
/// VMM's (KVM's with a split irqchip, `KVM_SIGNAL_MSI` and `KVM_SET_GSI_ROUTING`).
public protocol InterruptMessageSink: Sendable {
    /// Delivers one message now.
    func deliver(_ message: InterruptMessage)
    /// The message each pin sends, nil for a masked pin: the routes that interrupts
    /// signalled past the IOAPIC model (irqfds of virtio devices) take, and where the
    /// local APICs learn which level-triggered vectors' EOIs the IOAPIC must hear of.
    /// Called with every change, in order.
    func routesChanged(_ routes: [InterruptMessage?])
}
