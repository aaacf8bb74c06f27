import Snapshot

/// The controller's output buffer, command byte and the command waiting for its data.
extension I8042: SnapshotStateful {
    public var snapshotKind: String { "i8042" }
    public var snapshotState: (any SnapshotStateful)? { self }
    public var snapshotVersion: UInt16 { 1 }
    /// More bytes than a guest could leave unread is a damaged section.
    static let maxOutput = 1024

    public func saveState(into e: inout SnapshotEncoder) throws(SnapshotError) {
        let s = state.withLock { $0 }
        e.data(Array(s.output.suffix(Self.maxOutput)))
        e.u8(s.commandByte)
        e.bool(s.pendingCommand != nil); e.u8(s.pendingCommand ?? 0)
        e.bool(s.lastWasCommand)
    }

    public func restoreState(from d: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        var s = State()
        s.output = try d.data(maxLength: Self.maxOutput, "output buffer")
        s.commandByte = try d.u8()
        let pending = try d.bool(), command = try d.u8()
        s.pendingCommand = pending ? command : nil
        s.lastWasCommand = try d.bool()
        let restored = s
        state.withLock { $0 = restored }
    }
}
