/// A component with state — a vCPU, an interrupt controller, a device — that saves it
/// into a section of its own and restores it from one. Every component a machine has
/// must conform (or the snapshot fails naming it), so a new device cannot be forgotten
/// silently: the machine collects its sections from what it actually has (the buses'
/// devices, its vCPUs, its interrupt controllers), not from a list kept by hand.
public protocol SnapshotStateful: AnyObject {
    /// The kind of component, used in its section name: "serial-16550", "i8042", ...
    var snapshotKind: String { get }
    /// The section version `saveState` writes.
    var snapshotVersion: UInt16 { get }
    /// The section versions `restoreState` reads.
    var snapshotVersionsRead: [UInt16] { get }
    /// Writes the component's state. Called with the machine paused.
    func saveState(into encoder: inout SnapshotEncoder) throws(SnapshotError)
    /// Reads what `saveState` wrote (of `version`) and becomes that state, checking every
    /// value; called once, on a machine built but not yet run.
    func restoreState(from decoder: inout SnapshotDecoder, version: UInt16) throws(SnapshotError)
}

extension SnapshotStateful {
    public var snapshotVersionsRead: [UInt16] { [snapshotVersion] }

    /// This component's state as a section named `name`.
    public func snapshotSection(named name: String) throws(SnapshotError) -> SnapshotSection {
        var e = SnapshotEncoder()
        try saveState(into: &e)
        return SnapshotSection(name: name, version: snapshotVersion, payload: e.bytes)
    }

    /// Restores from `section`: its version must be one this component reads, and every
    /// byte of it must be consumed.
    public func restore(from section: SnapshotSection) throws(SnapshotError) {
        var d = try section.decoder(supporting: snapshotVersionsRead)
        try restoreState(from: &d, version: section.version)
        try d.finish()
    }
}
