/// The vsock broker link between a worker and vmmd: a socketpair of its own (the
/// control link is NIO's on the daemon side, and NIO cannot pass descriptors). For a
/// connection its guest opens to host port P the worker asks for `connect`; vmmd
/// connects to `<socket>_P` with the VM owner's permissions and answers with the
/// connected socket attached (SCM_RIGHTS), or the errno. vmmd never reads the bytes.
public enum VsockBrokerMessage: Sendable, Equatable {
    /// Worker → vmmd.
    case connect(id: UInt32, port: UInt32)
    /// vmmd → worker: `errno` 0 with the socket attached, otherwise why not.
    case connected(id: UInt32, errno: Int32)

    enum Tag: UInt8 { case connect = 1, connected }

    public func encoded() -> [UInt8] {
        var w = WireWriter()
        switch self {
        case .connect(let id, let port): w.u8(Tag.connect.rawValue); w.u32(id); w.u32(port)
        case .connected(let id, let e): w.u8(Tag.connected.rawValue); w.u32(id); w.i32(e)
        }
        return w.bytes
    }

    public static func decode(_ payload: [UInt8]) throws -> VsockBrokerMessage {
        var r = WireReader(payload)
        let raw = try r.u8()
        guard let tag = Tag(rawValue: raw) else { throw WireError.unknownTag(raw) }
        let message: VsockBrokerMessage
        switch tag {
        case .connect: message = .connect(id: try r.u32(), port: try r.u32())
        case .connected: message = .connected(id: try r.u32(), errno: try r.i32())
        }
        guard r.isAtEnd else { throw WireError.malformed("trailing bytes after \(tag)") }
        return message
    }
}
