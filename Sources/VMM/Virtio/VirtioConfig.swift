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
