import Snapshot

/// The guest's CID. Connections are not saved: their host ends are other processes'
/// sockets, which a snapshot cannot carry. The guest keeps them until the snapshot is
/// restored, when the transport-reset event (5.10.6.6) tells it they are gone and that
/// its CID (a clone's own) must be read again.
extension VsockDevice: SnapshotStateful {
    public var snapshotKind: String { "virtio-vsock" }
    public var snapshotState: (any SnapshotStateful)? { self }
    public var snapshotVersion: UInt16 { 1 }

    public func saveState(into e: inout SnapshotEncoder) throws(SnapshotError) { e.u64(guestCID) }

    public func restoreState(from d: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        _ = try d.u64()   // the CID the guest knew; this device's own is the one it reads now
    }

    public func giveBackHeldChains(to transport: VirtioMMIOTransport) {
        state.withLock { m in
            if m.spareChain != nil { transport.giveBack(queue: Self.receiveQueue, count: 1) }
            m.spareChain = nil
        }
    }

    public func restored(transport: VirtioMMIOTransport) { resetTransport() }
}
