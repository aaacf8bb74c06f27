import Synchronization

/// Guest-physical MMIO space: ranges claimed by devices, found by binary search.
///
/// As with `PortIOBus`, registration happens before the vCPUs start and `seal()` makes
/// the sorted range list immutable for lock-free lookups.
public final class MMIOBus: @unchecked Sendable {
    // @unchecked: `ranges` is mutated only before `seal()`, read-only afterwards.
    private struct Entry {
        let base: UInt64
        let length: UInt64
        let device: any BusDevice
        var last: UInt64 { base + (length - 1) }
    }

    @exclusivity(unchecked) private var ranges: [Entry] = []  // sorted by base, non-overlapping; see PortIOBus
    private let lock = Mutex(false)

    public let unclaimedReads = Atomic<UInt64>(0)
    public let unclaimedWrites = Atomic<UInt64>(0)

    public init() {}

    /// Claims `[base, base + length)` for `device`. Refuses empty, wrapping or overlapping ranges.
    public func register(_ device: any BusDevice, base: UInt64, length: UInt64) throws {
        try lock.withLock { sealed in
            guard !sealed else { throw BusError.sealed }
            guard length > 0, base.addingReportingOverflow(length - 1).overflow == false else {
                throw BusError.invalidRange(base: base, length: length)
            }
            let new = Entry(base: base, length: length, device: device)
            if let clash = ranges.first(where: { $0.base <= new.last && new.base <= $0.last }) {
                throw BusError.overlap(base: base, length: length, existing: clash.base)
            }
            ranges.append(new)
            ranges.sort { $0.base < $1.base }
        }
    }

    public func seal() { lock.withLock { $0 = true } }

    /// Every registered device with its range, by address (what a snapshot must save:
    /// each of them).
    public var registeredDevices: [(base: UInt64, length: UInt64, device: any BusDevice)] {
        lock.withLock { _ in ranges.map { ($0.base, $0.length, $0.device) } }
    }

    /// The device covering `address` and the offset into it.
    @inline(__always)
    public func device(at address: UInt64) -> (device: any BusDevice, offset: UInt64)? {
        var low = 0, high = ranges.count
        while low < high {
            let mid = (low + high) / 2
            let entry = ranges[mid]
            if address < entry.base {
                high = mid
            } else if address > entry.last {
                low = mid + 1
            } else {
                return (entry.device, address - entry.base)
            }
        }
        return nil
    }

    /// Dispatches a read of `size` bytes. Unclaimed addresses read as all ones.
    public func read(address: UInt64, size: Int) -> UInt64 {
        guard let (device, offset) = device(at: address) else {
            unclaimedReads.add(1, ordering: .relaxed)
            return allOnes(size)
        }
        return device.read(offset: offset, size: size) & allOnes(size)
    }

    /// Dispatches a write. Unclaimed writes are dropped and counted.
    public func write(address: UInt64, size: Int, value: UInt64) {
        guard let (device, offset) = device(at: address) else {
            unclaimedWrites.add(1, ordering: .relaxed)
            return
        }
        device.write(offset: offset, size: size, value: value & allOnes(size))
    }
}
