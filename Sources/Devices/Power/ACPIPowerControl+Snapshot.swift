import Snapshot

/// SLEEP_STATUS_REG (WAK_STS).
extension ACPIPowerControl: SnapshotStateful {
    public var snapshotKind: String { "acpi-power" }
    public var snapshotState: (any SnapshotStateful)? { self }
    public var snapshotVersion: UInt16 { 1 }

    public func saveState(into e: inout SnapshotEncoder) throws(SnapshotError) { e.u8(wakeStatus.withLock { $0 }) }

    public func restoreState(from d: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        let value = try d.u8()
        wakeStatus.withLock { $0 = value }
    }
}
