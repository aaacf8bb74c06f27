import GuestMemory
import Synchronization

/// What a handler can touch: the request, and guest memory through checked buffers only.
public struct HypercallContext: Sendable {
    public let request: HypercallRequest
    let memory: GuestMemory

    /// Copies `[address, address + length)` out of guest RAM. The range must lie entirely
    /// inside one RAM segment (GuestMemory's overflow-proof check) and be at most `limit`
    /// bytes; otherwise `.badAddress` / `.invalidArgument`. Host memory outside guest RAM
    /// can never be reached.
    public func read(address: UInt64, length: UInt64, limit: UInt64 = 1 << 16) throws(HypercallError) -> [UInt8] {
        let inRAM: Bool
        do { inRAM = try memory.resolve(GuestAddress(address), length: length).0.kind == .systemRAM } catch { inRAM = false }
        guard inRAM else { throw .badAddress }
        guard length <= limit else { throw .invalidArgument }
        do { return try memory.read(at: GuestAddress(address), count: Int(length)) } catch { throw .badAddress }
    }

    /// Copies `bytes` into guest RAM at `address`; the same checks as `read`.
    public func write(_ bytes: [UInt8], address: UInt64) throws(HypercallError) {
        do {
            let (segment, _) = try memory.resolve(GuestAddress(address), length: UInt64(bytes.count))
            guard segment.kind == .systemRAM else { throw HypercallError.badAddress }
            try memory.write(bytes, at: GuestAddress(address))
        } catch {
            throw .badAddress
        }
    }
}

/// A hypercall handler: returns RAX (≥ 0 by convention) or throws the error to return.
public typealias HypercallHandler = @Sendable (HypercallContext) throws(HypercallError) -> Int64

/// The dispatch table (the `hc_dispatcher` of the bhyve review): call number → handler,
/// the least privileged ring allowed to make the call, and a counter.
///
/// Calls are registered before the vCPUs run; `seal()` (the machine calls it at start)
/// then freezes the table so that dispatch reads it without a lock, as the buses do.
public final class HypercallRegistry: @unchecked Sendable {
    // @unchecked: `low` and `high` are mutated only under `lock` before `sealed` is set,
    // and only read afterwards.

    public final class Entry: Sendable {
        public let name: String
        /// Rings 0 through `maximumRing` may call; 0 means ring 0 only, 3 means anyone.
        public let maximumRing: Int
        let handler: HypercallHandler
        /// Calls made, refused ones included.
        public let calls = Atomic<UInt64>(0)

        init(name: String, maximumRing: Int, handler: @escaping HypercallHandler) {
            self.name = name; self.maximumRing = maximumRing; self.handler = handler
        }
    }

    /// Numbers below this index a plain array; the rest a dictionary.
    static let directSlots = 64
    @exclusivity(unchecked) private var low = [Entry?](repeating: nil, count: directSlots)
    @exclusivity(unchecked) private var high: [UInt64: Entry] = [:]
    private let lock = Mutex(())
    private let sealed = Atomic<Bool>(false)

    public init() {}

    /// Registers `number`. Refuses a number already taken, a ring outside 0-3, or a
    /// registration after `seal()`.
    public func register(_ number: UInt64, name: String, maximumRing: Int = 0,
                         handler: @escaping HypercallHandler) throws {
        guard (0 ... 3).contains(maximumRing) else { throw HypercallRegistryError.invalidRing(maximumRing) }
        try lock.withLock { _ in
            guard !sealed.load(ordering: .acquiring) else { throw HypercallRegistryError.sealed }
            guard lookup(number) == nil else { throw HypercallRegistryError.numberTaken(number) }
            let entry = Entry(name: name, maximumRing: maximumRing, handler: handler)
            if number < UInt64(Self.directSlots) { low[Int(number)] = entry } else { high[number] = entry }
        }
    }

    /// Freezes the table; dispatch is lock-free from then on. Idempotent.
    public func seal() { lock.withLock { _ in sealed.store(true, ordering: .releasing) } }

    @inline(__always)
    private func lookup(_ number: UInt64) -> Entry? {
        number < UInt64(Self.directSlots) ? low[Int(number)] : high[number]
    }

    /// The registered calls, by number.
    public var registered: [UInt64: Entry] {
        lock.withLock { _ in
            var all = high
            for (n, e) in low.enumerated() { if let e { all[UInt64(n)] = e } }
            return all
        }
    }

    /// Runs one call: unknown number → #UD; ring not allowed → `notPermitted` and nothing
    /// else happens; otherwise the handler's result or error.
    @inline(__always)
    public func dispatch(_ request: HypercallRequest, memory: GuestMemory) -> HypercallOutcome {
        let found = sealed.load(ordering: .acquiring) ? lookup(request.number) : lock.withLock { _ in lookup(request.number) }
        guard let entry = found else { return .undefinedOpcode }
        entry.calls.add(1, ordering: .relaxed)
        guard request.ring <= entry.maximumRing else { return .result(HypercallError.notPermitted.rawValue) }
        do {
            return .result(try entry.handler(HypercallContext(request: request, memory: memory)))
        } catch {
            return .result(error.rawValue)
        }
    }

    /// Calls made so far, per registered call name (including refused ones), by number.
    public var callCounts: [(name: String, count: UInt64)] {
        registered.sorted { $0.key < $1.key }.map { ($0.value.name, $0.value.calls.load(ordering: .relaxed)) }
    }
}

public enum HypercallRegistryError: Error, Equatable {
    case numberTaken(UInt64)
    case invalidRing(Int)
    case sealed
}
