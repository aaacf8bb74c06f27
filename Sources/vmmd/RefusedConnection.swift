import NIOCore
import VMMAPI

/// The whole pipeline of a connection refused at accept: it writes the error as an HTTP
/// response as soon as the channel is active, without reading a request, and closes.
final class RefusedConnection: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let error: APIError
    private var sent = false

    init(_ error: APIError) { self.error = error }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { refuse(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        refuse(context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}   // whatever it sent is not read

    private func refuse(_ context: ChannelHandlerContext) {
        guard !sent else { return }
        sent = true
        let response = APIResponse.error(error)
        let head = "HTTP/1.1 \(response.status.code) \(response.status.reasonPhrase)\r\nContent-Type: \(response.contentType)\r\n"
            + "Content-Length: \(response.body.count)\r\nConnection: close\r\n\r\n"
        let channel = context.channel
        context.writeAndFlush(NIOAny(context.channel.allocator.buffer(bytes: Array(head.utf8) + response.body)))
            .whenComplete { _ in channel.close(promise: nil) }
    }
}
