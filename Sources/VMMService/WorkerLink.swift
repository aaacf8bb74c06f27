import NIOCore
import Synchronization
import WorkerProtocol

/// Splits the worker's stream into frames (u32 length + payload).
struct WorkerFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = [UInt8]

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, endianness: .little, as: UInt32.self) else {
            return .needMoreData
        }
        guard length <= WorkerFrame.maxPayload else { throw WireError.malformed("frame of \(length) bytes") }
        guard buffer.readableBytes >= WorkerFrame.headerSize + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: WorkerFrame.headerSize)
        let payload = buffer.readBytes(length: Int(length)) ?? []
        context.fireChannelRead(wrapInboundOut(payload))
        return .continue
    }
}

/// Hands each decoded worker message to the VM. Console bytes are gathered over one
/// read burst and delivered at its end, so that followers get chunks, not single bytes.
final class WorkerLinkHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = [UInt8]

    let onMessage: @Sendable (WorkerMessage) -> Void
    let onClose: @Sendable (String?) -> Void
    private let pendingConsole = Mutex<[UInt8]>([])

    init(onMessage: @escaping @Sendable (WorkerMessage) -> Void, onClose: @escaping @Sendable (String?) -> Void) {
        self.onMessage = onMessage
        self.onClose = onClose
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let payload = unwrapInboundIn(data)
        let message: WorkerMessage
        do {
            message = try WorkerMessage.decode(payload)
        } catch {
            // A worker that speaks garbage is broken (or compromised): cut it off.
            onClose("malformed message: \(error)")
            context.close(promise: nil)
            return
        }
        if case .console(let bytes) = message {
            pendingConsole.withLock { $0 += bytes }
            return
        }
        flushConsole()
        onMessage(message)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushConsole()
    }

    private func flushConsole() {
        let bytes = pendingConsole.withLock { p -> [UInt8] in defer { p = [] }; return p }
        if !bytes.isEmpty { onMessage(.console(bytes)) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        flushConsole()
        onClose(nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        onClose("\(error)")
        context.close(promise: nil)
    }
}
