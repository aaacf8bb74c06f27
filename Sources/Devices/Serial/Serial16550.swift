import Synchronization

/// A 16550A UART (the PC's COM ports), as described in the National Semiconductor
/// PC16550D datasheet: eight registers, the divisor latch behind LCR.DLAB, a receive
/// FIFO, loopback mode, and the interrupt identification priority scheme.
///
/// Transmission is instantaneous (THR is always empty), so the transmitter-empty
/// interrupt re-arms after every write, which is what Linux's 8250 driver expects.
///
/// The interrupt output is a level: high while an enabled interrupt is pending, as the
/// chip's INTR pin. On a PC, MCR.OUT2 gates that pin onto the ISA IRQ line (the line is
/// cut while OUT2 is 0), which Linux relies on when it probes and enables the IRQ. The
/// machine drives the in-kernel IOAPIC/PIC with it through KVM_IRQ_LINE; COM1's ISA IRQ 4
/// is edge-triggered, so each rising edge is one interrupt and the driver's loop (read
/// IIR until "none pending") drains every condition behind it.
public final class Serial16550: BusDevice {
    /// COM1's conventional base port and IRQ.
    public static let com1Port: UInt16 = 0x3F8
    public static let com1IRQ: UInt32 = 4
    /// Number of ports a 16550 occupies.
    public static let portCount = 8
    /// Receive FIFO depth of a 16550A.
    public static let fifoDepth = 16

    // Register offsets (datasheet table 2).
    enum Reg: UInt64 { case data = 0, ier = 1, iir = 2, lcr = 3, mcr = 4, lsr = 5, msr = 6, scr = 7 }

    // Bits.
    static let ierRDA: UInt8 = 0x01, ierTHRE: UInt8 = 0x02, ierRLS: UInt8 = 0x04, ierMSI: UInt8 = 0x08
    static let iirNone: UInt8 = 0x01, iirTHRE: UInt8 = 0x02, iirRDA: UInt8 = 0x04, iirRLS: UInt8 = 0x06
    static let iirFIFOEnabled: UInt8 = 0xC0
    static let lcrDLAB: UInt8 = 0x80
    static let lsrDR: UInt8 = 0x01, lsrOE: UInt8 = 0x02, lsrTHRE: UInt8 = 0x20, lsrTEMT: UInt8 = 0x40
    static let mcrLoop: UInt8 = 0x10, mcrOut2: UInt8 = 0x08

    struct State {
        var ier: UInt8 = 0
        var lcr: UInt8 = 0x03       // 8N1
        var mcr: UInt8 = 0x08       // OUT2
        var lsrErrors: UInt8 = 0    // overrun, cleared by reading LSR
        var msr: UInt8 = 0xB0       // DCD, DSR, CTS: a cable is attached
        var scr: UInt8 = 0
        var dll: UInt8 = 0x0C       // 9600 baud
        var dlm: UInt8 = 0
        var fifoEnabled = false
        var thrInterruptPending = false
        var rx: [UInt8] = []        // receive queue; the first fifoDepth bytes are "in the FIFO"
        var lineLevel = false
    }

    let state = Mutex(State())
    private let output: any SerialOutput
    private let irq: (any InterruptLine)?
    /// Bytes the guest transmitted.
    public let transmitted = Atomic<UInt64>(0)
    /// Input bytes dropped because the guest did not read fast enough.
    public let receiveOverruns = Atomic<UInt64>(0)
    /// Most input bytes buffered for the guest (beyond the 16-byte FIFO, the VMM queues).
    public let inputCapacity: Int

    public init(output: any SerialOutput, irq: (any InterruptLine)? = nil, inputCapacity: Int = 4096) {
        self.output = output
        self.irq = irq
        self.inputCapacity = inputCapacity
    }

    /// Queues bytes for the guest to receive (keyboard input, console API). Thread-safe.
    public func enqueueInput(_ bytes: [UInt8]) {
        state.withLock { s in
            let room = max(0, inputCapacity - s.rx.count)
            if bytes.count > room { receiveOverruns.add(UInt64(bytes.count - room), ordering: .relaxed) }
            s.rx.append(contentsOf: bytes.prefix(room))
            updateInterrupt(&s)
        }
    }

    /// Puts the UART back in its power-on state (machine reset). Pending input is kept.
    public func reset() {
        state.withLock { s in
            let rx = s.rx
            s = State()
            s.rx = rx
            s.lineLevel = true  // force the line low below
            updateInterrupt(&s)
        }
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard let reg = Reg(rawValue: offset) else { return allOnes(size) }
        return UInt64(state.withLock { s -> UInt8 in
            let dlab = s.lcr & Self.lcrDLAB != 0
            switch reg {
            case .data:
                if dlab { return s.dll }
                guard !s.rx.isEmpty else { return 0 }
                let byte = s.rx.removeFirst()
                updateInterrupt(&s)
                return byte
            case .ier:
                return dlab ? s.dlm : s.ier
            case .iir:
                let id = identify(s)
                // Reading IIR while it reports THRE acknowledges that interrupt.
                if id == Self.iirTHRE {
                    s.thrInterruptPending = false
                    updateInterrupt(&s)
                }
                return id | (s.fifoEnabled ? Self.iirFIFOEnabled : 0)
            case .lcr:
                return s.lcr
            case .mcr:
                return s.mcr
            case .lsr:
                let value = lineStatus(s)
                s.lsrErrors = 0
                updateInterrupt(&s)
                return value
            case .msr:
                return modemStatus(s)
            case .scr:
                return s.scr
            }
        })
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard let reg = Reg(rawValue: offset) else { return }
        let byte = UInt8(truncatingIfNeeded: value)
        var transmit: UInt8?
        state.withLock { s in
            let dlab = s.lcr & Self.lcrDLAB != 0
            switch reg {
            case .data:
                if dlab { s.dll = byte; return }
                if s.mcr & Self.mcrLoop != 0 {
                    // Loopback: the transmitter feeds the receiver; nothing leaves the chip.
                    if s.rx.count < inputCapacity { s.rx.append(byte) } else { s.lsrErrors |= Self.lsrOE }
                } else {
                    transmit = byte
                }
                s.thrInterruptPending = true
            case .ier:
                if dlab { s.dlm = byte; return }
                let enablingTHRE = s.ier & Self.ierTHRE == 0 && byte & Self.ierTHRE != 0
                s.ier = byte & 0x0F
                if enablingTHRE { s.thrInterruptPending = true }  // THR is already empty
            case .iir:  // FCR
                s.fifoEnabled = byte & 0x01 != 0
                if byte & 0x02 != 0 { s.rx.removeFirst(min(s.rx.count, Self.fifoDepth)) }
            case .lcr:
                s.lcr = byte
            case .mcr:
                s.mcr = byte & 0x1F
            case .lsr, .msr:
                break  // read-only (factory test registers)
            case .scr:
                s.scr = byte
            }
            updateInterrupt(&s)
        }
        if let transmit {
            output.write(transmit)
            transmitted.add(1, ordering: .relaxed)
        }
    }

    // MARK: - Register logic

    private func lineStatus(_ s: State) -> UInt8 {
        Self.lsrTHRE | Self.lsrTEMT | s.lsrErrors | (s.rx.isEmpty ? 0 : Self.lsrDR)
    }

    private func modemStatus(_ s: State) -> UInt8 {
        guard s.mcr & Self.mcrLoop != 0 else { return s.msr }
        // Loopback wiring (datasheet, MCR bit 4): RTS→CTS, DTR→DSR, OUT1→RI, OUT2→DCD.
        let m = s.mcr
        return ((m & 0x02) << 3) | ((m & 0x01) << 5) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
    }

    /// The highest-priority pending, enabled interrupt (datasheet table 4), or `iirNone`.
    private func identify(_ s: State) -> UInt8 {
        if s.ier & Self.ierRLS != 0 && s.lsrErrors != 0 { return Self.iirRLS }
        if s.ier & Self.ierRDA != 0 && !s.rx.isEmpty { return Self.iirRDA }
        if s.ier & Self.ierTHRE != 0 && s.thrInterruptPending { return Self.iirTHRE }
        return Self.iirNone
    }

    private func updateInterrupt(_ s: inout State) {
        let level = identify(s) != Self.iirNone && s.mcr & Self.mcrOut2 != 0
        guard level != s.lineLevel else { return }
        s.lineLevel = level
        irq?.set(level)
    }
}
