import CSys
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Blocking, framed message I/O on a stream socket: the worker's side of the link.
/// Sends may come from several threads (vCPUs write console bytes while the control
/// thread answers requests); each frame goes out whole under a lock.
public final class FramedSocket: @unchecked Sendable {
    // @unchecked: `fd` is immutable; writes are serialised by `sendLock`; reads happen on
    // one thread only (the worker's control loop).
    public let fd: Int32
    private let sendLock = Mutex(())

    public init(fd: Int32) { self.fd = fd }

    /// Sends one frame; false if the peer is gone.
    @discardableResult
    public func send(_ payload: [UInt8]) -> Bool {
        let frame = WorkerFrame.frame(payload)
        return sendLock.withLock { _ in writeAll(frame) }
    }

    /// Sends one frame with descriptors attached to its first byte (SCM_RIGHTS).
    public func send(_ payload: [UInt8], descriptors: [Int32]) throws {
        let frame = WorkerFrame.frame(payload)
        try sendLock.withLock { _ in
            let n = csys_send_with_fds(fd, frame, frame.count, descriptors, Int32(descriptors.count))
            guard n >= 0 else { throw WorkerLinkError.system("sendmsg", Int32(-n)) }
            // The descriptors went with the first chunk; the rest of a big frame follows.
            guard writeAll(Array(frame[Int(n)...])) else { throw WorkerLinkError.closed }
        }
    }

    private func writeAll(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let rest = offset == 0 ? bytes : Array(bytes[offset...])
            let n = Glibc.send(fd, rest, rest.count, Int32(MSG_NOSIGNAL))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            offset += n
        }
        return true
    }

    /// Reads one frame, with any descriptors that arrived with it. Nil at end of stream.
    public func receive() throws -> (payload: [UInt8], descriptors: [Int32])? {
        var header = [UInt8](repeating: 0, count: WorkerFrame.headerSize)
        var fds = [Int32](repeating: -1, count: Int(CSYS_MAX_FDS))
        var nfds: Int32 = 0
        var got = 0
        var descriptors: [Int32] = []
        // The descriptors arrive with the first byte of the frame they belong to.
        while got < header.count {
            var chunk = [UInt8](repeating: 0, count: header.count - got)
            let n = csys_recv_with_fds(fd, &chunk, chunk.count, &fds, Int32(fds.count), &nfds)
            guard n >= 0 else { throw WorkerLinkError.system("recvmsg", Int32(-n)) }
            descriptors += fds.prefix(Int(nfds))
            if n == 0 {
                for d in descriptors { close(d) }
                if got == 0 { return nil }
                throw WorkerLinkError.closed
            }
            header.replaceSubrange(got ..< got + n, with: chunk[0 ..< n])
            got += n
        }
        let length: Int
        do { length = try WorkerFrame.payloadLength(header) } catch {
            for d in descriptors { close(d) }
            throw error
        }
        var payload = [UInt8](repeating: 0, count: length)
        var offset = 0
        while offset < length {
            var chunk = [UInt8](repeating: 0, count: min(length - offset, 1 << 16))
            let n = read(fd, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                for d in descriptors { close(d) }
                throw n == 0 ? WorkerLinkError.closed : WorkerLinkError.system("read", errno)
            }
            payload.replaceSubrange(offset ..< offset + n, with: chunk[0 ..< n])
            offset += n
        }
        return (payload, descriptors)
    }
}

public enum WorkerLinkError: Error, Equatable, CustomStringConvertible {
    case closed
    case system(String, Int32)

    public var description: String {
        switch self {
        case .closed: return "the peer closed the worker link"
        case .system(let op, let e): return "\(op) on the worker link failed: \(String(cString: strerror(e)))"
        }
    }
}
