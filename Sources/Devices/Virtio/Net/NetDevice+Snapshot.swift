import Snapshot

/// The link status and the MAC the guest knew. The tap is the host's: the frames in
/// flight in it are not the guest's state (a network may lose them), and the one frame
/// the device had read but not yet placed is dropped at a snapshot (counted).
extension NetDevice: SnapshotStateful {
    public var snapshotKind: String { "virtio-net" }
    public var snapshotState: (any SnapshotStateful)? { self }
    public var snapshotVersion: UInt16 { 1 }

    public func saveState(into e: inout SnapshotEncoder) throws(SnapshotError) {
        e.raw(mac.bytes)
        e.bool(linkUp.load(ordering: .acquiring))
    }

    /// A clone may have another MAC (the transport tells the driver its configuration
    /// changed); the link is as the guest knew it.
    public func restoreState(from d: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        _ = try d.raw(6, "MAC")
        linkUp.store(try d.bool(), ordering: .releasing)
    }

    public func giveBackHeldChains(to transport: VirtioMMIOTransport) {
        state.withLock { s in
            transport.giveBack(queue: Self.receiveQueue, count: s.held.count)
            transport.giveBack(queue: Self.transmitQueue, count: s.waitingTransmit == nil ? 0 : 1)
            if s.frameLength > 0 { VirtioStatistics.add(netStatistics.receiveDropped) }
            s.held = []
            s.heldRoom = 0
            s.waitingTransmit = nil
            s.frameLength = 0
        }
    }
}
