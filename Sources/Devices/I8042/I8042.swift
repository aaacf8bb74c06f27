import Synchronization

/// The i8042 keyboard controller, as far as a VMM needs it: enough of the command set
/// for Linux's probe to find a controller with no devices behind it, and command 0xFE,
/// which pulses the CPU reset line — the classic way PCs reboot.
///
/// Registered at port 0x60 with length 5: offset 0 is the data port, offset 4 the
/// status/command port (0x64). Offsets 1-3 (0x61, the PIT's port B, is handled in KVM).
public final class I8042: BusDevice {
    public static let basePort: UInt16 = 0x60
    public static let portCount = 5

    static let statusOutputFull: UInt8 = 0x01
    static let statusSystemFlag: UInt8 = 0x04
    static let statusCommand: UInt8 = 0x08

    struct State {
        var output: [UInt8] = []
        var commandByte: UInt8 = 0x30  // both ports disabled, no IRQs: nothing is attached
        var pendingCommand: UInt8?     // a command waiting for its data byte
        var lastWasCommand = false
    }

    let state = Mutex(State())
    private let events: PlatformEventSink

    public init(events: @escaping PlatformEventSink) { self.events = events }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        state.withLock { s -> UInt64 in
            switch offset {
            case 0:
                return s.output.isEmpty ? 0 : UInt64(s.output.removeFirst())
            case 4:
                var status = Self.statusSystemFlag
                if !s.output.isEmpty { status |= Self.statusOutputFull }
                if s.lastWasCommand { status |= Self.statusCommand }
                return UInt64(status)
            default:
                return allOnes(size)
            }
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        let byte = UInt8(truncatingIfNeeded: value)
        var reset = false
        state.withLock { s in
            switch offset {
            case 0:
                s.lastWasCommand = false
                switch s.pendingCommand {
                case 0x60: s.commandByte = byte
                case 0xD1: reset = byte & 0x01 == 0  // output port bit 0 low holds the CPU in reset
                default: break  // data to a keyboard that is not there
                }
                s.pendingCommand = nil
            case 4:
                s.lastWasCommand = true
                s.pendingCommand = nil
                switch byte {
                case 0x20: s.output.append(s.commandByte)         // read command byte
                case 0x60, 0xD1: s.pendingCommand = byte          // write command byte / output port
                case 0xAA: s.output.append(0x55)                  // controller self-test passed
                case 0xAB, 0xA9: s.output.append(0x00)            // port tests: no error
                case 0xD0: s.output.append(0x01)                  // output port: reset line high
                case 0xFE: reset = true                           // pulse reset line
                default: break                                    // enable/disable ports and the like
                }
            default:
                break
            }
        }
        if reset { events(.reset) }
    }
}
