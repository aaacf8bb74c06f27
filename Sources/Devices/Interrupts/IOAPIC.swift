import Synchronization

/// The I/O APIC (Intel 82093AA datasheet), in the VMM: 24 input pins, each with a
/// redirection table entry that turns its edge or level into a message to the local
/// APICs (`InterruptMessageSink`).
///
/// Registers (datasheet 3.0): IOREGSEL at offset 0x00 selects, IOWIN at 0x10 reads and
/// writes the selected register — ID (0x00), version (0x01: 0x11, as KVM's in-kernel
/// IOAPIC and the 82093AA, so no EOI register), arbitration (0x02), and the redirection
/// table, 0x10 + 2n (low half) and 0x11 + 2n (high half) for pin n.
///
/// Edge-triggered pins send one message per inactive-to-active transition while
/// unmasked; edges on a masked pin are lost (3.2.4, bit 16). Level-triggered pins send
/// while active, set Remote IRR and send no more until the local APIC's EOI for that
/// vector (`endOfInterrupt`, from `KVM_EXIT_IOAPIC_EOI`) clears it; a still-active
/// line then sends again. Switching an entry to edge clears Remote IRR, which is how a
/// guest without an EOI register recovers a level interrupt (Linux does exactly that).
/// Delivery Status (bit 12) always reads 0: a message is handed over at once.
///
/// Pins may also be signalled past the model (an irqfd on the pin's GSI): those follow
/// the routes `routesChanged` publishes, which are this table's own unmasked entries.
public final class IOAPIC: BusDevice {
    public static let pinCount = 24
    public static let version: UInt32 = 0x11
    /// The conventional base, where the MADT says it is.
    public static let baseAddress: UInt64 = 0xFEC0_0000
    /// The window KVM's in-kernel IOAPIC decodes (registers at 0x00, 0x10; 0x40 unused).
    public static let windowSize: UInt64 = 0x100

    static let selectOffset: UInt64 = 0x00, windowOffset: UInt64 = 0x10
    // Redirection entry bits (datasheet 3.2.4).
    static let deliveryStatus: UInt64 = 1 << 12, polarityLow: UInt64 = 1 << 13, remoteIRR: UInt64 = 1 << 14
    static let levelTriggered: UInt64 = 1 << 15, masked: UInt64 = 1 << 16
    /// What a guest may write in the low half: vector, delivery and destination mode,
    /// polarity, trigger mode and mask (Delivery Status and Remote IRR are read-only).
    static let writableLow: UInt64 = 0x1_AFFF
    /// An entry after reset: masked, all else zero.
    public static let resetEntry: UInt64 = 1 << 16

    /// Everything the IOAPIC holds: what a snapshot saves and `restore` takes back.
    public struct State: Sendable, Equatable {
        /// The 4-bit APIC ID (register 0x00 bits 24-27).
        public var id: UInt8
        /// IOREGSEL: the register IOWIN reaches.
        public var select: UInt8
        /// The redirection table, Remote IRR included.
        public var redirection: [UInt64]
        /// The pins' input levels (bit n = pin n driven high), as the devices drive them.
        public var lines: UInt32

        public init(id: UInt8, select: UInt8 = 0, redirection: [UInt64] = Array(repeating: IOAPIC.resetEntry, count: IOAPIC.pinCount),
                    lines: UInt32 = 0) {
            self.id = id; self.select = select; self.redirection = redirection; self.lines = lines
        }
    }

    /// Why `restore` refused a state.
    public struct InvalidState: Error, CustomStringConvertible {
        public let description: String
    }

    private let sink: any InterruptMessageSink
    private let resetID: UInt8
    private let state: Mutex<State>

    /// - Parameters:
    ///   - id: the APIC ID the MADT gives it (the low 4 bits are kept, as the register has).
    ///   - sink: where its messages and routes go.
    public init(id: UInt8, sink: any InterruptMessageSink) {
        self.sink = sink
        resetID = id & 0xF
        state = Mutex(State(id: resetID))
    }

    /// A line into pin `pin` for a device (`InterruptLine`); nil outside 0-23.
    public func line(_ pin: Int) -> IOAPICLine? {
        (0 ..< Self.pinCount).contains(pin) ? IOAPICLine(ioapic: self, pin: pin) : nil
    }

    // MARK: - Pins

    /// Drives input `pin` to `level` (true = electrically high; the entry's polarity
    /// says whether that is active).
    public func setLine(_ pin: Int, _ level: Bool) {
        guard (0 ..< Self.pinCount).contains(pin) else { return }
        let bit = UInt32(1) << UInt32(pin)
        state.withLock { s in
            let was = s.lines & bit != 0
            if level { s.lines |= bit } else { s.lines &= ~bit }
            let e = s.redirection[pin]
            let active = level != (e & Self.polarityLow != 0)
            guard e & Self.masked == 0, active else { return }
            if e & Self.levelTriggered != 0 {
                if e & Self.remoteIRR == 0 { send(pin, &s) }
            } else if was != level {
                sink.deliver(InterruptMessage(redirectionEntry: e))
            }
        }
    }

    /// The local APICs' EOI of `vector` (`KVM_EXIT_IOAPIC_EOI`): every level-triggered
    /// entry with that vector and Remote IRR set is cleared, and sends again if its line
    /// is still active.
    public func endOfInterrupt(vector: UInt8) {
        state.withLock { s in
            for pin in 0 ..< Self.pinCount {
                let e = s.redirection[pin]
                guard e & Self.remoteIRR != 0, UInt8(truncatingIfNeeded: e) == vector else { continue }
                s.redirection[pin] = e & ~Self.remoteIRR
                resendIfActive(pin, &s)
            }
        }
    }

    /// Back to power-on: every entry masked, Remote IRR clear, the ID the MADT names.
    /// The input levels stay: the devices driving them are reset on their own.
    public func reset() {
        state.withLock { s in
            let lines = s.lines
            s = State(id: resetID, lines: lines)
            publishRoutes(s)
        }
    }

    // MARK: - Snapshot

    /// The whole state (for a snapshot).
    public var currentState: State { state.withLock { $0 } }

    /// Becomes `new` (from a snapshot), after checking it, and republishes the routes.
    /// Nothing is delivered: a pending level interrupt has its Remote IRR saved with it.
    public func restore(_ new: State) throws(InvalidState) {
        guard new.redirection.count == Self.pinCount else {
            throw InvalidState(description: "IOAPIC state with \(new.redirection.count) redirection entries, expected \(Self.pinCount)")
        }
        guard new.id <= 0xF else { throw InvalidState(description: "IOAPIC ID \(new.id) does not fit 4 bits") }
        guard new.lines >> UInt32(Self.pinCount) == 0 else {
            throw InvalidState(description: "IOAPIC line levels 0x\(String(new.lines, radix: 16)) name pins past \(Self.pinCount - 1)")
        }
        var checked = new
        checked.redirection = new.redirection.map { $0 & ~Self.deliveryStatus }
        state.withLock { s in
            s = checked
            publishRoutes(s)
        }
    }

    // MARK: - Registers

    public func read(offset: UInt64, size: Int) -> UInt64 {
        state.withLock { s in
            switch offset {
            case Self.selectOffset: return UInt64(s.select)
            case Self.windowOffset: return UInt64(register(s.select, s))
            default: return 0
            }
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        state.withLock { s in
            switch offset {
            case Self.selectOffset:
                s.select = UInt8(truncatingIfNeeded: value)
            case Self.windowOffset:
                // As KVM's model: IOWIN takes 32-bit (or 64-bit) stores only.
                guard size == 4 || size == 8 else { return }
                setRegister(s.select, UInt32(truncatingIfNeeded: value), &s)
            default:
                break
            }
        }
    }

    private func register(_ index: UInt8, _ s: State) -> UInt32 {
        switch index {
        case 0x00: return UInt32(s.id) << 24
        case 0x01: return Self.version | UInt32(Self.pinCount - 1) << 16
        case 0x02: return UInt32(s.id) << 24
        default:
            guard let (pin, high) = Self.redirectionIndex(index) else { return 0 }
            let e = s.redirection[pin]
            return UInt32(truncatingIfNeeded: high ? e >> 32 : e)
        }
    }

    private func setRegister(_ index: UInt8, _ value: UInt32, _ s: inout State) {
        switch index {
        case 0x00:
            s.id = UInt8(truncatingIfNeeded: value >> 24) & 0xF
        case 0x01, 0x02:
            break   // read-only
        default:
            guard let (pin, high) = Self.redirectionIndex(index) else { return }
            let old = s.redirection[pin]
            var e = old
            if high {
                e = (e & 0xFFFF_FFFF) | UInt64(value) << 32
            } else {
                e = (e & 0xFFFF_FFFF_0000_0000) | (UInt64(value) & Self.writableLow) | (e & Self.remoteIRR)
                if e & Self.levelTriggered == 0 { e &= ~Self.remoteIRR }
            }
            s.redirection[pin] = e
            // A level interrupt held while masked (or before the entry was set up) goes now.
            resendIfActive(pin, &s)
            if Self.route(old) != Self.route(e) { publishRoutes(s) }
        }
    }

    /// Sends pin `pin`'s message if it is level-triggered, unmasked, not awaiting an EOI
    /// and its line is active.
    private func resendIfActive(_ pin: Int, _ s: inout State) {
        let e = s.redirection[pin]
        guard e & Self.levelTriggered != 0, e & (Self.masked | Self.remoteIRR) == 0 else { return }
        let level = s.lines & (UInt32(1) << UInt32(pin)) != 0
        guard level != (e & Self.polarityLow != 0) else { return }
        send(pin, &s)
    }

    /// Sends a level-triggered pin's message and sets its Remote IRR.
    private func send(_ pin: Int, _ s: inout State) {
        s.redirection[pin] |= Self.remoteIRR
        sink.deliver(InterruptMessage(redirectionEntry: s.redirection[pin]))
    }

    private func publishRoutes(_ s: State) { sink.routesChanged(s.redirection.map(Self.route)) }

    /// The message an entry's pin sends, nil while it is masked.
    private static func route(_ e: UInt64) -> InterruptMessage? {
        e & masked != 0 ? nil : InterruptMessage(redirectionEntry: e)
    }

    /// (pin, high half) of a redirection-table register index.
    private static func redirectionIndex(_ index: UInt8) -> (Int, Bool)? {
        guard index >= 0x10 else { return nil }
        let pin = Int(index - 0x10) / 2
        return pin < pinCount ? (pin, index & 1 == 1) : nil
    }
}

/// One IOAPIC input, as a device sees it.
public struct IOAPICLine: InterruptLine {
    let ioapic: IOAPIC
    public let pin: Int

    public func set(_ level: Bool) { ioapic.setLine(pin, level) }
}
