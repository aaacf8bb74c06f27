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
public final class HypercallRegistry: Sendable {
    public struct Entry: Sendable {
        public let name: String
        /// Rings 0 through `maximumRing` may call; 0 means ring 0 only, 3 means anyone.
        public let maximumRing: Int
        let handler: HypercallHandler
    }

    private let entries = Mutex<[UInt64: Entry]>([:])
    private let counts = Mutex<[UInt64: UInt64]>([:])

    public init() {}

    /// Registers `number`. Refuses a number already taken or a ring outside 0-3.
    public func register(_ number: UInt64, name: String, maximumRing: Int = 0,
                         handler: @escaping HypercallHandler) throws {
        guard (0 ... 3).contains(maximumRing) else { throw HypercallRegistryError.invalidRing(maximumRing) }
        try entries.withLock { table in
            guard table[number] == nil else { throw HypercallRegistryError.numberTaken(number) }
            table[number] = Entry(name: name, maximumRing: maximumRing, handler: handler)
        }
    }

    /// The registered calls, by number.
    public var registered: [UInt64: Entry] { entries.withLock { $0 } }

    /// Runs one call: unknown number → #UD; ring not allowed → `notPermitted` and nothing
    /// else happens; otherwise the handler's result or error.
    public func dispatch(_ request: HypercallRequest, memory: GuestMemory) -> HypercallOutcome {
        guard let entry = entries.withLock({ $0[request.number] }) else { return .undefinedOpcode }
        counts.withLock { $0[request.number, default: 0] += 1 }
        guard request.ring <= entry.maximumRing else { return .result(HypercallError.notPermitted.rawValue) }
        do {
            return .result(try entry.handler(HypercallContext(request: request, memory: memory)))
        } catch {
            return .result(error.rawValue)
        }
    }

    /// Calls made so far, per registered call name (including refused ones).
    public var callCounts: [(name: String, count: UInt64)] {
        let table = entries.withLock { $0 }
        let snapshot = counts.withLock { $0 }
        return table.keys.sorted().map { (table[$0]?.name ?? "\($0)", snapshot[$0] ?? 0) }
    }
}

public enum HypercallRegistryError: Error, Equatable {
    case numberTaken(UInt64)
    case invalidRing(Int)
}
