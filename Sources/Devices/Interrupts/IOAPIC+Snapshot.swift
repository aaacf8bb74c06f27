import Snapshot

/// The split irqchip's IOAPIC in a snapshot: its ID, IOREGSEL, the 24 redirection
/// entries (Remote IRR included) and the input levels the devices drive. The local
/// APICs are each vCPU's own section, as with KVM's irqchip.
extension IOAPIC: SnapshotStateful {
    public var snapshotKind: String { "ioapic" }
    public var snapshotState: (any SnapshotStateful)? { self }
    public var snapshotVersion: UInt16 { 1 }

    public func saveState(into e: inout SnapshotEncoder) throws(SnapshotError) {
        let s = currentState
        e.u8(s.id); e.u8(s.select)
        e.count(s.redirection.count)
        for entry in s.redirection { e.u64(entry) }
        e.u32(s.lines)
    }

    /// Publishes the restored entries as the VM's GSI routes and delivers nothing: an
    /// interrupt in flight is in the local APIC's restored IRR, or waits in Remote IRR.
    public func restoreState(from d: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        let id = try d.u8(), select = try d.u8()
        let count = try d.count(max: Self.pinCount, elementSize: 8, "redirection entries")
        var redirection: [UInt64] = []
        for _ in 0 ..< count { redirection.append(try d.u64()) }
        let lines = try d.u32()
        do {
            try restore(State(id: id, select: select, redirection: redirection, lines: lines))
        } catch {
            throw d.malformed(error.description)
        }
    }
}
