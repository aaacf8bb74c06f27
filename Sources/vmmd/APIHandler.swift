import Logging
import NIOCore
import NIOHTTP1
import VMMAPI
import VMMService

/// One API connection: gathers each request, parses it into a route, hands it to the
/// service with the connection's caller, and writes the answer. A console follow turns
/// the response into a stream that lasts until the VM goes or the client leaves.
final class APIHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// Largest request body accepted (a create request is well under 4 KiB).
    static let maxBody = 1 << 20

    let service: VMService
    let caller: Caller
    let connection: ConnectionToken
    let metrics: DaemonMetrics
    /// The daemon's `GET /v1/vms` encodings, shared by every connection.
    let listEncoder: VMListEncoder
    let logger: Logger
    /// This connection's timeouts, told where each request is.
    let deadline: ConnectionDeadline

    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooLarge = false
    /// From a request's head until its response has been written (a follow stream
    /// until it ends).
    private var serving = false
    /// The client shut its sending side (SHUT_WR): answer what it asked, then close.
    private var inputClosed = false
    /// Stops a console follow running on this connection.
    private var stopFollowing: (@Sendable () -> Void)?
    /// The `wait_for` request this connection is waiting on: cancelled if the client
    /// goes away first (only a wait; a create or destroy runs to its end).
    private var waiting: Task<Void, Never>?
    /// Console bytes not sent because the reader was not keeping up.
    private var droppedConsoleBytes = 0
    /// Most console bytes queued for a slow reader before output is dropped.
    static let maxQueuedConsoleBytes = 1 << 20

    init(service: VMService, caller: Caller, connection: ConnectionToken, metrics: DaemonMetrics,
         listEncoder: VMListEncoder, logger: Logger, deadline: ConnectionDeadline) {
        self.service = service; self.caller = caller; self.connection = connection
        self.metrics = metrics; self.listEncoder = listEncoder; self.logger = logger; self.deadline = deadline
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = []
            tooLarge = false
            serving = true
            deadline.requestStarted()
        case .body(var chunk):
            if body.count + chunk.readableBytes > Self.maxBody {
                tooLarge = true
            } else if let bytes = chunk.readBytes(length: chunk.readableBytes) {
                body += bytes
            }
        case .end:
            guard let head else { return }
            self.head = nil
            deadline.requestReceived()
            if tooLarge {
                respond(context: context, head: head, .error(APIError(.payloadTooLarge, "request bodies are limited to \(Self.maxBody) bytes")))
                return
            }
            dispatch(context: context, head: head, body: body)
        }
    }

    /// A half-closed connection (the client sent its request and shut its side) still
    /// gets its answer; then, or at once when nothing is pending, the connection closes.
    /// Closing it also ends its `connection`-lifetime VMs: a client that has said it is
    /// done sending can never ask for anything again.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            inputClosed = true
            if !serving { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Any error on the connection ends it: an unparsable request (after the 400 that
    /// HTTPServerProtocolErrorHandler wrote, which says `Connection: close`), a reset.
    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        stopFollowing?()
        stopFollowing = nil
        waiting?.cancel()
        waiting = nil
        let service = self.service, connection = self.connection
        Task { await service.connectionClosed(connection) }
        context.fireChannelInactive()
    }

    private func dispatch(context: ChannelHandlerContext, head: HTTPRequestHead, body: [UInt8]) {
        let route: APIRoute
        do {
            route = try APIRoute.parse(method: head.method.rawValue, uri: head.uri)
        } catch {
            respond(context: context, head: head, .error(error))
            return
        }
        if case .console(let name, true, let owner) = route {
            follow(context: context, head: head, name: name, owner: owner)
            return
        }
        if case .debugger(let name, let owner) = route {
            upgradeToDebugger(context: context, head: head, name: name, owner: owner)
            return
        }
        let service = self.service, caller = self.caller, connection = self.connection, metrics = self.metrics
        let listEncoder = self.listEncoder
        let promise = context.eventLoop.makePromise(of: APIResponse.self)
        let task = promise.completeWithTask {
            await Self.answer(route, body: body, service: service, caller: caller, connection: connection, metrics: metrics,
                              listEncoder: listEncoder)
        }
        if case .waitFor = route { waiting = task }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        promise.futureResult.whenSuccess { response in
            let (handler, context) = bound.value
            handler.waiting = nil
            if route == .createVM, service.holdsVMs(connection) { handler.deadline.pin() }
            handler.respond(context: context, head: head, response)
        }
    }

    /// Maps a route to one service call. Runs off the event loop.
    static func answer(_ route: APIRoute, body: [UInt8], service: VMService, caller: Caller,
                       connection: ConnectionToken, metrics: DaemonMetrics, listEncoder: VMListEncoder) async -> APIResponse {
        do {
            switch route {
            case .version: return .json(VersionInfo.current)
            case .capabilities: return .json(service.capabilities())
            case .metrics: return .bytes(await metrics.scrape(service), contentType: "text/plain; version=0.0.4")
            case .listVMs: return listEncoder.response(for: service.list(caller: caller), caller: caller)
            case .createVM:
                let request = try decodeRequest(CreateVMRequest.self, from: body)
                return .json(try await service.create(request, caller: caller, connection: connection), status: .created)
            case .info(let name, let owner): return .json(try service.info(name, owner: owner, caller: caller))
            case .waitFor(let name, let states, let milliseconds, let owner):
                return .json(try await service.waitFor(name, states: states, milliseconds: milliseconds, owner: owner, caller: caller))
            case .destroy(let name, let owner):
                try await service.destroy(name, owner: owner, caller: caller)
                return .noContent
            case .action(let name, let action, let owner):
                guard body.isEmpty || body == Array("{}".utf8) else {
                    throw APIError(.unknownField, "actions take no body (or an empty JSON object)")
                }
                return .json(try await service.perform(action, on: name, owner: owner, caller: caller))
            case .console(let name, _, let owner):
                return .bytes(try service.consoleOutput(name, owner: owner, caller: caller))
            case .consoleInput(let name, let owner):
                try service.consoleInput(name, owner: owner, caller: caller, bytes: body)
                return .noContent
            case .stats(let name, let owner): return .json(try await service.statistics(name, owner: owner, caller: caller))
            case .snapshot(let name, let owner):
                let request = try decodeRequest(SnapshotRequest.self, from: body)
                return .json(try await service.snapshot(request, of: name, owner: owner, caller: caller))
            case .debugger:
                // Reached only without an upgrade (dispatch takes the others).
                throw APIError(.invalidField, "GET .../gdb switches protocols: send Connection: Upgrade and Upgrade: gdb-remote")
            case .testForbiddenSyscall(let name, let owner):
                try service.testForbiddenSyscall(name, owner: owner, caller: caller)
                return .noContent
            }
        } catch let error as APIError {
            return .error(error)
        } catch {
            return .error(APIError(.internalError, "\(error)"))
        }
    }

    func respond(context: ChannelHandlerContext, head: HTTPRequestHead, _ response: APIResponse) {
        metrics.countRequest(method: head.method.rawValue, status: Int(response.status.code))
        var headers = HTTPHeaders()
        if !response.body.isEmpty { headers.add(name: "Content-Type", value: response.contentType) }
        headers.add(name: "Content-Length", value: String(response.body.count))
        for (name, value) in response.headers { headers.add(name: name, value: value) }
        let keepAlive = head.isKeepAlive && !inputClosed
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        serving = false
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: response.status, headers: headers))), promise: nil)
        if !response.body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if keepAlive {
            deadline.responseDone()
        } else {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }

    /// Writes console output to a follower, or drops it (and says so, once the reader
    /// catches up) when the reader lets more than `maxQueuedConsoleBytes` pile up: a
    /// client that never reads must not grow the daemon's memory.
    private func sendConsole(_ bytes: [UInt8], context: ChannelHandlerContext) {
        guard context.channel.isWritable else {
            droppedConsoleBytes += bytes.count
            return
        }
        var out = bytes
        if droppedConsoleBytes > 0 {
            out = Array("\r\n[vmmd: \(droppedConsoleBytes) bytes of console output dropped: the reader fell behind]\r\n".utf8) + out
            droppedConsoleBytes = 0
        }
        let buffer = context.channel.allocator.buffer(bytes: out)
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
    }

    /// `GET .../console?follow=true`: a chunked stream of the backlog and then of new
    /// output; it ends when the VM is destroyed.
    private func follow(context: ChannelHandlerContext, head: HTTPRequestHead, name: String, owner: OwnerSelector?) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let eventLoop = context.eventLoop
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/octet-stream")
        headers.add(name: "Transfer-Encoding", value: "chunked")
        do {
            // Followers call from other threads and hop onto this loop; the backlog is
            // delivered the same way, so the head written below still goes out first.
            stopFollowing = try service.followConsole(name, owner: owner, caller: caller) { bytes in
                eventLoop.execute {
                    let (handler, context) = bound.value
                    guard context.channel.isActive else { return }
                    if let bytes {
                        handler.sendConsole(bytes, context: context)
                    } else {
                        handler.stopFollowing = nil
                        handler.serving = false
                        let done = context.writeAndFlush(handler.wrapOutboundOut(.end(nil)))
                        if handler.inputClosed || !head.isKeepAlive {
                            let channel = context.channel
                            done.whenComplete { _ in channel.close(promise: nil) }
                        } else {
                            handler.deadline.responseDone()
                        }
                    }
                }
            }
        } catch {
            respond(context: context, head: head, .error(error))
            return
        }
        metrics.countRequest(method: head.method.rawValue, status: 200)
        context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers))), promise: nil)
    }
}
