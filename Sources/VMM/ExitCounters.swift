import Synchronization

/// Per-vCPU counts of exits by kind: the VMM's own statistics beside KVM's.
///
/// Each counter has one writer (its vCPU thread), so it is bumped with a relaxed load and
/// store rather than a locked read-modify-write: readers on other threads see a value
/// that is at most a few exits old, and the exit path pays no atomic instruction.
public final class ExitCounters: Sendable {
    public enum Kind: Int, CaseIterable, Sendable {
        case io, mmio, halt, shutdown, systemEvent, debug, internalError, failEntry, interrupted, ioapicEOI, other

        public var name: String {
            switch self {
            case .io: return "io"
            case .mmio: return "mmio"
            case .halt: return "halt"
            case .shutdown: return "shutdown"
            case .systemEvent: return "system_event"
            case .debug: return "debug"
            case .internalError: return "internal_error"
            case .failEntry: return "fail_entry"
            case .interrupted: return "interrupted"
            case .ioapicEOI: return "ioapic_eoi"
            case .other: return "other"
            }
        }
    }

    // One stored atomic per kind: Atomic is non-copyable, so it cannot live in an Array.
    private let io = Atomic<UInt64>(0), mmio = Atomic<UInt64>(0), halt = Atomic<UInt64>(0)
    private let shutdown = Atomic<UInt64>(0), systemEvent = Atomic<UInt64>(0), debug = Atomic<UInt64>(0)
    private let internalError = Atomic<UInt64>(0), failEntry = Atomic<UInt64>(0)
    private let interrupted = Atomic<UInt64>(0), ioapicEOI = Atomic<UInt64>(0), other = Atomic<UInt64>(0)

    public init() {}

    @inline(__always)
    private func with<R>(_ kind: Kind, _ body: (borrowing Atomic<UInt64>) -> R) -> R {
        switch kind {
        case .io: return body(io)
        case .mmio: return body(mmio)
        case .halt: return body(halt)
        case .shutdown: return body(shutdown)
        case .systemEvent: return body(systemEvent)
        case .debug: return body(debug)
        case .internalError: return body(internalError)
        case .failEntry: return body(failEntry)
        case .interrupted: return body(interrupted)
        case .ioapicEOI: return body(ioapicEOI)
        case .other: return body(other)
        }
    }

    /// Called only from the owning vCPU thread.
    @inline(__always)
    func bump(_ kind: Kind) {
        with(kind) { $0.store($0.load(ordering: .relaxed) &+ 1, ordering: .relaxed) }
    }

    public func count(_ kind: Kind) -> UInt64 { with(kind) { $0.load(ordering: .relaxed) } }

    /// Every kind with its count.
    public var snapshot: [(kind: Kind, count: UInt64)] { Kind.allCases.map { ($0, count($0)) } }

    /// Total exits.
    public var total: UInt64 { Kind.allCases.reduce(0) { $0 &+ count($1) } }
}
