import NIOCore

/// The timeouts of one API connection, first in its pipeline (it sees raw bytes, before
/// the HTTP decoder): a connection that sits idle with nothing under way, or a request
/// whose head and body do not arrive in time, is closed. `APIHandler` tells it where
/// each request is; a request being served (an answer being computed, a console
/// stream) is never timed out, nor is a connection that holds `connection`-lifetime VMs.
final class ConnectionDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private enum Phase { case idle, receiving, serving }
    private var phase = Phase.idle
    private var timer: Scheduled<Void>?
    private var context: ChannelHandlerContext?
    /// The connection holds VMs that live as long as it does: no idle timeout.
    private var pinned = false
    let idle: TimeAmount
    let request: TimeAmount

    init(idleSeconds: Int, requestSeconds: Int) {
        idle = .seconds(Int64(idleSeconds))
        request = .seconds(Int64(requestSeconds))
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { arm(idle) }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(idle)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // The first byte of a request starts its clock; bytes during a request that is
        // being served (a pipelined next one) wait for `responseDone`.
        if phase == .idle {
            phase = .receiving
            arm(request)
        }
        context.fireChannelRead(data)
    }

    // MARK: - From APIHandler, on the same event loop

    /// A request's head has been decoded (maybe one that was pipelined behind another).
    func requestStarted() {
        let already = phase == .receiving
        phase = .receiving
        if !already { arm(request) }
    }

    /// The whole request is in: no clock while it is served.
    func requestReceived() {
        phase = .serving
        timer?.cancel()
        timer = nil
    }

    /// Its response (or stream) has ended: the connection is idle again.
    func responseDone() {
        phase = .idle
        arm(idle)
    }

    /// The connection now holds `connection`-lifetime VMs.
    func pin() {
        pinned = true
        if phase == .idle { timer?.cancel(); timer = nil }
    }

    private func arm(_ after: TimeAmount) {
        timer?.cancel()
        timer = nil
        guard let context, !(phase == .idle && pinned) else { return }
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: after) { channel.close(promise: nil) }
    }
}
