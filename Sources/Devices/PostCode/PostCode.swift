import Synchronization

/// The POST-code port (0x80): firmware and kernels write progress codes there, and
/// Linux uses it as an I/O delay. The VMM keeps the last code and a count, which is
/// also the cheapest complete device path, used by the exit benchmark.
public final class PostCode: BusDevice {
    public static let defaultPort: UInt16 = 0x80
    let last = Atomic<UInt8>(0)
    /// Writes seen.
    public let writes = Atomic<UInt64>(0)

    public init() {}

    /// The last code written.
    public var lastCode: UInt8 { last.load(ordering: .relaxed) }

    public func read(offset: UInt64, size: Int) -> UInt64 { UInt64(last.load(ordering: .relaxed)) }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        last.store(UInt8(truncatingIfNeeded: value), ordering: .relaxed)
        writes.add(1, ordering: .relaxed)
    }
}
