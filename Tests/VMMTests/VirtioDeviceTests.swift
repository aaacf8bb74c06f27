import Devices
import Foundation
import GuestMemory
import Synchronization
import Testing

/// Counts edges on a fake interrupt line.
final class CountingLine: InterruptLine, Sendable {
    let edges = Atomic<Int>(0)
    func set(_ level: Bool) { if level { edges.add(1, ordering: .relaxed) } }
}

/// A driver in Swift for the transport on fake guest memory: the register sequence of
/// virtio 1.2 3.1.1 and a split ring at fixed addresses.
struct TestDriver {
    let transport: VirtioMMIOTransport
    let memory: GuestMemory
    let line = CountingLine()
    static let table: UInt64 = 0x10000, avail: UInt64 = 0x11000, used: UInt64 = 0x12000, data: UInt64 = 0x20000
    var size: UInt16 = 8
    var availIndex: UInt16 = 0

    init(device: any VirtioDevice, memoryMiB: UInt64 = 1) throws {
        memory = try GuestMemory.create(ramSize: memoryMiB << 20)
        let line = self.line
        transport = VirtioMMIOTransport(device: device, memory: memory, interrupt: line)
    }

    func reg(_ offset: UInt64) -> UInt32 { UInt32(transport.read(offset: offset, size: 4)) }
    func set(_ offset: UInt64, _ value: UInt32) { transport.write(offset: offset, size: 4, value: UInt64(value)) }
    var status: UInt32 { reg(0x70) }

    /// Reset, ACKNOWLEDGE, DRIVER, features (`low` word plus VERSION_1 unless `high`
    /// says otherwise), FEATURES_OK. Returns whether FEATURES_OK stuck.
    @discardableResult
    func negotiate(low: UInt32 = 0, high: UInt32 = 1) -> Bool {
        set(0x70, 0); set(0x70, 1); set(0x70, 3)
        set(0x24, 0); set(0x20, low); set(0x24, 1); set(0x20, high)
        set(0x70, 11)
        return status & 8 != 0
    }

    /// Queue 0 at the fixed addresses; returns QueueReady as read back.
    @discardableResult
    func setupQueue(size: UInt32 = 8, table: UInt64 = TestDriver.table, avail: UInt64 = TestDriver.avail, used: UInt64 = TestDriver.used) -> Bool {
        set(0x30, 0); set(0x38, size)
        set(0x80, UInt32(truncatingIfNeeded: table)); set(0x84, UInt32(truncatingIfNeeded: table >> 32))
        set(0x90, UInt32(truncatingIfNeeded: avail)); set(0x94, UInt32(truncatingIfNeeded: avail >> 32))
        set(0xA0, UInt32(truncatingIfNeeded: used)); set(0xA4, UInt32(truncatingIfNeeded: used >> 32))
        set(0x44, 1)
        return reg(0x44) == 1
    }

    func driverOK() { set(0x70, 15) }

    func descriptor(_ i: UInt16, _ address: UInt64, _ length: UInt32, flags: UInt16 = 0, next: UInt16 = 0, table: UInt64 = TestDriver.table) throws {
        let at = table + 16 * UInt64(i)
        try memory.writeInteger(address, at: GuestAddress(at))
        try memory.writeInteger(length, at: GuestAddress(at + 8))
        try memory.writeInteger(flags, at: GuestAddress(at + 12))
        try memory.writeInteger(next, at: GuestAddress(at + 14))
    }

    /// Publishes `head` and notifies through the register (the synchronous path).
    mutating func submit(_ head: UInt16) throws {
        try memory.writeInteger(head, at: GuestAddress(Self.avail + 4 + 2 * UInt64(availIndex % size)))
        availIndex &+= 1
        try memory.writeInteger(availIndex, at: GuestAddress(Self.avail + 2))
        set(0x50, 0)
    }

    var usedIndex: UInt16 { (try? memory.readInteger(UInt16.self, at: GuestAddress(Self.used + 2))) ?? 0 }
    func usedLength(_ slot: UInt16) -> UInt32 { (try? memory.readInteger(UInt32.self, at: GuestAddress(Self.used + 8 + 8 * UInt64(slot)))) ?? 0 }
}

struct VirtioTransportTests {
    @Test func identityAndFeatureNegotiation() throws {
        let d = try TestDriver(device: EntropyDevice())
        #expect(d.reg(0) == 0x7472_6976 && d.reg(4) == 2 && d.reg(8) == 4)
        d.set(0x14, 1)
        #expect(d.reg(0x10) & 1 == 1)                            // VERSION_1
        #expect(!d.negotiate(low: 0, high: 0))                   // no VERSION_1: FEATURES_OK refused
        #expect(!d.negotiate(low: 1 << 3, high: 1))              // a feature not offered
        #expect(d.negotiate(low: 1 << 29 | 1 << 28, high: 1))    // EVENT_IDX + INDIRECT
        d.set(0x70, 1)                                           // clearing bits without a reset
        #expect(d.status == 11)
        d.set(0x70, 0)
        #expect(d.status == 0 && d.transport.state == VirtioTransportState(queues: [VirtQueueState(maxSize: EntropyDevice.queueSize)]))
    }

    @Test func queueConfigurationIsChecked() throws {
        let d = try TestDriver(device: EntropyDevice())
        d.negotiate()
        #expect(!d.setupQueue(size: 0))
        #expect(!d.setupQueue(size: 6))                          // not a power of two
        #expect(!d.setupQueue(size: 128))                        // above QueueNumMax (64)
        #expect(!d.setupQueue(table: 0x10008))                   // misaligned table
        #expect(!d.setupQueue(used: 0xFFFF0))                    // used ring runs past RAM
        #expect(!d.setupQueue(avail: 0xE000_0000))               // in the MMIO hole
        #expect(d.setupQueue())
        d.set(0x38, 4)                                           // a live queue cannot change
        #expect(d.transport.state.queues[0].size == 8)
    }

    @Test func notifyBeforeDriverOKIsIgnored() throws {
        var d = try TestDriver(device: EntropyDevice())
        d.negotiate()
        d.setupQueue()
        try d.descriptor(0, TestDriver.data, 16, flags: 2)
        try d.submit(0)
        #expect(d.usedIndex == 0 && d.transport.device.statistics.ignoredNotifications.load(ordering: .relaxed) == 1)
        d.driverOK()
        d.set(0x50, 0)
        #expect(d.usedIndex == 1 && d.usedLength(0) == 16)
        #expect(d.reg(0x60) == 1 && d.line.edges.load(ordering: .relaxed) == 1)
        d.set(0x64, 1)
        #expect(d.reg(0x60) == 0)
    }

    /// For the entropy device (the transport's own chain walk) and the block device
    /// (which reads Linux's three-descriptor request straight from the table and must
    /// send every other shape to the checked walk).
    @Test(arguments: ["loop", "loop3", "jump", "nested", "order", "indexRange", "indirectLength"], [false, true])
    func brokenQueuesSetNeedsReset(_ kind: String, block: Bool) throws {
        let disk = try ScratchImage(size: 8192)
        var d = try TestDriver(device: block ? BlockDevice(backend: try BlockBackend.open(path: disk.path, readOnly: false, direct: false),
                                                           readOnly: false) : EntropyDevice())
        d.negotiate(low: 1 << 28)
        d.setupQueue()
        d.driverOK()
        switch kind {
        case "loop":
            try d.descriptor(0, TestDriver.data, 16, flags: 3, next: 1)
            try d.descriptor(1, TestDriver.data, 16, flags: 3, next: 0)
            try d.submit(0)
        case "loop3":   // three descriptors, each with NEXT: the third points back at the first
            try d.descriptor(0, TestDriver.data, 16, flags: 1, next: 1)
            try d.descriptor(1, TestDriver.data + 16, 512, flags: 3, next: 2)
            try d.descriptor(2, TestDriver.data + 1024, 1, flags: 3, next: 0)
            try d.submit(0)
        case "jump":
            try d.memory.writeInteger(UInt16(9), at: GuestAddress(TestDriver.avail + 2))   // 9 > size 8
            d.set(0x50, 0)
        case "nested":
            try d.descriptor(0, 0x30000, 16, flags: 4)
            try d.descriptor(0, 0x30000, 16, flags: 4, table: 0x30000)
            try d.submit(0)
        case "order":
            try d.descriptor(0, TestDriver.data, 16, flags: 3, next: 1)
            try d.descriptor(1, TestDriver.data, 16, flags: 0)
            try d.submit(0)
        case "indexRange":
            try d.descriptor(0, TestDriver.data, 16, flags: 3, next: 200)
            try d.submit(0)
        default:
            try d.descriptor(0, 0x30000, 24, flags: 4)
            try d.submit(0)
        }
        #expect(d.status & 64 != 0 && d.usedIndex == 0)
        #expect(d.reg(0x60) & 2 != 0, "a configuration-change interrupt tells the driver")
        // Further notifications are ignored until the driver resets the device.
        d.set(0x50, 0)
        #expect(d.transport.device.statistics.queueErrors.load(ordering: .relaxed) == 1)
        d.set(0x70, 0)
        #expect(d.status == 0 && d.transport.lastQueueError.withLock { $0 } == nil)
    }

    @Test func indirectTableIsFollowed() throws {
        var d = try TestDriver(device: EntropyDevice())
        d.negotiate(low: 1 << 28)
        d.setupQueue()
        d.driverOK()
        try d.descriptor(0, 0x30000, 32, flags: 4)
        try d.descriptor(0, TestDriver.data, 10, flags: 3, next: 1, table: 0x30000)
        try d.descriptor(1, TestDriver.data + 100, 20, flags: 2, table: 0x30000)
        try d.submit(0)
        #expect(d.usedIndex == 1 && d.usedLength(0) == 30 && d.status & 64 == 0)
    }

    @Test func eventIndexSuppressesInterrupts() throws {
        var d = try TestDriver(device: EntropyDevice())
        d.negotiate(low: 1 << 29)
        d.setupQueue()
        d.driverOK()
        try d.descriptor(0, TestDriver.data, 8, flags: 2)
        // used_event = 2: "interrupt me when entry 2 is used", i.e. at the third request.
        try d.memory.writeInteger(UInt16(2), at: GuestAddress(TestDriver.avail + 4 + 2 * 8))
        for _ in 0 ..< 3 { try d.submit(0) }
        #expect(d.usedIndex == 3 && d.line.edges.load(ordering: .relaxed) == 1)
        // The device published avail_event = its next available index.
        #expect(try d.memory.readInteger(UInt16.self, at: GuestAddress(TestDriver.used + 4 + 8 * 8)) == 3)
    }

    @Test func configReadsPastTheEndAreZero() throws {
        let file = try ScratchImage(size: 8192)
        let d = try TestDriver(device: BlockDevice(backend: try BlockBackend.open(path: file.path, readOnly: false, direct: false), readOnly: false))
        #expect(d.transport.read(offset: 0x100, size: 8) == 16)          // capacity in sectors
        #expect(d.transport.read(offset: 0x100 + 58, size: 4) == 0)      // straddles the end
        #expect(d.transport.read(offset: 0xFF8, size: 8) == 0)
        #expect(d.transport.read(offset: 0x70, size: 2) == 0)            // registers are 32-bit only
    }
}

/// virtio-blk requests on a scratch file, through the transport.
struct VirtioBlockTests {
    static let header: UInt64 = 0x20000, buffer: UInt64 = 0x21000, status: UInt64 = 0x23000

    func request(_ d: inout TestDriver, type: UInt32, sector: UInt64, length: UInt32, deviceWrites: Bool,
                 splitHeader: Bool = false) throws -> UInt8 {
        try d.memory.writeInteger(type, at: GuestAddress(Self.header))
        try d.memory.writeInteger(UInt32(0), at: GuestAddress(Self.header + 4))
        try d.memory.writeInteger(sector, at: GuestAddress(Self.header + 8))
        try d.memory.writeInteger(UInt8(0xEE), at: GuestAddress(Self.status))
        var i: UInt16 = 0
        if splitHeader {
            try d.descriptor(i, Self.header, 5, flags: 1, next: i + 1); i += 1
            try d.descriptor(i, Self.header + 5, 11, flags: 1, next: i + 1); i += 1
        } else {
            try d.descriptor(i, Self.header, 16, flags: 1, next: i + 1); i += 1
        }
        if length > 0 {
            try d.descriptor(i, Self.buffer, length, flags: deviceWrites ? 3 : 1, next: i + 1); i += 1
        }
        try d.descriptor(i, Self.status, 1, flags: 2)
        try d.submit(0)
        return try d.memory.readInteger(UInt8.self, at: GuestAddress(Self.status))
    }

    func driver(_ file: ScratchImage, readOnly: Bool = false, serial: String = "") throws -> TestDriver {
        let backend = try BlockBackend.open(path: file.path, readOnly: readOnly, direct: false)
        let d = try TestDriver(device: BlockDevice(backend: backend, readOnly: readOnly, serial: serial))
        #expect(d.negotiate(low: UInt32(truncatingIfNeeded: d.transport.offeredFeatures) & (1 << 13 | 1 << 14 | 1 << 9 | 1 << 5)))
        d.setupQueue()
        d.driverOK()
        return d
    }

    @Test func writeReadFlushAndBounds() throws {
        let file = try ScratchImage(size: 16 << 10)
        var d = try driver(file)
        let pattern = (0 ..< 1024).map { UInt8(truncatingIfNeeded: $0 * 3) }
        try d.memory.write(pattern, at: GuestAddress(Self.buffer))
        #expect(try request(&d, type: 1, sector: 30, length: 1024, deviceWrites: false) == 0)
        #expect(Array(file.bytes[30 * 512 ..< 32 * 512]) == pattern)
        try d.memory.fill(0, at: GuestAddress(Self.buffer), count: 1024)
        #expect(try request(&d, type: 0, sector: 30, length: 1024, deviceWrites: true, splitHeader: true) == 0)
        #expect(try d.memory.read(at: GuestAddress(Self.buffer), count: 1024) == pattern)
        #expect(d.usedLength(1) == 1025)
        #expect(try request(&d, type: 4, sector: 0, length: 0, deviceWrites: false) == 0)
        #expect(try request(&d, type: 0, sector: 31, length: 1024, deviceWrites: true) == 1)     // past the end
        #expect(try request(&d, type: 0, sector: .max, length: 512, deviceWrites: true) == 1)    // sector * 512 wraps
        #expect(try request(&d, type: 0, sector: 0, length: 100, deviceWrites: true) == 1)       // not whole sectors
        #expect(try request(&d, type: 99, sector: 0, length: 512, deviceWrites: true) == 2)
        #expect(d.transport.device.statistics.errors.load(ordering: .relaxed) == 4)
    }

    @Test func discardAndWriteZeroesPunchHoles() throws {
        let file = try ScratchImage(size: 64 << 10, prefix: [UInt8](repeating: 0xAB, count: 64 << 10))
        var d = try driver(file)
        // One segment: sectors 8-15 (4 KiB), then write-zeroes of 16-23 without unmap.
        for (type, sector) in [(UInt32(11), UInt64(8)), (13, 16)] {
            try d.memory.writeInteger(sector, at: GuestAddress(Self.buffer))
            try d.memory.writeInteger(UInt32(8), at: GuestAddress(Self.buffer + 8))
            try d.memory.writeInteger(UInt32(0), at: GuestAddress(Self.buffer + 12))
            #expect(try request(&d, type: type, sector: 0, length: 16, deviceWrites: false) == 0)
        }
        let bytes = file.bytes
        #expect(bytes[4096 ..< 12288].allSatisfy { $0 == 0 })
        #expect(bytes[0 ..< 4096].allSatisfy { $0 == 0xAB } && bytes[12288...].allSatisfy { $0 == 0xAB })
        // A segment past the end, and DISCARD with the unmap flag (only for WRITE_ZEROES).
        try d.memory.writeInteger(UInt64(127), at: GuestAddress(Self.buffer))
        #expect(try request(&d, type: 11, sector: 0, length: 16, deviceWrites: false) == 1)
        try d.memory.writeInteger(UInt64(0), at: GuestAddress(Self.buffer))
        try d.memory.writeInteger(UInt32(1), at: GuestAddress(Self.buffer + 12))
        #expect(try request(&d, type: 11, sector: 0, length: 16, deviceWrites: false) == 2)
    }

    @Test func readOnlyRefusesEveryChange() throws {
        let file = try ScratchImage(size: 8192, prefix: [1, 2, 3])
        var d = try driver(file, readOnly: true)
        #expect(d.transport.offeredFeatures & (1 << 5) != 0 && d.transport.offeredFeatures & (1 << 13) == 0)
        #expect(try request(&d, type: 1, sector: 0, length: 512, deviceWrites: false) == 1)
        #expect(try request(&d, type: 11, sector: 0, length: 16, deviceWrites: false) == 1)
        #expect(try request(&d, type: 0, sector: 0, length: 512, deviceWrites: true) == 0)
        #expect(file.bytes.prefix(3) == [1, 2, 3])
    }

    @Test func getIDIsTheSerial() throws {
        let file = try ScratchImage(size: 8192)
        var d = try driver(file, serial: "0123456789abcdefghijKLMN")
        #expect(try request(&d, type: 8, sector: 0, length: 20, deviceWrites: true) == 0)
        #expect(try d.memory.read(at: GuestAddress(Self.buffer), count: 20) == Array("0123456789abcdefghij".utf8))
        #expect(d.usedLength(0) == 21)
    }

    @Test func bufferOutsideRAMIsAnIOError() throws {
        let file = try ScratchImage(size: 8192)
        var d = try driver(file)
        try d.descriptor(0, Self.header, 16, flags: 1, next: 1)
        try d.descriptor(1, 0xFFFF_F000, 512, flags: 3, next: 2)
        try d.descriptor(2, Self.status, 1, flags: 2)
        try d.submit(0)
        #expect(try d.memory.readInteger(UInt8.self, at: GuestAddress(Self.status)) == 1)
        #expect(d.status & 64 == 0)
    }
}

/// Many requests made available before one notification, as Linux queues them.
struct VirtioBlockBatchTests {
    static let headers: UInt64 = 0x30000, statuses: UInt64 = 0x31000, tables: UInt64 = 0x38000, data: UInt64 = 0x40000
    static func pattern(_ i: Int) -> [UInt8] { (0 ..< 4096).map { UInt8(truncatingIfNeeded: $0 * (i + 3) + i) } }

    /// Request `i` of a batch: header, an optional data buffer, status (in an indirect
    /// table when `indirect`, as Linux sends them); made available, not notified.
    func add(_ d: inout TestDriver, _ i: Int, type: UInt32, sector: UInt64, data: UInt64?, deviceWrites: Bool,
             indirect: Bool = false) throws {
        let header = Self.headers + 16 * UInt64(i), status = Self.statuses + UInt64(i)
        try d.memory.writeInteger(type, at: GuestAddress(header))
        try d.memory.writeInteger(UInt32(0), at: GuestAddress(header + 4))
        try d.memory.writeInteger(sector, at: GuestAddress(header + 8))
        try d.memory.writeInteger(UInt8(0xEE), at: GuestAddress(status))
        let first = UInt16(3 * i)
        let table = indirect ? Self.tables + 48 * UInt64(i) : TestDriver.table
        var next = indirect ? 0 : first
        try d.descriptor(next, header, 16, flags: 1, next: next + 1, table: table); next += 1
        if let data {
            try d.descriptor(next, data, 4096, flags: deviceWrites ? 3 : 1, next: next + 1, table: table); next += 1
        }
        try d.descriptor(next, status, 1, flags: 2, table: table)
        if indirect { try d.descriptor(first, table, UInt32(16 * (next + 1)), flags: 4) }
        try d.memory.writeInteger(first, at: GuestAddress(TestDriver.avail + 4 + 2 * UInt64(d.availIndex % d.size)))
        d.availIndex &+= 1
    }

    func notify(_ d: TestDriver) throws {
        try d.memory.writeInteger(d.availIndex, at: GuestAddress(TestDriver.avail + 2))
        d.set(0x50, 0)
    }

    func statuses(_ d: TestDriver, _ count: Int) throws -> [UInt8] {
        try d.memory.read(at: GuestAddress(Self.statuses), count: count)
    }

    /// On an O_DIRECT disk the plain reads and writes go to the backend's io_uring
    /// together; FLUSH, an unsupported type, a write past the end and a buffer outside
    /// RAM are answered in their place; the guest sees the same statuses, used lengths
    /// and data with the ring as without it, and on a disk without O_DIRECT.
    @Test(arguments: [(true, false, false), (false, false, false), (true, true, false), (true, true, true), (false, false, true)])
    func batchedRequestsAnswerAsOneAtATime(ring: Bool, direct: Bool, indirect: Bool) throws {
        let file = try ScratchImage(size: 256 << 10)
        guard let backend = try? BlockBackend.open(path: file.path, readOnly: false, direct: direct, ring: ring) else {
            try #require(direct, "the scratch image does not open")
            return   // this file system has no O_DIRECT (tmpfs)
        }
        if ring && direct && backend.ring == nil { print("no io_uring here (\(backend.ringUnavailable ?? "?")): the synchronous path only") }
        let device = BlockDevice(backend: backend, readOnly: false)
        var d = try TestDriver(device: device)
        #expect(d.negotiate(low: 1 << 9 | 1 << 28))
        d.size = 64
        d.setupQueue(size: 64)
        d.driverOK()
        for i in 0 ..< 6 {
            try d.memory.write(Self.pattern(i), at: GuestAddress(Self.data + 4096 * UInt64(i)))
            try add(&d, i, type: 1, sector: 16 * UInt64(i), data: Self.data + 4096 * UInt64(i), deviceWrites: false, indirect: indirect)
        }
        try add(&d, 6, type: 4, sector: 0, data: nil, deviceWrites: false, indirect: indirect)                            // FLUSH
        try add(&d, 7, type: 99, sector: 0, data: Self.data, deviceWrites: true, indirect: indirect)                        // unsupported
        try add(&d, 8, type: 1, sector: 511, data: Self.data, deviceWrites: false, indirect: indirect)                      // past the end
        try notify(d)
        #expect(d.usedIndex == 9 && d.line.edges.load(ordering: .relaxed) == 1)
        #expect(try statuses(d, 9) == [0, 0, 0, 0, 0, 0, 0, 2, 1])
        #expect((0 ..< 9).map { d.usedLength($0) } == [UInt32](repeating: 1, count: 9))
        let bytes = file.bytes
        for i in 0 ..< 6 { #expect(Array(bytes[8192 * i ..< 8192 * i + 4096]) == Self.pattern(i), "write \(i)") }

        try d.memory.fill(0, at: GuestAddress(Self.data), count: 6 * 4096)
        for i in 0 ..< 6 {
            try add(&d, i, type: 0, sector: 16 * UInt64(i), data: Self.data + 4096 * UInt64(i), deviceWrites: true, indirect: indirect)
        }
        try add(&d, 6, type: 0, sector: 0, data: 0xFFFF_F000, deviceWrites: true, indirect: indirect)                     // outside RAM
        try notify(d)
        #expect(d.usedIndex == 16)
        #expect(try statuses(d, 7) == [0, 0, 0, 0, 0, 0, 1])
        #expect((9 ..< 16).map { d.usedLength($0) } == [UInt32](repeating: 4097, count: 6) + [1])
        for i in 0 ..< 6 {
            #expect(try d.memory.read(at: GuestAddress(Self.data + 4096 * UInt64(i)), count: 4096) == Self.pattern(i), "read \(i)")
        }
        let counters = Dictionary(uniqueKeysWithValues: device.counters.map { ($0.name, $0.value) })
        #expect(counters["requests"] == 16 && counters["errors"] == 3 && counters["flushes"] == 1)
        #expect(counters["bytes_written"] == 6 * 4096 && counters["bytes_read"] == 6 * 4096)
        #expect(direct == (backend.ring != nil) || backend.ringUnavailable != nil, "only an O_DIRECT disk has a ring")
        #expect(counters["ring_requests"] == (backend.ring == nil ? 0 : 12))
        #expect(d.status & 64 == 0, "no DEVICE_NEEDS_RESET")
    }
}

struct VirtioEntropyTests {
    @Test func oneRequestIsBounded() throws {
        var d = try TestDriver(device: EntropyDevice(), memoryMiB: 2)
        d.negotiate()
        d.setupQueue()
        d.driverOK()
        try d.descriptor(0, 0x100000, 1 << 20, flags: 2)
        try d.submit(0)
        #expect(d.usedLength(0) == UInt32(EntropyDevice.maxBytesPerRequest))
        let bytes = try d.memory.read(at: GuestAddress(0x100000), count: 4096)
        #expect(bytes.filter { $0 != 0 }.count > 3000)
    }
}

struct VirtioDirectIOTests {
    /// An O_DIRECT disk serves a request whose guest buffer is not sector-aligned: where
    /// the kernel refuses it (EINVAL) the backend goes through the page cache for that
    /// request and keeps O_DIRECT for the others. (This host's kernel and file system
    /// accept the unaligned buffer, so here the test shows the result, not the fallback.)
    @Test func unalignedBufferIsServed() throws {
        let file = try ScratchImage(size: 16 << 10, prefix: Array("direct".utf8))
        guard let backend = try? BlockBackend.open(path: file.path, readOnly: false, direct: true) else {
            return   // this file system has no O_DIRECT (tmpfs): nothing to fall back from
        }
        #expect(backend.direct)
        let d = try TestDriver(device: BlockDevice(backend: backend, readOnly: false))
        d.negotiate()
        d.setupQueue()
        d.driverOK()
        var driver = d
        let unaligned: UInt64 = 0x21001
        try driver.memory.writeInteger(UInt32(0), at: GuestAddress(VirtioBlockTests.header))
        try driver.memory.writeInteger(UInt64(0), at: GuestAddress(VirtioBlockTests.header + 8))
        try driver.descriptor(0, VirtioBlockTests.header, 16, flags: 1, next: 1)
        try driver.descriptor(1, unaligned, 512, flags: 3, next: 2)
        try driver.descriptor(2, VirtioBlockTests.status, 1, flags: 2)
        try driver.submit(0)
        #expect(try driver.memory.readInteger(UInt8.self, at: GuestAddress(VirtioBlockTests.status)) == 0)
        #expect(try driver.memory.read(at: GuestAddress(unaligned), count: 6) == Array("direct".utf8))
        #expect(fcntl(backend.fd, F_GETFL) & 0o40000 != 0, "O_DIRECT is back on")
    }
}
