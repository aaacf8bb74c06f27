import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Where a UART's transmitted bytes go.
public protocol SerialOutput: Sendable {
    func write(_ byte: UInt8)
}

/// Writes each byte to a file descriptor (stdout, or a log file the caller opened).
/// Write errors are ignored: a full disk or a closed terminal must not stop the guest.
public struct FileDescriptorOutput: SerialOutput {
    public let fd: Int32
    public init(fd: Int32) { self.fd = fd }

    public func write(_ byte: UInt8) {
        var b = byte
        _ = Glibc.write(fd, &b, 1)
    }
}

/// Keeps the output in memory, bounded: for tests, and for consoles read later.
public final class BufferOutput: SerialOutput {
    private let state: Mutex<[UInt8]>
    /// At most this many bytes are kept; older output is dropped first.
    public let capacity: Int

    public init(capacity: Int = 1 << 20) {
        self.capacity = capacity
        self.state = Mutex([])
    }

    public func write(_ byte: UInt8) {
        state.withLock { buffer in
            if buffer.count >= capacity { buffer.removeFirst(buffer.count - capacity + 1) }
            buffer.append(byte)
        }
    }

    /// Everything kept so far.
    public var bytes: [UInt8] { state.withLock { $0 } }
    /// The output as text (invalid UTF-8 replaced).
    public var text: String { String(decoding: bytes, as: UTF8.self) }
}

/// Discards output.
public struct NullOutput: SerialOutput {
    public init() {}
    public func write(_ byte: UInt8) {}
}
