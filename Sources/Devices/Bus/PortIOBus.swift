import Synchronization

/// The x86 I/O-port space: 65536 ports, each claimed by at most one device.
///
/// Lookup is two table indexes (port → device: a directory of 256-port blocks, then the
/// block), so the cost of a port-I/O exit in the VMM is two loads and one call. Only the
/// blocks that hold a device exist: a flat 65536-entry table was 128 KiB to zero, 32 page
/// faults and ~0.15 ms of every cold `vmmctl run`. Devices are registered before the
/// vCPUs start; `seal()` then freezes the tables so the exit path reads them without a lock.
public final class PortIOBus: @unchecked Sendable {
    // @unchecked: `directory`, `blocks` and `entries` are mutated only before `seal()` (checked under
    // `lock`), and only read afterwards.
    private struct Entry {
        let device: any BusDevice
        let base: UInt16
        let length: Int
    }

    // Unchecked exclusivity: written only under `lock` before `seal()`, read-only after,
    // so the dynamic access checks would only cost time on every exit.
    /// By `port >> 8`: 0 when no port of the block is claimed, else the block's number + 1.
    @exclusivity(unchecked) private var directory = [UInt16](repeating: 0, count: 256)
    /// Block n's 256 ports at `n << 8 ...`: 0 = unclaimed, else entry index + 1.
    @exclusivity(unchecked) private var blocks: [UInt16] = []
    @exclusivity(unchecked) private var entries: [Entry] = []
    private let lock = Mutex(false)  // true once sealed

    /// Reads no device answered (counted; they return all ones).
    public let unclaimedReads = Atomic<UInt64>(0)
    /// Writes no device answered (counted and dropped).
    public let unclaimedWrites = Atomic<UInt64>(0)

    public init() {}

    /// Claims ports `[base, base + length)` for `device`. Refuses overlaps.
    public func register(_ device: any BusDevice, base: UInt16, length: Int) throws {
        try lock.withLock { sealed in
            guard !sealed else { throw BusError.sealed }
            guard length > 0, Int(base) + length <= 65536 else {
                throw BusError.invalidRange(base: UInt64(base), length: UInt64(length))
            }
            let ports = Int(base) ..< Int(base) + length
            if let taken = ports.first(where: { entryNumber(UInt16($0)) != 0 }) {
                throw BusError.overlap(base: UInt64(base), length: UInt64(length),
                                       existing: UInt64(entries[entryNumber(UInt16(taken)) - 1].base))
            }
            entries.append(Entry(device: device, base: base, length: length))
            for port in ports {
                let block = port >> 8
                if directory[block] == 0 {
                    blocks += repeatElement(0, count: 256)
                    directory[block] = UInt16(blocks.count >> 8)
                }
                blocks[(Int(directory[block]) - 1) << 8 | port & 0xFF] = UInt16(entries.count)
            }
        }
    }

    /// Every registered device with its ports, in registration order (what a snapshot
    /// must save: each of them).
    public var registeredDevices: [(base: UInt16, length: Int, device: any BusDevice)] {
        lock.withLock { _ in entries.map { ($0.base, $0.length, $0.device) } }
    }

    /// Freezes registration; after this the bus may be used from several threads.
    public func seal() { lock.withLock { $0 = true } }

    /// The entry index + 1 of the device claiming `port`, 0 when none does.
    @inline(__always)
    private func entryNumber(_ port: UInt16) -> Int {
        let block = Int(directory[Int(port &>> 8)])
        guard block != 0 else { return 0 }
        return Int(blocks[(block &- 1) &<< 8 | Int(port & 0xFF)])
    }

    /// The device at `port`, with the port's offset from the device's base.
    public func device(at port: UInt16) -> (device: any BusDevice, offset: UInt64)? {
        let index = entryNumber(port)
        guard index != 0 else { return nil }
        let entry = entries[index - 1]
        return (entry.device, UInt64(port &- entry.base))
    }

    /// Dispatches an `in` of `size` bytes. Unclaimed ports read as all ones.
    @inline(__always)
    public func read(port: UInt16, size: Int) -> UInt64 {
        let index = entryNumber(port)
        if index == 0 {
            unclaimedReads.add(1, ordering: .relaxed)
            return allOnes(size)
        }
        let entry = entries[index &- 1]
        return entry.device.read(offset: UInt64(port &- entry.base), size: size) & allOnes(size)
    }

    /// Dispatches an `out`. Unclaimed writes are dropped and counted.
    @inline(__always)
    public func write(port: UInt16, size: Int, value: UInt64) {
        let index = entryNumber(port)
        if index == 0 {
            unclaimedWrites.add(1, ordering: .relaxed)
            return
        }
        let entry = entries[index &- 1]
        entry.device.write(offset: UInt64(port &- entry.base), size: size, value: value & allOnes(size))
    }
}
