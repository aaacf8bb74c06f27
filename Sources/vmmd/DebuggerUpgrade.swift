import FoundationEssentials
import NIOCore
import NIOHTTP1
import VMMAPI
import VMMService

/// `GET /v1/vms/NAME/gdb` with `Upgrade: gdb-remote`: after `101 Switching Protocols` the
/// connection carries the GDB remote protocol between the client (`vmmctl gdb`, run by
/// gdb as `target remote | vmmctl gdb NAME`) and the VM's worker. The daemon relays the
/// bytes and parses none of them; it only checks, before upgrading, that the caller may
/// debug the VM (its owner, or root).
extension APIHandler {
    static let debuggerProtocol = "gdb-remote"

    func upgradeToDebugger(context: ChannelHandlerContext, head: HTTPRequestHead, name: String, owner: OwnerSelector?) {
        let upgrade = head.headers["upgrade"].flatMap { $0.split(separator: ",") }
            .map { $0.filter { $0 != " " && $0 != "\t" }.lowercased() }
        guard upgrade.contains(Self.debuggerProtocol) else {
            respond(context: context, head: head, .error(APIError(.invalidField,
                "GET .../gdb switches protocols: send Connection: Upgrade and Upgrade: \(Self.debuggerProtocol)")))
            return
        }
        let loop = context.eventLoop
        let relay = DebuggerRelayHandler()
        let connection: DebuggerConnection
        do {
            connection = try service.attachDebugger(name, owner: owner, caller: caller) { bytes in
                loop.execute { relay.deliver(bytes) }
            }
        } catch {
            respond(context: context, head: head, .error(error))
            return
        }
        metrics.countRequest(method: head.method.rawValue, status: 101)
        // The relay goes first in the pipeline: from now on every byte read reaches it
        // before any HTTP handler, and what it writes goes straight to the socket. The
        // HTTP handlers stay behind it, idle, and see only the connection's end; only the
        // pipelining handler must go, since it holds reads back while a response is open.
        relay.connection = connection
        do {
            let pipeline = context.pipeline.syncOperations
            try pipeline.addHandler(relay, position: .first)
            pipeline.removeHandler(try pipeline.handler(type: HTTPServerPipelineHandler.self), promise: nil)
            // A debugging session may sit idle for as long as its user thinks: the API's
            // idle and request timeouts do not apply to it.
            pipeline.removeHandler(deadline, promise: nil)
        } catch {
            connection.close()
            context.close(promise: nil)
            return
        }
        relay.deliver(Array("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: \(Self.debuggerProtocol)\r\n\r\n".utf8))
    }
}

/// After the upgrade, first in the pipeline: client bytes to the worker, the worker's
/// bytes to the client (nil: the session is over, close), and the connection's end
/// detaches the debugger. Used on the channel's event loop only.
final class DebuggerRelayHandler: ChannelInboundHandler, @unchecked Sendable {
    // @unchecked: every member is touched on the channel's event loop only.
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    var connection: DebuggerConnection?
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func deliver(_ bytes: [UInt8]?) {
        guard let context else { return }
        guard let bytes else { return context.close(promise: nil) }
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        if let bytes = buffer.readBytes(length: buffer.readableBytes) { connection?.send(bytes) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection?.close()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        connection?.close()
        context.close(promise: nil)
    }
}
