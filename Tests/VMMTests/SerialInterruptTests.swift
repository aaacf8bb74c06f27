import Devices
import Foundation
import Testing
import VMM

@Suite struct SerialInterruptLineTests {
    @Test func out2GatesTheIRQLine() {
        let line = RecordingLine()
        let uart = Serial16550(output: NullOutput(), irq: line)
        uart.write(offset: 4, size: 1, value: 0x00)     // MCR: OUT2 off
        uart.write(offset: 1, size: 1, value: 0x01)     // IER: received data
        uart.enqueueInput([0x41])
        #expect(!line.level, "the chip's interrupt is pending, but OUT2 cuts it from the IRQ line")
        #expect(uart.read(offset: 2, size: 1) & 0x0F == 0x04)   // IIR still reports it
        uart.write(offset: 4, size: 1, value: 0x08)     // OUT2 on: the pending interrupt reaches the line
        #expect(line.level)
        _ = uart.read(offset: 0, size: 1)
        #expect(!line.level)
    }

    @Test func priorityIsLineStatusThenDataThenTransmitter() {
        let line = RecordingLine()
        let uart = Serial16550(output: NullOutput(), irq: line, inputCapacity: 1)
        uart.write(offset: 1, size: 1, value: 0x07)     // IER: RLS | THRE | RDA
        uart.write(offset: 4, size: 1, value: 0x18)     // loopback + OUT2: transmitted bytes come back
        uart.write(offset: 0, size: 1, value: 0x31)     // fills the 1-byte input
        uart.write(offset: 0, size: 1, value: 0x32)     // overrun
        #expect(uart.read(offset: 2, size: 1) & 0x0F == 0x06)   // RLS first
        #expect(uart.read(offset: 5, size: 1) & 0x02 == 0x02)   // LSR: OE, cleared by the read
        #expect(uart.read(offset: 2, size: 1) & 0x0F == 0x04)   // then RDA
        #expect(uart.read(offset: 0, size: 1) == 0x31)
        #expect(uart.read(offset: 2, size: 1) & 0x0F == 0x02)   // then THRE
        #expect(uart.read(offset: 2, size: 1) & 0x0F == 0x01)   // acknowledged by that read
        #expect(!line.level)
    }
}

/// Guests/uart-irq.S: COM1 interrupt-driven in both directions, through the VMM's IOAPIC
/// (split irqchip: KVM_SIGNAL_MSI) and through KVM's (KVM_IRQ_LINE).
@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct SerialInterruptGuestTests {
    @Test(arguments: IRQChipMode.allCases)
    func receiveAndTransmitInterruptsReachTheGuest(_ irqchip: IRQChipMode) throws {
        var config = MachineConfig()
        config.irqchip = irqchip
        config.memoryMiB = 16
        config.kernel = try TestGuests.image("uart-irq")
        let output = BufferOutput()
        config.serialOutput = output
        let machine = try Machine(config: config)
        machine.serial.enqueueInput(Array("ab".utf8))         // waiting before the guest enables the IRQ
        try machine.start()
        // The rest arrives while the guest sleeps in `hlt`, as keyboard input would.
        let deadline = Date().addingTimeInterval(20)
        while !output.text.contains("ab"), Date() < deadline { usleep(10_000) }
        machine.serial.enqueueInput(Array("cq".utf8))
        DispatchQueue.global().asyncAfter(deadline: .now() + 20) { [weak machine] in machine?.kill() }
        let reason = try machine.waitForStop()
        #expect(output.text == "uart-irq: ready\nabc\nuart-irq: thre\n")
        #expect(reason == .powerOff)
    }
}
