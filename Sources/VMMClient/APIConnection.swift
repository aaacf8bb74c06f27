import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOHTTP1
import NIOPosix
import VMMAPI

/// An HTTP/1.1 connection to vmmd's Unix socket. Requests on one connection go one at a
/// time (await each); the connection stays open between them, which is what the
/// `connection` lifetime ties a VM to.
public final class APIConnection: Sendable {
    let channel: Channel
    let handler: NIOLoopBound<ResponseHandler>

    /// The default socket, as vmmd's.
    public static let defaultSocket = "/run/vmm/vmmd.sock"

    private init(channel: Channel, handler: NIOLoopBound<ResponseHandler>) {
        self.channel = channel
        self.handler = handler
    }

    /// Connects to `socketPath`.
    public static func connect(socketPath: String = defaultSocket) async throws -> APIConnection {
        let group = MultiThreadedEventLoopGroup.singleton
        let channel: Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(ResponseHandler())
                    }
                }
                .connect(unixDomainSocketPath: socketPath).get()
        } catch let error as IOError {
            throw ClientError.cannotConnect(socketPath, String(cString: strerror(error.errnoCode)))
        } catch {
            throw ClientError.cannotConnect(socketPath, "\(error)")
        }
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(try channel.pipeline.syncOperations.handler(type: ResponseHandler.self), eventLoop: channel.eventLoop)
        }.get()
        return APIConnection(channel: channel, handler: handler)
    }

    /// Sends a request and waits for the whole response.
    public func request(_ method: HTTPMethod, _ path: String, body: [UInt8]? = nil) async throws -> APIResult {
        try await exchange(method, path, body: body, onBody: nil)
    }

    /// Sends a request whose response is a stream: `onChunk` gets each piece of the body
    /// as it arrives. Returns when the server ends the response or the connection closes.
    public func stream(_ method: HTTPMethod, _ path: String, onChunk: @escaping @Sendable ([UInt8]) -> Void) async throws -> APIResult {
        try await exchange(method, path, body: nil, onBody: onChunk)
    }

    private func exchange(_ method: HTTPMethod, _ path: String, body: [UInt8]?,
                          onBody: (@Sendable ([UInt8]) -> Void)?) async throws -> APIResult {
        let promise = channel.eventLoop.makePromise(of: APIResult.self)
        let channel = self.channel, handler = self.handler
        channel.eventLoop.execute {
            handler.value.begin(promise, onBody: onBody)
            var headers = HTTPHeaders()
            headers.add(name: "Host", value: "vmm")
            if let body {
                headers.add(name: "Content-Type", value: "application/json")
                headers.add(name: "Content-Length", value: String(body.count))
            } else if method == .POST {
                headers.add(name: "Content-Length", value: "0")
            }
            let head = HTTPRequestHead(version: .http1_1, method: method, uri: path, headers: headers)
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            if let body, !body.isEmpty {
                channel.write(HTTPClientRequestPart.body(.byteBuffer(channel.allocator.buffer(bytes: body))), promise: nil)
            }
            channel.writeAndFlush(HTTPClientRequestPart.end(nil)).whenFailure { promise.fail($0) }
        }
        return try await promise.futureResult.get()
    }

    /// Sends a JSON body and decodes a JSON answer; an error response throws its APIError.
    public func call<Response: Decodable>(_ method: HTTPMethod, _ path: String, json: [UInt8]? = nil,
                                          as type: Response.Type) async throws -> Response {
        let result = try await request(method, path, body: json)
        try result.throwIfError()
        do {
            return try JSONDecoder().decode(Response.self, from: Data(result.body))
        } catch {
            throw ClientError.badResponse("cannot decode the answer to \(method) \(path): \(error)")
        }
    }

    public func close() async {
        try? await channel.close().get()
    }

    /// Completes when the server closes the connection.
    public var closed: EventLoopFuture<Void> { channel.closeFuture }
}

/// A complete response.
public struct APIResult: Sendable {
    public var status: Int
    public var body: [UInt8]

    public var text: String { String(decoding: body, as: UTF8.self) }

    /// Throws the API's error when the status is not 2xx.
    public func throwIfError() throws {
        guard !(200 ..< 300).contains(status) else { return }
        if let body = try? JSONDecoder().decode(APIErrorBody.self, from: Data(body)) { throw body.error }
        throw ClientError.badResponse("HTTP \(status): \(text)")
    }
}

public enum ClientError: Error, CustomStringConvertible {
    case cannotConnect(String, String)
    case badResponse(String)
    case connectionClosed

    public var description: String {
        switch self {
        case .cannotConnect(let path, let why): return "cannot connect to vmmd at \(path): \(why)"
        case .badResponse(let why): return why
        case .connectionClosed: return "vmmd closed the connection"
        }
    }
}

/// Collects one response at a time (event loop only).
final class ResponseHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private var promise: EventLoopPromise<APIResult>?
    private var onBody: (@Sendable ([UInt8]) -> Void)?
    private var status = 0
    private var body: [UInt8] = []

    func begin(_ promise: EventLoopPromise<APIResult>, onBody: (@Sendable ([UInt8]) -> Void)?) {
        self.promise = promise
        self.onBody = onBody
        status = 0
        body = []
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
        case .body(var buffer):
            let bytes = buffer.readBytes(length: buffer.readableBytes) ?? []
            if let onBody, (200 ..< 300).contains(status) { onBody(bytes) } else { body += bytes }
        case .end:
            let result = APIResult(status: status, body: body)
            let p = promise
            promise = nil
            onBody = nil
            p?.succeed(result)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise?.fail(ClientError.connectionClosed)
        promise = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        promise?.fail(error)
        promise = nil
        context.close(promise: nil)
    }
}
