import Snapshot

/// The UART's registers, its receive queue (what the guest has not read yet, FIFO
/// included) and the level of its interrupt output.
extension Serial16550: SnapshotStateful {
    public var snapshotKind: String { "serial-16550" }
    public var snapshotState: (any SnapshotStateful)? { self }
    public var snapshotVersion: UInt16 { 1 }

    public func saveState(into e: inout SnapshotEncoder) throws(SnapshotError) {
        let s = state.withLock { $0 }
        for b in [s.ier, s.lcr, s.mcr, s.lsrErrors, s.msr, s.scr, s.dll, s.dlm] { e.u8(b) }
        e.bool(s.fifoEnabled); e.bool(s.thrInterruptPending); e.bool(s.lineLevel)
        e.data(s.rx)
    }

    /// The interrupt line is not driven again: the interrupt controllers' own state,
    /// restored beside this, already holds whatever the level had caused (a pending IRR
    /// bit), and a second edge would be an interrupt the guest never had.
    public func restoreState(from d: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        var s = State()
        s.ier = try d.u8(); s.lcr = try d.u8(); s.mcr = try d.u8(); s.lsrErrors = try d.u8()
        s.msr = try d.u8(); s.scr = try d.u8(); s.dll = try d.u8(); s.dlm = try d.u8()
        s.fifoEnabled = try d.bool(); s.thrInterruptPending = try d.bool(); s.lineLevel = try d.bool()
        s.rx = try d.data(maxLength: inputCapacity, "receive queue")
        guard s.ier & ~0x0F == 0, s.mcr & ~0x1F == 0, s.lsrErrors & ~Self.lsrOE == 0 else {
            throw d.malformed("register values IER 0x\(String(s.ier, radix: 16)) MCR 0x\(String(s.mcr, radix: 16)) LSR errors 0x\(String(s.lsrErrors, radix: 16))")
        }
        let restored = s
        state.withLock { $0 = restored }
    }
}
