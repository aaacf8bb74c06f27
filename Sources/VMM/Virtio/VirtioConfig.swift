import Devices

/// A disk of a machine: a virtio-blk device over an open image.
public struct DiskConfig: Sendable {
    /// The image (owns its descriptor).
    public var backend: BlockBackend
    /// VIRTIO_BLK_F_RO: the guest may not change the image.
    public var readOnly: Bool
    /// What GET_ID answers (at most 20 bytes; Linux shows it in /sys/block/vdX/serial).
    public var serial: String
    /// Where the image came from, for listings (`vmmctl run --verbose`).
    public var path: String

    public init(backend: BlockBackend, readOnly: Bool = false, serial: String = "", path: String = "") {
        self.backend = backend; self.readOnly = readOnly; self.serial = serial; self.path = path
    }

    /// The longest serial GET_ID carries.
    public static let maxSerialLength = BlockDevice.serialLength
}

/// The vsock device of a machine: the guest's CID and its host side.
public struct VsockConfig: Sendable {
    /// The guest's context ID (3 ... 0xFFFF_FFFE).
    public var guestCID: UInt64
    /// The listener host processes connect to and how guest connections reach
    /// `PATH_port` (`VsockUnixBackend` for a VMM that may open sockets itself).
    public var backend: any VsockHostBackend
    public var limits: VsockLimits
    /// The listener's path, for listings.
    public var path: String

    public init(guestCID: UInt64, backend: any VsockHostBackend, limits: VsockLimits = VsockLimits(), path: String = "") {
        self.guestCID = guestCID; self.backend = backend; self.limits = limits; self.path = path
    }
}

/// A network device of a machine: a virtio-net device on an open tap.
public struct NetworkConfig: Sendable {
    /// The tap (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR), owned by this value.
    public var tap: TapDevice
    /// The MAC address the guest is given (VIRTIO_NET_F_MAC).
    public var mac: MACAddress

    public init(tap: TapDevice, mac: MACAddress) { self.tap = tap; self.mac = mac }
}

/// How a virtio queue notification reaches its device.
public enum VirtioNotification: String, Sendable, CaseIterable {
    /// KVM_IOEVENTFD on QueueNotify: KVM completes the guest's write in the kernel and
    /// wakes the device's own thread; the device interrupts through an irqfd. The vCPU
    /// never leaves the kernel for a notification (the default).
    case ioeventfd
    /// An MMIO exit to the VMM: the vCPU thread serves the queue itself before it
    /// returns to the guest, and interrupts through KVM_IRQ_LINE.
    case bus
}
