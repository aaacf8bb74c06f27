import Synchronization

/// The ACPI hardware-reduced power registers (ACPI 6.5, 4.8.3.7 "Sleep Control and
/// Status Registers" and 4.8.3.6 "Reset Register"), at three consecutive ports:
///
/// - offset 0, SLEEP_CONTROL_REG: writing SLP_EN (bit 5) with SLP_TYP (bits 2-4) = 5
///   enters S5, soft-off: the machine powers off;
/// - offset 1, SLEEP_STATUS_REG: WAK_STS (bit 7), write 1 to clear;
/// - offset 2, RESET_REG: writing `resetValue` resets the machine.
///
/// The FADT points its SLEEP_CONTROL_REG, SLEEP_STATUS_REG and RESET_REG here, and the
/// DSDT's \_S5 package gives SLP_TYP 5. Tiny guests use it directly to power off.
public final class ACPIPowerControl: BusDevice {
    public static let defaultPort: UInt16 = 0x600
    public static let portCount = 3
    /// SLP_TYP the DSDT's \_S5 object announces.
    public static let s5SleepType: UInt8 = 5
    static let sleepEnable: UInt8 = 1 << 5
    /// The FADT's RESET_VALUE.
    public static let resetValue: UInt8 = 0x01

    private let events: PlatformEventSink
    let wakeStatus = Mutex<UInt8>(0)

    public init(events: @escaping PlatformEventSink) { self.events = events }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        offset == 1 ? UInt64(wakeStatus.withLock { $0 }) : 0
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        let byte = UInt8(truncatingIfNeeded: value)
        switch offset {
        case 0:
            guard byte & Self.sleepEnable != 0 else { return }
            // Only S5 is implemented; other sleep states are refused by doing nothing,
            // which the guest sees as an immediate wake.
            if (byte >> 2) & 0x7 == Self.s5SleepType { events(.powerOff) }
        case 1:
            wakeStatus.withLock { $0 &= ~byte }
        case 2:
            if byte == Self.resetValue { events(.reset) }
        default:
            break
        }
    }
}
