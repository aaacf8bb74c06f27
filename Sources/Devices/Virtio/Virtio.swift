/// Constants of the virtio 1.x specification (OASIS "Virtual I/O Device (VIRTIO)
/// Version 1.2") shared by the transport, the queues and the devices.
public enum Virtio {
    /// Device types (5 "Device Types").
    public enum DeviceType: UInt32, Sendable {
        case network = 1
        case block = 2
        case entropy = 4
        case vsock = 19
    }

    /// Device status bits (2.1 "Device Status Field").
    public enum Status {
        public static let acknowledge: UInt32 = 1
        public static let driver: UInt32 = 2
        public static let driverOK: UInt32 = 4
        public static let featuresOK: UInt32 = 8
        public static let deviceNeedsReset: UInt32 = 64
        public static let failed: UInt32 = 128
    }

    /// Feature bits every device here may offer (6 "Reserved Feature Bits").
    public enum Feature {
        /// VIRTIO_F_INDIRECT_DESC (28): descriptors may point at a table of descriptors.
        public static let indirectDescriptors: UInt64 = 1 << 28
        /// VIRTIO_F_EVENT_IDX (29): used_event / avail_event notification suppression.
        public static let eventIndex: UInt64 = 1 << 29
        /// VIRTIO_F_VERSION_1 (32): a virtio 1.x driver, not a legacy one.
        public static let version1: UInt64 = 1 << 32
    }

    /// Interrupt status bits (4.2.2 "MMIO Device Register Layout", InterruptStatus).
    public enum Interrupt {
        /// The device used a buffer in at least one virtqueue.
        public static let usedBuffer: UInt32 = 1
        /// The configuration changed (or DEVICE_NEEDS_RESET was set).
        public static let configChange: UInt32 = 2
    }
}

/// Why a virtqueue could not be used: the guest broke the split-ring rules, and the
/// device sets DEVICE_NEEDS_RESET rather than guessing what the driver meant.
public enum VirtioError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The available index moved by more than the queue size (2.7.13.3).
    case availableIndexJump(from: UInt16, to: UInt16, size: UInt16)
    /// A chain visited more descriptors than the queue (or indirect table) holds: a loop.
    case chainTooLong(head: UInt16, limit: Int)
    /// A descriptor index at or past the queue size.
    case descriptorIndex(UInt16, size: UInt16)
    /// An indirect table that is empty, not a multiple of 16 bytes, too long, nested,
    /// or marked with NEXT too (2.7.5.3.1).
    case indirectTable(String)
    /// A device-readable descriptor after a device-writable one (2.7.4.2).
    case readableAfterWritable(head: UInt16)
    /// The ring or descriptor table is not in guest RAM.
    case memory(String)

    public var description: String {
        switch self {
        case .availableIndexJump(let from, let to, let size):
            return "available index jumped from \(from) to \(to) (queue size \(size))"
        case .chainTooLong(let head, let limit): return "descriptor chain at \(head) is longer than \(limit) (a loop)"
        case .descriptorIndex(let i, let size): return "descriptor index \(i) out of a queue of \(size)"
        case .indirectTable(let why): return "bad indirect descriptor table: \(why)"
        case .readableAfterWritable(let head): return "chain at \(head) has a readable descriptor after a writable one"
        case .memory(let why): return "queue memory: \(why)"
        }
    }
}
