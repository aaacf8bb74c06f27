import GuestMemory
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A virtio network device (5.1 "Network Device") on a tap: the MAC in configuration
/// space, link status, mergeable receive buffers (VIRTIO_NET_F_MRG_RXBUF), and checksum
/// and TSO offloads both ways, carried by the virtio-net header the tap reads and
/// writes in front of every frame (IFF_VNET_HDR).
///
/// Queues: rx (0) and tx (1), served by one thread (`run`) with the tap. A frame the
/// guest queues while the tap takes no more waits on the ring (the chain is not
/// returned) until the tap is writable again; one the tap refuses (malformed, the
/// interface down) is dropped and counted. A frame for the guest that finds no buffers
/// waits in the device (one frame at most; the tap's queue holds the rest).
public final class NetDevice: VirtioEventDevice {
    public let tap: TapDevice
    public let mac: MACAddress
    public let statistics = VirtioStatistics()
    public let netStatistics = NetStatistics()
    private let poll: EventPoll
    let state = Mutex(NetState())
    let linkUp = Atomic<Bool>(true)

    public static let receiveQueue = 0, transmitQueue = 1
    public static let queueSize: UInt16 = 256
    /// struct virtio_net_hdr_v1 (with num_buffers): 12 bytes with VERSION_1.
    public static let headerSize = 12
    /// The largest frame with its header: a 64 KiB TSO frame, Ethernet and VLAN headers.
    public static let maxFrame = headerSize + 65_550

    // Feature bits (5.1.3).
    public static let featureChecksum: UInt64 = 1 << 0, featureGuestChecksum: UInt64 = 1 << 1
    public static let featureMAC: UInt64 = 1 << 5
    public static let featureGuestTSO4: UInt64 = 1 << 7, featureGuestTSO6: UInt64 = 1 << 8, featureGuestECN: UInt64 = 1 << 9
    public static let featureHostTSO4: UInt64 = 1 << 11, featureHostTSO6: UInt64 = 1 << 12, featureHostECN: UInt64 = 1 << 13
    public static let featureMergeableBuffers: UInt64 = 1 << 15
    public static let featureStatus: UInt64 = 1 << 16
    /// VIRTIO_NET_S_LINK_UP.
    static let linkUpStatus: UInt16 = 1

    static let stopToken: UInt64 = 2, tapToken: UInt64 = 3

    public init(tap: TapDevice, mac: MACAddress) throws(DeviceError) {
        self.tap = tap
        self.mac = mac
        do { poll = try EventPoll(capacity: 8) } catch let e as DeviceError { throw e } catch { throw .invalid("\(error)") }
        do { try poll.add(tap.fd, [.readable, .writable, .edgeTriggered], token: Self.tapToken) } catch let e as DeviceError {
            throw e
        } catch { throw .invalid("\(error)") }
    }

    /// Descriptors the device holds for its whole life (a sandbox must keep them).
    public var descriptors: [Int32] { [poll.fd, tap.fd] }

    public var deviceType: Virtio.DeviceType { .network }
    public var queueSizes: [UInt16] { [Self.queueSize, Self.queueSize] }
    public var deviceFeatures: UInt64 {
        Self.featureMAC | Self.featureStatus | Self.featureMergeableBuffers | Self.featureChecksum | Self.featureGuestChecksum
            | Self.featureGuestTSO4 | Self.featureGuestTSO6 | Self.featureGuestECN
            | Self.featureHostTSO4 | Self.featureHostTSO6 | Self.featureHostECN
    }

    /// struct virtio_net_config up to status: mac[6], le16 status.
    public var configSpace: [UInt8] {
        let status = linkUp.load(ordering: .acquiring) ? Self.linkUpStatus : 0
        return mac.bytes + [UInt8(truncatingIfNeeded: status), UInt8(truncatingIfNeeded: status >> 8)]
    }

    public var counters: [(name: String, value: UInt64)] { statistics.snapshot + netStatistics.snapshot }

    /// Sets the link status the guest sees (VIRTIO_NET_S_LINK_UP); `transport` then
    /// tells a live driver with a configuration-change interrupt.
    public func setLink(up: Bool, transport: VirtioMMIOTransport) {
        guard linkUp.exchange(up, ordering: .acquiringAndReleasing) != up else { return }
        VirtioStatistics.add(netStatistics.linkChanges)
        transport.configurationChanged()
    }

    public var isLinkUp: Bool { linkUp.load(ordering: .acquiring) }

    public func reset() {
        state.withLock { $0 = NetState(tapReadable: $0.tapReadable, tapWritable: $0.tapWritable) }
    }

    /// DRIVER_OK: what the guest accepted decides the tap's offloads (what the tap may
    /// hand us: partial checksums, TSO frames) and the receive buffer layout.
    public func activate(features: UInt64) {
        var offload: UInt32 = 0
        if features & Self.featureGuestChecksum != 0 {
            offload |= TapDevice.Offload.checksum
            if features & Self.featureGuestTSO4 != 0 { offload |= TapDevice.Offload.tso4 }
            if features & Self.featureGuestTSO6 != 0 { offload |= TapDevice.Offload.tso6 }
            if features & Self.featureGuestECN != 0, offload & (TapDevice.Offload.tso4 | TapDevice.Offload.tso6) != 0 {
                offload |= TapDevice.Offload.tsoECN
            }
        }
        if (try? tap.setOffload(offload)) == nil { VirtioStatistics.add(statistics.errors) }
        state.withLock { $0.mergeable = features & Self.featureMergeableBuffers != 0 }
    }

    public func run(transport: VirtioMMIOTransport, queueEvents: [Int32], stop: Int32) {
        let served = poll.serveDevice(queueEvents: queueEvents, stop: stop, stopToken: Self.stopToken) { ready in
            state.withLock { s -> Int32 in
                for (token, events) in ready {
                    switch token {
                    case UInt64(Self.receiveQueue): VirtioStatistics.add(statistics.notifications)
                    case UInt64(Self.transmitQueue):
                        VirtioStatistics.add(statistics.notifications)
                        s.txMaybePending = true
                    case Self.tapToken:
                        if events.contains(.readable) { s.tapReadable = true }
                        if events.contains(.writable) {
                            s.tapWritable = true
                            s.txMaybePending = true
                        }
                    default: break
                    }
                }
                transmit(&s, transport)
                receive(&s, transport)
                return -1
            }
        }
        if !served { VirtioStatistics.add(statistics.errors) }
    }

    // MARK: - Guest → tap

    /// Writes the guest's frames to the tap until the ring is empty or the tap is full.
    private func transmit(_ s: inout NetState, _ transport: VirtioMMIOTransport) {
        guard s.txMaybePending, s.tapWritable else { return }
        let served = transport.withQueue(Self.transmitQueue) { q, memory in
            while s.tapWritable, let chain = try s.waitingTransmit ?? q.pop(memory: memory) {
                s.waitingTransmit = nil
                if send(chain, memory: memory, &s) {
                    try q.putUsed(head: chain.head, length: 0, memory: memory)
                } else {
                    s.waitingTransmit = chain   // the tap is full: this frame waits
                    VirtioStatistics.add(netStatistics.transmitWaits)
                }
            }
            s.txMaybePending = !s.tapWritable
        }
        if served == nil { s.txMaybePending = false }
    }

    /// One frame to the tap: true when it is done with (sent, or dropped and counted),
    /// false when the tap is full and it must wait.
    private func send(_ chain: DescriptorChain, memory: GuestMemory, _ s: inout NetState) -> Bool {
        VirtioStatistics.add(statistics.requests)
        guard let ranges = DescriptorChain.ranges(chain.readable) else { return dropTransmit() }
        let total = ranges.reduce(0) { $0 + $1.length }
        guard total > UInt64(Self.headerSize), total <= UInt64(Self.maxFrame) else { return dropTransmit() }
        do {
            _ = try memory.writeVector(tap.fd, from: ranges)
        } catch GuestMemoryError.system(_, let e) where e == EAGAIN {
            s.tapWritable = false
            return false
        } catch {
            return dropTransmit()   // EIO (the interface is down), EINVAL (a header the tap refuses)
        }
        VirtioStatistics.add(netStatistics.transmitFrames)
        VirtioStatistics.add(statistics.bytesWritten, total - UInt64(Self.headerSize))
        return true
    }

    private func dropTransmit() -> Bool {
        VirtioStatistics.add(netStatistics.transmitDropped)
        VirtioStatistics.add(statistics.errors)
        return true
    }

    // MARK: - Tap → guest

    /// Reads frames from the tap into the guest's receive buffers while both have some.
    private func receive(_ s: inout NetState, _ transport: VirtioMMIOTransport) {
        guard s.tapReadable || s.frameLength > 0 else { return }
        transport.withQueue(Self.receiveQueue) { q, memory in
            while true {
                if s.frameLength == 0 {
                    guard s.tapReadable else { return }
                    let n = read(tap.fd, &s.frame, s.frame.count)
                    if n < 0 {
                        if errno == EAGAIN { s.tapReadable = false }
                        if errno == EAGAIN || errno == EINTR { continue }
                        VirtioStatistics.add(statistics.errors)
                        s.tapReadable = false
                        return
                    }
                    guard n > Self.headerSize else {
                        VirtioStatistics.add(netStatistics.receiveDropped)
                        continue
                    }
                    s.frameLength = n
                }
                guard try place(&s, &q, memory) else {
                    VirtioStatistics.add(netStatistics.receiveBufferWaits)
                    return
                }
            }
        }
    }

    /// Puts the frame in `s.frame` into receive buffers: as many chains as it needs with
    /// mergeable buffers (num_buffers says how many), one otherwise. False when the
    /// ring has too few buffers (the frame and the chains taken so far wait).
    private func place(_ s: inout NetState, _ q: inout VirtQueue, _ memory: GuestMemory) throws -> Bool {
        let length = s.frameLength
        while s.heldRoom < length, s.mergeable || s.held.isEmpty {
            guard let chain = try q.pop(memory: memory) else { return false }
            let ranges = DescriptorChain.ranges(chain.writable) ?? []
            s.held.append((chain, ranges))
            s.heldRoom += Int(clamping: ranges.reduce(0) { $0 + $1.length })
        }
        s.frameLength = 0
        guard s.heldRoom >= length, let first = s.held.first, first.ranges.reduce(0, { $0 + $1.length }) >= UInt64(Self.headerSize) else {
            // Buffers the driver made too small for this frame (without mergeable
            // buffers, or a chain shorter than the header): the frame is dropped and the
            // buffers stay for the next one.
            VirtioStatistics.add(netStatistics.receiveDropped)
            return true
        }
        var used: [(DescriptorChain, UInt32)] = []
        var offset = 0
        while offset < length, !s.held.isEmpty {
            let (chain, ranges) = s.held.removeFirst()
            let n = try memory.write(s.frame, offset: offset, count: length - offset, into: ranges)
            s.heldRoom -= Int(clamping: ranges.reduce(0) { $0 + $1.length })
            used.append((chain, UInt32(n)))
            offset += n
        }
        // num_buffers (le16 at offset 10 of the header, in the first buffer).
        let count = UInt16(used.count)
        try memory.write([UInt8(truncatingIfNeeded: count), UInt8(truncatingIfNeeded: count >> 8)], offset: 0, count: 2,
                         into: DescriptorChain.slice(DescriptorChain.ranges(used[0].0.writable) ?? [], from: 10, count: 2))
        // The frame's buffers become visible together (5.1.6.4: num_buffers used
        // elements): a driver reading the first one looks for the rest at once.
        for (chain, n) in used { try q.putUsed(head: chain.head, length: n, memory: memory, publish: false) }
        try q.publishUsed(memory: memory)
        VirtioStatistics.add(netStatistics.receiveFrames)
        VirtioStatistics.add(statistics.bytesRead, UInt64(length - Self.headerSize))
        return true
    }
}

/// What the network device's thread keeps between wake-ups.
struct NetState {
    var tapReadable = false
    var tapWritable = true
    var txMaybePending = false
    var mergeable = false
    /// A guest frame the tap had no room for: it goes first when the tap is writable.
    var waitingTransmit: DescriptorChain?
    /// The frame read from the tap and not yet placed (`frameLength` 0: none).
    var frame = [UInt8](repeating: 0, count: NetDevice.maxFrame)
    var frameLength = 0
    /// Receive chains taken for a frame that needed more than were available.
    var held: [(chain: DescriptorChain, ranges: [GuestRange])] = []
    var heldRoom = 0

    init(tapReadable: Bool = false, tapWritable: Bool = true) {
        self.tapReadable = tapReadable
        self.tapWritable = tapWritable
    }
}

/// What a network device counts beyond `VirtioStatistics`.
public final class NetStatistics: Sendable {
    public let receiveFrames = Atomic<UInt64>(0)
    public let transmitFrames = Atomic<UInt64>(0)
    /// Frames from the tap that did not fit the guest's buffers (or were shorter than a header).
    public let receiveDropped = Atomic<UInt64>(0)
    /// Guest frames the tap refused (malformed, over-long, the interface down).
    public let transmitDropped = Atomic<UInt64>(0)
    /// Times a guest frame waited because the tap was full.
    public let transmitWaits = Atomic<UInt64>(0)
    /// Times a frame for the guest waited for receive buffers.
    public let receiveBufferWaits = Atomic<UInt64>(0)
    public let linkChanges = Atomic<UInt64>(0)

    public init() {}

    public var snapshot: [(name: String, value: UInt64)] {
        [("rx_frames", receiveFrames.load(ordering: .relaxed)),
         ("tx_frames", transmitFrames.load(ordering: .relaxed)),
         ("rx_dropped", receiveDropped.load(ordering: .relaxed)),
         ("tx_dropped", transmitDropped.load(ordering: .relaxed)),
         ("tx_waits", transmitWaits.load(ordering: .relaxed)),
         ("rx_buffer_waits", receiveBufferWaits.load(ordering: .relaxed)),
         ("link_changes", linkChanges.load(ordering: .relaxed))]
    }
}
