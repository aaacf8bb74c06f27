import Snapshot

/// No state: a write acts at once. The (empty) section still records that the machine
/// had the port, so a restore onto a machine without it is refused.
extension DebugExit: SnapshotStateful {
    public var snapshotKind: String { "debug-exit" }
    public var snapshotState: (any SnapshotStateful)? { self }
    public var snapshotVersion: UInt16 { 1 }
    public func saveState(into e: inout SnapshotEncoder) throws(SnapshotError) {}
    public func restoreState(from d: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {}
}
