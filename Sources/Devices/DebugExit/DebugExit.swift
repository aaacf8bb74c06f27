/// An exit port compatible with QEMU's `isa-debug-exit`: a write of value V asks the VMM
/// to end with exit status `(V << 1) | 1`, so a test guest can report pass or fail.
///
/// One port (default 0xF4), accessed with 1, 2 or 4 bytes. Reads return all ones, as in
/// QEMU. Off unless the user asks for it (`--debug-exit`): a guest must not be able to
/// choose the VMM's exit status by default.
public final class DebugExit: BusDevice {
    public static let defaultPort: UInt16 = 0xF4
    private let events: PlatformEventSink

    public init(events: @escaping PlatformEventSink) { self.events = events }

    /// The process exit status QEMU produces for a written value.
    public static func exitStatus(for value: UInt32) -> Int32 {
        Int32(truncatingIfNeeded: (UInt64(value) << 1) | 1)
    }

    public func read(offset: UInt64, size: Int) -> UInt64 { allOnes(size) }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard offset == 0 else { return }
        events(.debugExit(value: UInt32(truncatingIfNeeded: value)))
    }
}
