import Devices
import Synchronization
import Testing

final class RecordingDevice: BusDevice {
    let log = Mutex<[String]>([])
    let value: UInt64
    init(value: UInt64 = 0x1234_5678) { self.value = value }
    func read(offset: UInt64, size: Int) -> UInt64 {
        log.withLock { $0.append("r \(offset) \(size)") }
        return value
    }
    func write(offset: UInt64, size: Int, value: UInt64) {
        log.withLock { $0.append("w \(offset) \(size) \(value)") }
    }
    var entries: [String] { log.withLock { $0 } }
}

@Suite struct PortIOBusTests {
    @Test func dispatchesWithOffsetsAndMasksToSize() throws {
        let bus = PortIOBus()
        let dev = RecordingDevice()
        try bus.register(dev, base: 0x3F8, length: 8)
        #expect(bus.read(port: 0x3FA, size: 1) == 0x78)
        #expect(bus.read(port: 0x3F8, size: 2) == 0x5678)
        bus.write(port: 0x3FF, size: 1, value: 0x1FF)
        #expect(dev.entries == ["r 2 1", "r 0 2", "w 7 1 255"])
    }

    @Test func unclaimedReadsAreAllOnesAndCounted() {
        let bus = PortIOBus()
        #expect(bus.read(port: 0x1234, size: 1) == 0xFF)
        #expect(bus.read(port: 0xFFFF, size: 2) == 0xFFFF)
        #expect(bus.read(port: 0, size: 4) == 0xFFFF_FFFF)
        bus.write(port: 0x80, size: 1, value: 0)
        #expect(bus.unclaimedReads.load(ordering: .relaxed) == 3)
        #expect(bus.unclaimedWrites.load(ordering: .relaxed) == 1)
    }

    @Test func overlapsAndBadRangesAreRefused() throws {
        let bus = PortIOBus()
        try bus.register(RecordingDevice(), base: 0x60, length: 5)
        #expect(throws: BusError.overlap(base: 0x64, length: 1, existing: 0x60)) {
            try bus.register(RecordingDevice(), base: 0x64, length: 1)
        }
        #expect(throws: BusError.invalidRange(base: 0xFFFF, length: 2)) {
            try bus.register(RecordingDevice(), base: 0xFFFF, length: 2)
        }
        #expect(throws: BusError.invalidRange(base: 0x10, length: 0)) {
            try bus.register(RecordingDevice(), base: 0x10, length: 0)
        }
        try bus.register(RecordingDevice(), base: 0xFFFF, length: 1)  // the very last port is fine
        bus.seal()
        #expect(throws: BusError.sealed) { try bus.register(RecordingDevice(), base: 0x100, length: 1) }
    }
}

@Suite struct MMIOBusTests {
    @Test func binarySearchFindsEachRange() throws {
        let bus = MMIOBus()
        let devices = (0 ..< 20).map { RecordingDevice(value: UInt64($0)) }
        for (i, d) in devices.enumerated().reversed() {
            try bus.register(d, base: 0xD000_0000 + UInt64(i) * 0x1000, length: 0x200)
        }
        for i in 0 ..< 20 {
            #expect(bus.read(address: 0xD000_0000 + UInt64(i) * 0x1000 + 0x1FF, size: 1) == UInt64(i))
            #expect(bus.read(address: 0xD000_0000 + UInt64(i) * 0x1000 + 0x200, size: 4) == 0xFFFF_FFFF)
        }
        #expect(bus.unclaimedReads.load(ordering: .relaxed) == 20)
    }

    @Test func overlapsAndWrapsAreRefused() throws {
        let bus = MMIOBus()
        try bus.register(RecordingDevice(), base: 0x1000, length: 0x1000)
        #expect(throws: BusError.overlap(base: 0x1FFF, length: 2, existing: 0x1000)) {
            try bus.register(RecordingDevice(), base: 0x1FFF, length: 2)
        }
        #expect(throws: BusError.overlap(base: 0, length: 0x1001, existing: 0x1000)) {
            try bus.register(RecordingDevice(), base: 0, length: 0x1001)
        }
        #expect(throws: BusError.invalidRange(base: UInt64.max, length: 2)) {
            try bus.register(RecordingDevice(), base: UInt64.max, length: 2)
        }
        try bus.register(RecordingDevice(), base: UInt64.max, length: 1)
        #expect(bus.read(address: UInt64.max, size: 8) == 0x1234_5678)
    }
}
