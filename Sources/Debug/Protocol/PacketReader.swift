/// Splits the client's byte stream into what the protocol says it holds: packets,
/// acknowledgements and interrupts. Incremental (feed it whatever `read` returned) and
/// bounded: a packet longer than `maxPayload` is swallowed up to its end and reported as
/// `.tooLong`, so a hostile client cannot make it grow without limit.
public struct PacketReader {
    public enum Item: Equatable, Sendable {
        /// A packet with a good checksum: its data, still escaped.
        case packet([UInt8])
        /// A packet whose checksum did not match (or was not hex).
        case badChecksum
        /// A packet longer than the limit.
        case tooLong
        case ack, nack
        /// 0x03 outside a packet.
        case interrupt
    }

    private enum Phase { case idle, data, checksum1, checksum2 }

    public let maxPayload: Int
    private var phase = Phase.idle
    private var payload: [UInt8] = []
    private var overflowed = false
    private var first: UInt8 = 0

    public init(maxPayload: Int) { self.maxPayload = maxPayload }

    /// Feeds bytes; returns every complete item they finish, in order.
    public mutating func feed<C: Sequence>(_ bytes: C) -> [Item] where C.Element == UInt8 {
        var items: [Item] = []
        for b in bytes {
            switch phase {
            case .idle:
                switch b {
                case PacketCodec.start: startPacket()
                case PacketCodec.ack: items.append(.ack)
                case PacketCodec.nack: items.append(.nack)
                case PacketCodec.interrupt: items.append(.interrupt)
                default: break  // line noise between packets is ignored, as gdbserver does
                }
            case .data:
                if b == PacketCodec.end {
                    phase = .checksum1
                } else if b == PacketCodec.start {
                    startPacket()  // a new packet starts: the unfinished one is dropped
                } else if payload.count < maxPayload {
                    payload.append(b)
                } else {
                    overflowed = true
                }
            case .checksum1:
                first = b
                phase = .checksum2
            case .checksum2:
                phase = .idle
                if overflowed {
                    items.append(.tooLong)
                } else if let high = PacketCodec.nibble(first), let low = PacketCodec.nibble(b),
                          high << 4 | low == PacketCodec.checksum(payload) {
                    items.append(.packet(payload))
                } else {
                    items.append(.badChecksum)
                }
                payload = []
            }
        }
        return items
    }

    private mutating func startPacket() {
        phase = .data
        payload.removeAll(keepingCapacity: true)
        overflowed = false
    }
}
