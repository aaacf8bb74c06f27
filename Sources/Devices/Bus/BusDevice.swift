import Snapshot

/// A device model reachable through a `PortIOBus` or an `MMIOBus`.
///
/// `offset` is relative to the base the device was registered at; `size` is the access
/// width in bytes (1, 2 or 4 for port I/O; 1 to 8 for MMIO). Values are little-endian,
/// zero-extended. Calls arrive on vCPU threads, possibly several at once: a device
/// protects its own state. A device never sees KVM: it sees its bus, guest memory and
/// its interrupt line.
public protocol BusDevice: AnyObject, Sendable {
    /// Handles a guest read; returns the value (only the low `size` bytes are used).
    func read(offset: UInt64, size: Int) -> UInt64
    /// Handles a guest write of the low `size` bytes of `value`.
    func write(offset: UInt64, size: Int, value: UInt64)
    /// The device's snapshot state: `self` for a device that is `SnapshotStateful`, nil
    /// (the default) for one that cannot be saved, which makes every snapshot of its
    /// machine fail naming it. Asked for instead of a dynamic cast, whose first use per
    /// type searches every protocol conformance in the process (a restore counts in
    /// hundreds of microseconds).
    var snapshotState: (any SnapshotStateful)? { get }
}

extension BusDevice {
    public var snapshotState: (any SnapshotStateful)? { nil }
}

/// An interrupt input of the platform's interrupt controller (an IOAPIC pin / GSI).
public protocol InterruptLine: Sendable {
    /// Drives the line to `level` (true = asserted).
    func set(_ level: Bool)
    /// One edge on an edge-triggered input: asserted, then deasserted. A line backed by
    /// an irqfd does both in the kernel from one eventfd write.
    func trigger()
}

extension InterruptLine {
    public func trigger() {
        set(true)
        set(false)
    }
}

/// Machine-level events devices can raise: the guest asking to power off, to reset, or
/// to exit with a status through a debug-exit port.
public enum PlatformEvent: Sendable, Equatable {
    case powerOff
    case reset
    /// A write of `value` to the debug-exit port; the VMM exits with `(value << 1) | 1`.
    case debugExit(value: UInt32)
}

/// Where devices send `PlatformEvent`s (the machine that owns them).
public typealias PlatformEventSink = @Sendable (PlatformEvent) -> Void

/// All ones in the low `size` bytes: what an unclaimed read returns (the value a
/// floating ISA/PCI bus reads as).
@inline(__always)
public func allOnes(_ size: Int) -> UInt64 {
    size >= 8 ? .max : (1 << (UInt64(size) * 8)) - 1
}

/// Errors from building a bus.
public enum BusError: Error, Equatable, CustomStringConvertible {
    case overlap(base: UInt64, length: UInt64, existing: UInt64)
    case invalidRange(base: UInt64, length: UInt64)
    case sealed

    public var description: String {
        switch self {
        case .overlap(let b, let l, let e):
            return "range 0x\(String(b, radix: 16)) length \(l) overlaps the device at 0x\(String(e, radix: 16))"
        case .invalidRange(let b, let l):
            return "invalid bus range 0x\(String(b, radix: 16)) length \(l)"
        case .sealed:
            return "the bus is sealed: devices are registered before vCPUs run"
        }
    }
}
