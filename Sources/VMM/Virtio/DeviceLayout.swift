import Devices
import GuestMemory

/// Where each virtio-mmio device of a machine lives: one 4 KiB window in the MMIO hole
/// and one GSI of the IOAPIC, handed out in device order (disks first, the root disk
/// first of all, so that Linux names it vda; then the entropy device, the network
/// devices and the vsock device). The ACPI DSDT,
/// the `virtio_mmio.device=` parameters and `vmmctl run --verbose` all read this one
/// allocation.
public struct DeviceLayout: Sendable, Equatable {
    /// One device's place.
    public struct Slot: Sendable, Equatable {
        /// The stats and listing name: blk0, blk1, ..., rng0, net0, ..., vsock0.
        public var name: String
        /// "virtio-blk", "virtio-rng", "virtio-net" or "virtio-vsock".
        public var kind: String
        public var base: UInt64
        public var size: UInt64
        public var gsi: UInt32
    }

    public let slots: [Slot]

    /// The first window: the start of the MMIO hole's upper part, clear of the LAPIC,
    /// IOAPIC and the BIOS area the machine uses near 4 GiB.
    public static let firstWindow: UInt64 = 0xD000_0000
    /// GSIs for virtio devices: IOAPIC pins that no platform device uses (0-2 timer and
    /// cascade, 3-4 the COM ports, 8 the RTC's conventional line), ISA numbers first so
    /// that command-line devices work on kernels without ACPI interrupt routing.
    public static let gsis: [UInt32] = [5, 6, 7, 9, 10, 11, 12, 13, 14, 15] + Array(16 ... 23)
    public static var maxDevices: Int { gsis.count }

    /// Lays out `kinds` in order; throws when there are more devices than GSIs.
    public init(kinds: [String]) throws {
        guard kinds.count <= Self.maxDevices else {
            throw MachineError.invalidConfig("\(kinds.count) virtio devices; at most \(Self.maxDevices) fit the IOAPIC's free pins")
        }
        var counts: [String: Int] = [:]
        slots = kinds.enumerated().map { i, kind in
            let short = kind.hasPrefix("virtio-") ? String(kind.dropFirst(7)) : kind
            let n = counts[short, default: 0]
            counts[short] = n + 1
            return Slot(name: "\(short)\(n)", kind: kind, base: Self.firstWindow + UInt64(i) * VirtioMMIOTransport.windowSize,
                        size: VirtioMMIOTransport.windowSize, gsi: Self.gsis[i])
        }
    }

    /// `virtio_mmio.device=<size>@<base>:<irq>` for each device (Linux's
    /// CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES), in device order.
    public var commandLineParameters: [String] {
        slots.map { "virtio_mmio.device=\($0.size >> 10)K@0x\(String($0.base, radix: 16)):\($0.gsi)" }
    }
}
