import Devices
import Synchronization
import Testing

final class RecordingLine: InterruptLine {
    let levels = Mutex<[Bool]>([])
    func set(_ level: Bool) { levels.withLock { $0.append(level) } }
    var history: [Bool] { levels.withLock { $0 } }
    var level: Bool { history.last ?? false }
}

final class EventLog: @unchecked Sendable {
    let events = Mutex<[PlatformEvent]>([])
    var sink: PlatformEventSink { { [self] e in events.withLock { $0.append(e) } } }
    var all: [PlatformEvent] { events.withLock { $0 } }
}

@Suite struct Serial16550Tests {
    @Test func transmitsToOutput() {
        let out = BufferOutput()
        let uart = Serial16550(output: out)
        for b in "hi\n".utf8 { uart.write(offset: 0, size: 1, value: UInt64(b)) }
        #expect(out.text == "hi\n")
        #expect(uart.read(offset: 5, size: 1) & 0x60 == 0x60)  // THRE | TEMT
    }

    @Test func divisorLatchHidesDataRegisters() {
        let out = BufferOutput()
        let uart = Serial16550(output: out)
        uart.write(offset: 3, size: 1, value: 0x83)  // DLAB
        uart.write(offset: 0, size: 1, value: 0x01)  // DLL, not a character
        uart.write(offset: 1, size: 1, value: 0x00)  // DLM
        #expect(uart.read(offset: 0, size: 1) == 0x01)
        uart.write(offset: 3, size: 1, value: 0x03)
        #expect(out.bytes.isEmpty)
        #expect(uart.read(offset: 3, size: 1) == 0x03)
    }

    @Test func receiveRaisesAndLowersTheInterrupt() {
        let line = RecordingLine()
        let uart = Serial16550(output: NullOutput(), irq: line)
        uart.write(offset: 1, size: 1, value: 0x01)  // IER: received data available
        #expect(!line.level)
        uart.enqueueInput([0x41, 0x42])
        #expect(line.level)
        #expect(uart.read(offset: 2, size: 1) & 0x0F == 0x04)  // IIR: RDA
        #expect(uart.read(offset: 5, size: 1) & 0x01 == 0x01)  // LSR: DR
        #expect(uart.read(offset: 0, size: 1) == 0x41)
        #expect(uart.read(offset: 0, size: 1) == 0x42)
        #expect(!line.level)
        #expect(uart.read(offset: 2, size: 1) & 0x0F == 0x01)  // no interrupt pending
    }

    @Test func transmitterEmptyInterruptRearmsAfterEachWrite() {
        let line = RecordingLine()
        let uart = Serial16550(output: NullOutput(), irq: line)
        uart.write(offset: 1, size: 1, value: 0x02)  // IER: THRE
        #expect(line.level)
        #expect(uart.read(offset: 2, size: 1) & 0x0F == 0x02)  // reading IIR acknowledges it
        #expect(!line.level)
        uart.write(offset: 0, size: 1, value: 0x41)
        #expect(line.level)
    }

    @Test func loopbackPassesLinuxProbe() {
        let out = BufferOutput()
        let uart = Serial16550(output: out)
        // 8250 autoconfig: MCR = LOOP | RTS | OUT2 must read back as CTS | DCD in MSR.
        uart.write(offset: 4, size: 1, value: 0x1A)
        #expect(uart.read(offset: 6, size: 1) & 0xF0 == 0x90)
        uart.write(offset: 0, size: 1, value: 0x55)
        #expect(uart.read(offset: 0, size: 1) == 0x55)  // looped back, not transmitted
        #expect(out.bytes.isEmpty)
        #expect(uart.read(offset: 7, size: 1) == 0)
        uart.write(offset: 7, size: 1, value: 0xA5)
        #expect(uart.read(offset: 7, size: 1) == 0xA5)
    }

    @Test func inputBeyondCapacityIsCountedNotBuffered() {
        let uart = Serial16550(output: NullOutput(), inputCapacity: 4)
        uart.enqueueInput([1, 2, 3, 4, 5, 6])
        #expect(uart.receiveOverruns.load(ordering: .relaxed) == 2)
        #expect((0 ..< 5).map { _ in uart.read(offset: 0, size: 1) } == [1, 2, 3, 4, 0])
    }

    @Test func everyOffsetAndSizeIsHarmless() {
        let uart = Serial16550(output: NullOutput(), irq: RecordingLine())
        for offset in 0 ..< 16 as Range<UInt64> {
            for size in [1, 2, 4] {
                uart.write(offset: offset, size: size, value: 0xFFFF_FFFF)
                _ = uart.read(offset: offset, size: size)
            }
        }
    }
}

@Suite struct PlatformDeviceTests {
    @Test func i8042ResetCommand() {
        let log = EventLog()
        let kbc = I8042(events: log.sink)
        kbc.write(offset: 4, size: 1, value: 0xAA)
        #expect(kbc.read(offset: 4, size: 1) & 0x01 == 0x01)
        #expect(kbc.read(offset: 0, size: 1) == 0x55)
        #expect(log.all.isEmpty)
        kbc.write(offset: 4, size: 1, value: 0xFE)
        #expect(log.all == [.reset])
    }

    @Test func i8042OutputPortReset() {
        let log = EventLog()
        let kbc = I8042(events: log.sink)
        kbc.write(offset: 4, size: 1, value: 0xD1)
        kbc.write(offset: 0, size: 1, value: 0x01)  // reset line stays high
        #expect(log.all.isEmpty)
        kbc.write(offset: 4, size: 1, value: 0xD1)
        kbc.write(offset: 0, size: 1, value: 0x00)
        #expect(log.all == [.reset])
    }

    @Test func debugExitStatusMatchesQEMU() {
        let log = EventLog()
        let port = DebugExit(events: log.sink)
        port.write(offset: 0, size: 4, value: 0x21)
        #expect(log.all == [.debugExit(value: 0x21)])
        #expect(DebugExit.exitStatus(for: 0x21) == 0x43)
        #expect(DebugExit.exitStatus(for: 0) == 1)
        #expect(port.read(offset: 0, size: 2) == 0xFFFF)
    }

    @Test func acpiSleepControlPowersOffOnlyForS5() {
        let log = EventLog()
        let pm = ACPIPowerControl(events: log.sink)
        pm.write(offset: 0, size: 1, value: 0x14)        // SLP_TYP 5 without SLP_EN
        pm.write(offset: 0, size: 1, value: 0x20 | 0x0C) // SLP_EN with SLP_TYP 3 (S3): refused
        #expect(log.all.isEmpty)
        pm.write(offset: 0, size: 1, value: 0x34)
        #expect(log.all == [.powerOff])
        pm.write(offset: 2, size: 1, value: 0x02)
        #expect(log.all == [.powerOff])
        pm.write(offset: 2, size: 1, value: UInt64(ACPIPowerControl.resetValue))
        #expect(log.all == [.powerOff, .reset])
    }

    @Test func postCodeKeepsLastValue() {
        let post = PostCode()
        post.write(offset: 0, size: 1, value: 0x1AB)
        #expect(post.lastCode == 0xAB)
        #expect(post.writes.load(ordering: .relaxed) == 1)
    }
}
