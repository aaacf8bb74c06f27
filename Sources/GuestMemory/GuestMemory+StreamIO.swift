#if canImport(Glibc)
import Glibc
#endif

/// Non-blocking I/O between guest memory and host streams (the Unix sockets behind
/// virtio-vsock, a tap behind virtio-net), with no copy through host buffers and the
/// same bounds checks as every other access: each range is resolved inside one segment
/// before the system call sees it.
///
/// Each call is one system call that may transfer less than asked; EAGAIN (nothing to
/// read, no room to write) is thrown as `GuestMemoryError.system` like any other errno.
extension GuestMemory {
    /// `recvmsg(2)` with MSG_DONTWAIT from the stream socket `fd` into `ranges`, in
    /// order. Returns the bytes received; 0 means the peer will send no more.
    public func receive(from fd: Int32, into ranges: [GuestRange]) throws -> Int {
        var vectors = try iovecs(ranges, forWriting: true)
        return try message(fd, &vectors, operation: "recvmsg") { recvmsg(fd, $0, Int32(MSG_DONTWAIT)) }
    }

    /// `sendmsg(2)` with MSG_DONTWAIT | MSG_NOSIGNAL of `ranges`, in order, to the stream
    /// socket `fd` (a vanished peer is EPIPE, never SIGPIPE). Returns the bytes sent.
    public func send(to fd: Int32, from ranges: [GuestRange]) throws -> Int {
        var vectors = try iovecs(ranges, forWriting: false)
        return try message(fd, &vectors, operation: "sendmsg") { sendmsg(fd, $0, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL)) }
    }

    /// `writev(2)` of `ranges` to `fd`: one frame to a tap (which takes a frame per
    /// call, whole or not at all). Returns the bytes written.
    public func writeVector(_ fd: Int32, from ranges: [GuestRange]) throws -> Int {
        let vectors = try iovecs(ranges, forWriting: false)
        guard vectors.count <= Self.maxIOVecs else { throw GuestMemoryError.system(operation: "writev", errno: EMSGSIZE) }
        while true {
            // SAFETY: the vectors point into checked guest ranges; the count is the array's.
            let n = vectors.withUnsafeBufferPointer { writev(fd, $0.baseAddress, Int32($0.count)) }
            if n >= 0 { return n }
            if errno != EINTR { throw GuestMemoryError.system(operation: "writev", errno: errno) }
        }
    }

    /// Copies `bytes[offset ..< offset + count]` into `ranges`, in order, as far as they
    /// reach. Returns the bytes copied.
    @discardableResult
    public func write(_ bytes: [UInt8], offset: Int, count: Int, into ranges: [GuestRange]) throws -> Int {
        guard offset >= 0, count >= 0, offset <= bytes.count, count <= bytes.count - offset else {
            throw GuestMemoryError.system(operation: "copy into guest buffers", errno: EINVAL)
        }
        var done = 0
        for range in ranges where done < count {
            let n = min(count - done, Int(clamping: range.length))
            let (segment, at) = try resolve(range.start, length: UInt64(n))
            guard !segment.readOnly else { throw GuestMemoryError.readOnly(address: range.start.raw, segment: segment.name) }
            bytes.withUnsafeBytes { src in
                // SAFETY: resolve() proved [at, at + n) lies inside the segment mapping, and
                // offset + done + n <= bytes.count was checked above.
                if let base = src.baseAddress { (segment.host + at).copyMemory(from: base + offset + done, byteCount: n) }
            }
            noteWrite(segment, at, n)
            done += n
        }
        return done
    }

    /// Appends the bytes of `ranges` (at most `limit` of them) to `buffer`.
    public func append(_ ranges: [GuestRange], limit: Int, to buffer: inout [UInt8]) throws {
        var left = limit
        for range in ranges where left > 0 {
            let n = min(left, Int(clamping: range.length))
            let (segment, at) = try resolve(range.start, length: UInt64(n))
            // SAFETY: resolve() proved [at, at + n) lies inside the segment mapping.
            buffer.append(contentsOf: UnsafeRawBufferPointer(start: segment.host + at, count: n))
            left -= n
        }
    }

    private func message(_ fd: Int32, _ vectors: inout [iovec], operation: String,
                         _ call: (UnsafeMutablePointer<msghdr>) -> Int) throws -> Int {
        let count = min(vectors.count, Self.maxIOVecs)
        while true {
            // SAFETY: the vectors point into checked guest ranges and stay alive for the call.
            let n = vectors.withUnsafeMutableBufferPointer { buffer -> Int in
                var header = msghdr()
                header.msg_iov = buffer.baseAddress
                header.msg_iovlen = count
                return call(&header)
            }
            if n >= 0 { return n }
            if errno != EINTR { throw GuestMemoryError.system(operation: operation, errno: errno) }
        }
    }
}
