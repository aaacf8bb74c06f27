import Snapshot

/// The last code written (what a read answers). The write count is a statistic of this
/// run, not state.
extension PostCode: SnapshotStateful {
    public var snapshotKind: String { "post-code" }
    public var snapshotState: (any SnapshotStateful)? { self }
    public var snapshotVersion: UInt16 { 1 }

    public func saveState(into e: inout SnapshotEncoder) throws(SnapshotError) { e.u8(lastCode) }

    public func restoreState(from d: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        last.store(try d.u8(), ordering: .relaxed)
    }
}
