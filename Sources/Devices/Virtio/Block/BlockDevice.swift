import GuestMemory
import Synchronization

/// A virtio block device (5.2 "Block Device") over a `BlockBackend`: reads, writes,
/// FLUSH (fdatasync), GET_ID (the serial), DISCARD and WRITE_ZEROES (holes), with
/// VIRTIO_BLK_F_RO refusing every change with VIRTIO_BLK_S_IOERR. One request queue.
public final class BlockDevice: VirtioRequestDevice {
    public let backend: BlockBackend
    public let readOnly: Bool
    /// What GET_ID answers (at most 20 bytes; not NUL-terminated when it is 20).
    public let serial: [UInt8]
    public let statistics = VirtioStatistics()
    /// Requests the backend's io_uring served (in batches of two or more); the rest
    /// were their own pread/pwrite or not a plain read or write.
    public let ringRequests = Atomic<UInt64>(0)

    public static let sectorSize: UInt64 = 512
    public static let queueSize: UInt16 = 256
    public static let serialLength = 20
    /// Segments per DISCARD / WRITE_ZEROES request.
    static let maxZeroSegments: UInt32 = 32

    // Feature bits (5.2.3).
    public static let featureSegMax: UInt64 = 1 << 2
    public static let featureReadOnly: UInt64 = 1 << 5
    public static let featureBlockSize: UInt64 = 1 << 6
    public static let featureFlush: UInt64 = 1 << 9
    public static let featureDiscard: UInt64 = 1 << 13
    public static let featureWriteZeroes: UInt64 = 1 << 14

    // Request types and status values (5.2.6).
    enum RequestType: UInt32 { case read = 0, write = 1, flush = 4, getID = 8, discard = 11, writeZeroes = 13 }
    static let statusOK: UInt8 = 0, statusIOError: UInt8 = 1, statusUnsupported: UInt8 = 2
    static let headerSize: UInt64 = 16
    static let writeZeroesUnmap: UInt32 = 1

    /// A serial longer than 20 bytes is cut to 20 (what GET_ID can carry).
    public init(backend: BlockBackend, readOnly: Bool, serial: String = "") {
        self.backend = backend
        self.readOnly = readOnly
        self.serial = Array(serial.utf8.prefix(Self.serialLength))
    }

    /// The capacity in 512-byte sectors (a partial last sector is not offered).
    public var capacity: UInt64 { backend.size / Self.sectorSize }

    public var deviceType: Virtio.DeviceType { .block }
    public var queueSizes: [UInt16] { [Self.queueSize] }

    public var deviceFeatures: UInt64 {
        var f = Self.featureSegMax | Self.featureBlockSize | Self.featureFlush
        f |= readOnly ? Self.featureReadOnly : Self.featureDiscard | Self.featureWriteZeroes
        return f
    }

    /// struct virtio_blk_config (5.2.4), through write_zeroes_may_unmap: 60 bytes.
    public var configSpace: [UInt8] {
        var c = [UInt8](repeating: 0, count: 60)
        func put(_ v: UInt64, _ at: Int, _ n: Int) { for i in 0 ..< n { c[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) } }
        put(capacity, 0, 8)
        put(UInt64(Self.queueSize - 2), 12, 4)            // seg_max: the header and status take two
        put(Self.sectorSize, 20, 4)                        // blk_size
        put(1, 34, 2)                                      // num_queues
        let maxSectors = UInt64(UInt32.max) >> 9           // keep byte counts inside 32 bits
        put(maxSectors, 36, 4)                             // max_discard_sectors
        put(UInt64(Self.maxZeroSegments), 40, 4)           // max_discard_seg
        put(8, 44, 4)                                      // discard_sector_alignment: 4 KiB
        put(maxSectors, 48, 4)                             // max_write_zeroes_sectors
        put(UInt64(Self.maxZeroSegments), 52, 4)           // max_write_zeroes_seg
        put(1, 56, 1)                                      // write_zeroes_may_unmap
        return c
    }

    public func reset() {}

    public var counters: [(name: String, value: UInt64)] {
        statistics.snapshot + [("ring_requests", ringRequests.load(ordering: .relaxed))]
    }

    /// Called under the lock of the device's one queue: the per-request counters are
    /// changed by one thread at a time (`addSerialized`).
    public func handle(_ chain: DescriptorChain, queue: Int, memory: GuestMemory) -> UInt32 {
        VirtioStatistics.addSerialized(statistics.requests)
        // The status byte is the last byte of the last (writable) buffer.
        guard let last = chain.descriptors.last, last.writable, last.length > 0,
              let statusAddress = last.address.adding(UInt64(last.length) - 1) else {
            VirtioStatistics.add(statistics.errors)
            return 0
        }
        let (status, written) = serve(chain, memory: memory)
        return answer(status, written: written, statusAt: statusAddress, memory: memory)
    }

    /// Writes a request's status byte and returns its used length (the data bytes
    /// written into the chain, plus the status byte); 0 when the status cannot be written.
    func answer(_ status: UInt8, written: UInt64, statusAt statusAddress: GuestAddress, memory: GuestMemory) -> UInt32 {
        if status != Self.statusOK { VirtioStatistics.add(statistics.errors) }
        do {
            try memory.writeInteger(status, at: statusAddress)
        } catch {
            VirtioStatistics.add(statistics.errors)
            return 0
        }
        return UInt32(truncatingIfNeeded: written &+ 1)
    }

    /// The request's status and the data bytes written into the chain.
    private func serve(_ chain: DescriptorChain, memory: GuestMemory) -> (UInt8, UInt64) {
        guard let (rawType, sector) = header(chain, memory: memory) else { return (Self.statusIOError, 0) }
        guard let type = RequestType(rawValue: rawType) else { return (Self.statusUnsupported, 0) }
        switch type {
        case .read:
            guard let ranges = DescriptorChain.ranges(chain.writable, dropLast: 1) else { return (Self.statusIOError, 0) }
            let length = ranges.reduce(0) { $0 + $1.length }
            guard let offset = span(sector, length), let n = try? backend.read(into: ranges, at: offset, memory: memory), n == length else {
                return (Self.statusIOError, 0)
            }
            VirtioStatistics.add(statistics.bytesRead, n)
            return (Self.statusOK, n)
        case .write:
            guard !readOnly, let ranges = DescriptorChain.ranges(chain.readable, dropFirst: Self.headerSize),
                  let offset = span(sector, ranges.reduce(0) { $0 + $1.length }),
                  let n = try? backend.write(from: ranges, at: offset, memory: memory) else { return (Self.statusIOError, 0) }
            VirtioStatistics.add(statistics.bytesWritten, n)
            return (Self.statusOK, 0)
        case .flush:
            VirtioStatistics.add(statistics.flushes)
            guard (try? backend.flush()) != nil else { return (Self.statusIOError, 0) }
            return (Self.statusOK, 0)
        case .getID:
            guard let ranges = DescriptorChain.ranges(chain.writable, dropLast: 1) else { return (Self.statusIOError, 0) }
            let room = Int(min(UInt64(Self.serialLength), ranges.reduce(0) { $0 + $1.length }))
            var id = serial + [UInt8](repeating: 0, count: Self.serialLength - serial.count)
            id = Array(id.prefix(room))
            var done = 0
            for r in ranges where done < id.count {
                let n = min(id.count - done, Int(r.length))
                guard (try? memory.write(Array(id[done ..< done + n]), at: r.start)) != nil else { return (Self.statusIOError, 0) }
                done += n
            }
            return (Self.statusOK, UInt64(done))
        case .discard, .writeZeroes:
            guard !readOnly else { return (Self.statusIOError, 0) }
            return (zero(chain, unmapAlways: type == .discard, memory: memory), 0)
        }
    }

    /// The request header (type u32, reserved u32, sector u64), which the driver may
    /// split across buffers.
    private func header(_ chain: DescriptorChain, memory: GuestMemory) -> (UInt32, UInt64)? {
        if let first = chain.descriptors.first, !first.writable, UInt64(first.length) >= Self.headerSize,
           let (typeAndReserved, sector) = try? memory.readWordPair(at: first.address) {
            return (UInt32(truncatingIfNeeded: typeAndReserved), sector)
        }
        guard let bytes = try? DescriptorChain.gather(Int(Self.headerSize), from: chain.readable, memory: memory) ?? nil else {
            return nil
        }
        func le(_ range: Range<Int>) -> UInt64 { range.reversed().reduce(0) { $0 << 8 | UInt64(bytes[$1]) } }
        return (UInt32(le(0 ..< 4)), le(8 ..< 16))
    }

    /// The byte offset of `sector` when `[sector, sector + length)` is whole sectors
    /// inside the disk; nil otherwise (including arithmetic that would wrap).
    func span(_ sector: UInt64, _ length: UInt64) -> UInt64? {
        guard length % Self.sectorSize == 0, sector <= capacity else { return nil }
        let sectors = length / Self.sectorSize
        guard sectors <= capacity - sector else { return nil }
        return sector * Self.sectorSize
    }

    /// DISCARD and WRITE_ZEROES: segments {sector u64, num_sectors u32, flags u32}.
    private func zero(_ chain: DescriptorChain, unmapAlways: Bool, memory: GuestMemory) -> UInt8 {
        let readable = chain.readable.reduce(UInt64(0)) { $0 + UInt64($1.length) }
        guard readable > Self.headerSize, (readable - Self.headerSize) % 16 == 0 else { return Self.statusIOError }
        let count = (readable - Self.headerSize) / 16
        guard count <= UInt64(Self.maxZeroSegments),
              let bytes = try? DescriptorChain.gather(Int(readable), from: chain.readable, memory: memory) ?? nil else {
            return Self.statusIOError
        }
        func le(_ at: Int, _ n: Int) -> UInt64 { (0 ..< n).reversed().reduce(0) { $0 << 8 | UInt64(bytes[at + $1]) } }
        for i in 0 ..< Int(count) {
            let at = Int(Self.headerSize) + 16 * i
            let sector = le(at, 8), sectors = le(at + 8, 4), flags = UInt32(le(at + 12, 4))
            guard flags & ~Self.writeZeroesUnmap == 0, !(unmapAlways && flags != 0) else { return Self.statusUnsupported }
            guard let offset = span(sector, sectors * Self.sectorSize) else { return Self.statusIOError }
            guard (try? backend.zero(offset: offset, length: sectors * Self.sectorSize,
                                     unmap: unmapAlways || flags & Self.writeZeroesUnmap != 0)) != nil else {
                return Self.statusIOError
            }
        }
        return Self.statusOK
    }
}
