import CGuestAtomics

/// Atomic read-modify-writes on guest memory: what the VMM needs when it finishes an
/// instruction in the guest's place (`lock cmpxchg16b`) or sets page-table accessed/dirty
/// bits as the CPU would, while the guest's other vCPUs run.
extension GuestMemory {
    /// The outcome of a compare-exchange: whether memory held `expected` (and now holds
    /// the new value), and what it held before.
    public struct Exchange<Value: Sendable & Equatable>: Sendable, Equatable {
        public let exchanged: Bool
        public let previous: Value
        public init(exchanged: Bool, previous: Value) { self.exchanged = exchanged; self.previous = previous }
    }

    /// An atomic 8-byte compare-exchange at `address` (8-byte aligned, writable RAM).
    public func compareExchange(at address: GuestAddress, expected: UInt64, desired: UInt64) throws -> Exchange<UInt64> {
        let pointer = try atomicTarget(address, size: 8)
        var found = expected
        // SAFETY: atomicTarget proved the 8 aligned bytes lie inside a writable segment.
        let exchanged = cga_compare_exchange_64(pointer, &found, desired)
        return Exchange(exchanged: exchanged, previous: found)
    }

    /// A 128-bit value as the guest's `cmpxchg16b` sees it: RDX:RAX / RCX:RBX, low half first.
    public struct Pair: Sendable, Equatable {
        public var low: UInt64
        public var high: UInt64
        public init(low: UInt64, high: UInt64) { self.low = low; self.high = high }
    }

    /// An atomic 16-byte compare-exchange at `address` (16-byte aligned, writable RAM),
    /// performed by the host's own `lock cmpxchg16b`.
    public func compareExchange(at address: GuestAddress, expected: Pair, desired: Pair) throws -> Exchange<Pair> {
        let pointer = try atomicTarget(address, size: 16)
        var low = expected.low, high = expected.high
        // SAFETY: atomicTarget proved the 16 aligned bytes lie inside a writable segment.
        let exchanged = cga_compare_exchange_128(pointer, &low, &high, desired.low, desired.high)
        return Exchange(exchanged: exchanged, previous: Pair(low: low, high: high))
    }

    private func atomicTarget(_ address: GuestAddress, size: UInt64) throws -> UnsafeMutableRawPointer {
        guard address.isAligned(to: size) else { throw GuestMemoryError.misaligned(address: address.raw, alignment: size) }
        let (segment, offset) = try resolve(address, length: size)
        guard !segment.readOnly else { throw GuestMemoryError.readOnly(address: address.raw, segment: segment.name) }
        // Counted as written whether or not the exchange succeeds (a diff snapshot then
        // saves one page too many at worst, never one too few).
        noteWrite(segment, offset, Int(size))
        return segment.host + offset
    }
}
