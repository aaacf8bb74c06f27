/// The header of a virtio-vsock packet (5.10.6 "Device Operation", struct
/// virtio_vsock_hdr): 44 little-endian bytes in front of every packet on the rx and tx
/// queues, with the sender's credit (buf_alloc, fwd_cnt) in every one.
public struct VsockHeader: Sendable, Equatable {
    public var sourceCID: UInt64
    public var destinationCID: UInt64
    public var sourcePort: UInt32
    public var destinationPort: UInt32
    /// Payload bytes after the header (RW only).
    public var length: UInt32
    public var type: UInt16
    public var op: UInt16
    public var flags: UInt32
    /// The sender's receive buffer for this connection.
    public var bufferAllocation: UInt32
    /// Bytes the sender has consumed from its receive buffer since the connection began.
    public var forwardCount: UInt32

    public static let size = 44

    /// VIRTIO_VSOCK_TYPE_STREAM.
    public static let typeStream: UInt16 = 1
    /// The host's CID (VMADDR_CID_HOST).
    public static let hostCID: UInt64 = 2

    /// Operations (5.10.6).
    public enum Op: UInt16, Sendable {
        case invalid = 0, request, response, reset, shutdown, readWrite, creditUpdate, creditRequest
    }

    /// SHUTDOWN flags: the sender will receive no more (RCV) or send no more (SEND).
    public enum Shutdown {
        public static let receive: UInt32 = 1
        public static let send: UInt32 = 2
        public static let both: UInt32 = 3
    }

    public init(sourceCID: UInt64, destinationCID: UInt64, sourcePort: UInt32, destinationPort: UInt32,
                length: UInt32 = 0, type: UInt16 = VsockHeader.typeStream, op: Op, flags: UInt32 = 0,
                bufferAllocation: UInt32 = 0, forwardCount: UInt32 = 0) {
        self.sourceCID = sourceCID; self.destinationCID = destinationCID
        self.sourcePort = sourcePort; self.destinationPort = destinationPort
        self.length = length; self.type = type; self.op = op.rawValue; self.flags = flags
        self.bufferAllocation = bufferAllocation; self.forwardCount = forwardCount
    }

    /// Parses the first 44 bytes of `bytes`; nil when there are fewer.
    public init?(bytes: [UInt8]) {
        guard bytes.count >= Self.size else { return nil }
        func le(_ at: Int, _ n: Int) -> UInt64 { (0 ..< n).reversed().reduce(0) { $0 << 8 | UInt64(bytes[at + $1]) } }
        sourceCID = le(0, 8); destinationCID = le(8, 8)
        sourcePort = UInt32(le(16, 4)); destinationPort = UInt32(le(20, 4))
        length = UInt32(le(24, 4)); type = UInt16(le(28, 2)); op = UInt16(le(30, 2))
        flags = UInt32(le(32, 4)); bufferAllocation = UInt32(le(36, 4)); forwardCount = UInt32(le(40, 4))
    }

    /// The 44 wire bytes.
    public var bytes: [UInt8] {
        var b = [UInt8](repeating: 0, count: Self.size)
        func put(_ v: UInt64, _ at: Int, _ n: Int) { for i in 0 ..< n { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
        put(sourceCID, 0, 8); put(destinationCID, 8, 8)
        put(UInt64(sourcePort), 16, 4); put(UInt64(destinationPort), 20, 4)
        put(UInt64(length), 24, 4); put(UInt64(type), 28, 2); put(UInt64(op), 30, 2)
        put(UInt64(flags), 32, 4); put(UInt64(bufferAllocation), 36, 4); put(UInt64(forwardCount), 40, 4)
        return b
    }

    /// The operation, nil for one this spec does not define.
    public var operation: Op? { Op(rawValue: op) }
}

/// struct virtio_vsock_event on the event queue (5.10.6.6): one le32 id.
public enum VsockEvent {
    /// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET: every connection is gone and the guest CID
    /// must be read again (after a snapshot is restored, or the VM migrated).
    public static let transportReset: UInt32 = 0
    public static let size = 4
}
