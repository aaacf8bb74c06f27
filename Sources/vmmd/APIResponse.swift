import FoundationEssentials
import NIOHTTP1
import VMMAPI

/// One complete response of the API.
struct APIResponse: Sendable {
    var status: HTTPResponseStatus
    var contentType: String
    var body: [UInt8]
    /// Headers beyond Content-Type and Content-Length (`Allow` on a 405).
    var headers: [(String, String)] = []

    /// The encoder of every JSON answer (sorted keys, no whitespace): `VMListEncoder`
    /// joins pieces it encoded and must write the same bytes.
    static func jsonEncoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }

    static func json<T: Encodable>(_ value: T, status: HTTPResponseStatus = .ok) -> APIResponse {
        do {
            var body = [UInt8](try jsonEncoder().encode(value))
            body.append(0x0A)
            return APIResponse(status: status, contentType: "application/json", body: body)
        } catch {
            return .error(APIError(.internalError, "cannot encode the response: \(error)"))
        }
    }

    static func error(_ error: APIError) -> APIResponse {
        var response = json(APIErrorBody(error: error), status: HTTPResponseStatus(statusCode: error.code.httpStatus))
        if let allowed = error.allowedMethods { response.headers.append(("Allow", allowed.joined(separator: ", "))) }
        return response
    }

    static func bytes(_ body: [UInt8], contentType: String = "application/octet-stream") -> APIResponse {
        APIResponse(status: .ok, contentType: contentType, body: body)
    }

    static let noContent = APIResponse(status: .noContent, contentType: "application/json", body: [])
}
