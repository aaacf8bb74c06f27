import Devices
import Synchronization
import Testing

/// Records what an IOAPIC sends.
final class RecordingSink: InterruptMessageSink {
    private let log = Mutex<(messages: [InterruptMessage], routes: [[InterruptMessage?]])>(([], []))
    var messages: [InterruptMessage] { log.withLock { $0.messages } }
    var routes: [[InterruptMessage?]] { log.withLock { $0.routes } }
    func deliver(_ message: InterruptMessage) { log.withLock { $0.messages.append(message) } }
    func routesChanged(_ routes: [InterruptMessage?]) { log.withLock { $0.routes.append(routes) } }
}

/// The 82093AA model on its own: registers, edge and level delivery, Remote IRR and EOI,
/// the routes it publishes for irqfds.
@Suite struct IOAPICTests {
    let sink = RecordingSink()
    let ioapic: IOAPIC

    init() { ioapic = IOAPIC(id: 2, sink: sink) }

    func writeRegister(_ index: UInt8, _ value: UInt32) {
        ioapic.write(offset: 0x00, size: 4, value: UInt64(index))
        ioapic.write(offset: 0x10, size: 4, value: UInt64(value))
    }

    func readRegister(_ index: UInt8) -> UInt32 {
        ioapic.write(offset: 0x00, size: 4, value: UInt64(index))
        return UInt32(truncatingIfNeeded: ioapic.read(offset: 0x10, size: 4))
    }

    /// Programs pin `pin`: `low` is the low half of the entry, the destination APIC ID `dest`.
    func program(_ pin: UInt8, low: UInt32, dest: UInt8 = 0) {
        writeRegister(0x11 + 2 * pin, UInt32(dest) << 24)
        writeRegister(0x10 + 2 * pin, low)
    }

    @Test func identificationRegisters() {
        #expect(readRegister(0x00) == 2 << 24)
        #expect(readRegister(0x01) == 0x0017_0011)   // 24 entries, version 0x11
        #expect(readRegister(0x02) == 2 << 24)
        writeRegister(0x00, 0x0500_0000)
        #expect(readRegister(0x00) == 5 << 24)
        writeRegister(0x01, 0)                       // read-only
        #expect(readRegister(0x01) == 0x0017_0011)
        #expect(readRegister(0x10) == 0x0001_0000)   // masked after reset
        #expect(readRegister(0x40) == 0)             // past the table
    }

    @Test func anEdgePinSendsOncePerRisingEdgeWhileUnmasked() {
        program(4, low: 0x24, dest: 1)               // fixed, physical, edge, active high
        ioapic.setLine(4, true)
        ioapic.setLine(4, true)                      // no new edge
        ioapic.setLine(4, false)
        ioapic.setLine(4, true)
        #expect(sink.messages == Array(repeating: InterruptMessage(address: 0xFEE0_1000, data: 0x24), count: 2))
        program(4, low: 0x1_0024, dest: 1)           // masked: edges are lost
        ioapic.setLine(4, false)
        ioapic.setLine(4, true)
        program(4, low: 0x24, dest: 1)               // unmasking does not replay them
        #expect(sink.messages.count == 2)
    }

    @Test func activeLowInvertsTheLine() {
        program(5, low: 0x2000 | 0x30)               // active low, edge
        ioapic.setLine(5, true)
        #expect(sink.messages.isEmpty)
        ioapic.setLine(5, false)
        #expect(sink.messages.count == 1)
    }

    @Test func aLevelPinWaitsForTheEOIAndSendsAgainWhileStillActive() {
        program(9, low: 0x8000 | 0x41, dest: 3)      // level, active high
        ioapic.setLine(9, true)
        let level = InterruptMessage(address: 0xFEE0_3000, data: 0xC041)
        #expect(sink.messages == [level])
        #expect(readRegister(0x10 + 18) & 0x4000 != 0, "Remote IRR set")
        ioapic.setLine(9, true)
        #expect(sink.messages.count == 1, "no new message before the EOI")
        ioapic.endOfInterrupt(vector: 0x42)          // another vector: nothing
        #expect(sink.messages.count == 1)
        ioapic.endOfInterrupt(vector: 0x41)          // still active: again
        #expect(sink.messages == [level, level])
        ioapic.setLine(9, false)
        ioapic.endOfInterrupt(vector: 0x41)
        #expect(sink.messages.count == 2)
        #expect(readRegister(0x10 + 18) & 0x4000 == 0, "Remote IRR clear after the last EOI")
    }

    @Test func aLevelHeldWhileMaskedGoesOutOnUnmask() {
        program(10, low: 0x1_8000 | 0x50)            // level, masked
        ioapic.setLine(10, true)
        #expect(sink.messages.isEmpty)
        program(10, low: 0x8000 | 0x50)
        #expect(sink.messages.count == 1)
    }

    @Test func switchingToEdgeClearsRemoteIRR() {
        // Linux's EOI for an IOAPIC without an EOI register: mask, set edge, set level again.
        program(9, low: 0x8000 | 0x41)
        ioapic.setLine(9, true)
        program(9, low: 0x1_0000 | 0x41)             // edge, masked
        #expect(readRegister(0x10 + 18) & 0x4000 == 0)
        program(9, low: 0x8000 | 0x41)               // level, unmasked, line still high: again
        #expect(sink.messages.count == 2)
    }

    @Test func readOnlyBitsIgnoreWrites() {
        program(3, low: 0xFFFF_FFFF)
        // Delivery status (12) and Remote IRR (14) are not the guest's to set; bits 17-31 are reserved.
        #expect(readRegister(0x16) == 0x1_AFFF)
    }

    @Test func routesFollowTheUnmaskedEntriesAndChangeOnlyWithThem() {
        program(5, low: 0x35, dest: 1)
        let afterFirst = sink.routes.count
        #expect(sink.routes.last?[5] == InterruptMessage(address: 0xFEE0_1000, data: 0x35))
        #expect(sink.routes.last?.enumerated().allSatisfy { $0.offset == 5 || $0.element == nil } == true)
        program(5, low: 0x35, dest: 1)               // the same entry again
        ioapic.setLine(5, true)                      // deliveries are not route changes
        #expect(sink.routes.count == afterFirst)
        program(5, low: 0x1_0035, dest: 1)           // masked: no route
        #expect(sink.routes.last?[5] == nil)
        ioapic.reset()
        #expect(sink.routes.last?.allSatisfy { $0 == nil } == true)
    }

    @Test func logicalDestinationAndDeliveryModeReachTheMessage() {
        program(6, low: 0x800 | 0x100 | 0x61, dest: 0x0F)   // logical, lowest priority
        ioapic.setLine(6, true)
        #expect(sink.messages == [InterruptMessage(address: 0xFEE0_F004, data: 0x161)])
    }

    @Test func narrowAndStrayAccessesAreHarmless() {
        ioapic.write(offset: 0x00, size: 1, value: 0x10)
        ioapic.write(offset: 0x10, size: 1, value: 0)      // IOWIN takes 32-bit stores only
        #expect(readRegister(0x10) == 0x1_0000)
        ioapic.write(offset: 0x20, size: 4, value: 0xFFFF)
        ioapic.write(offset: 0x00, size: 4, value: 0xFF)   // a register that does not exist
        ioapic.write(offset: 0x10, size: 4, value: 0xFFFF_FFFF)
        #expect(ioapic.read(offset: 0x10, size: 4) == 0)
        ioapic.setLine(24, true)                            // no such pin
        ioapic.setLine(-1, true)
        #expect(sink.messages.isEmpty)
    }

    @Test func stateRoundTripsAndBadStatesAreRefused() throws {
        program(9, low: 0x8000 | 0x41, dest: 1)
        ioapic.setLine(9, true)
        let saved = ioapic.currentState
        let other = IOAPIC(id: 2, sink: RecordingSink())
        try other.restore(saved)
        #expect(other.currentState == saved)
        other.endOfInterrupt(vector: 0x41)           // its Remote IRR came along: the EOI resends
        #expect(other.currentState.redirection[9] & 0x4000 != 0)
        var bad = saved
        bad.redirection.removeLast()
        #expect(throws: IOAPIC.InvalidState.self) { try other.restore(bad) }
        bad = saved
        bad.lines = 1 << 24
        #expect(throws: IOAPIC.InvalidState.self) { try other.restore(bad) }
        bad = saved
        bad.id = 16
        #expect(throws: IOAPIC.InvalidState.self) { try other.restore(bad) }
    }
}
