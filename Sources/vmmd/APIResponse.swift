import Foundation
import NIOHTTP1
import VMMAPI

/// One complete response of the API.
struct APIResponse: Sendable {
    var status: HTTPResponseStatus
    var contentType: String
    var body: [UInt8]

    static func json<T: Encodable>(_ value: T, status: HTTPResponseStatus = .ok) -> APIResponse {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        do {
            var body = [UInt8](try encoder.encode(value))
            body.append(0x0A)
            return APIResponse(status: status, contentType: "application/json", body: body)
        } catch {
            return .error(APIError(.internalError, "cannot encode the response: \(error)"))
        }
    }

    static func error(_ error: APIError) -> APIResponse {
        json(APIErrorBody(error: error), status: HTTPResponseStatus(statusCode: error.code.httpStatus))
    }

    static func bytes(_ body: [UInt8], contentType: String = "application/octet-stream") -> APIResponse {
        APIResponse(status: .ok, contentType: contentType, body: body)
    }

    static let noContent = APIResponse(status: .noContent, contentType: "application/json", body: [])
}

/// Decodes a JSON request body into `T`, turning every decoding failure into an API
/// error that names the field.
func decodeBody<T: Decodable>(_ type: T.Type, from body: [UInt8]) throws(APIError) -> T {
    guard !body.isEmpty else { throw APIError(.invalidJSON, "the request needs a JSON body") }
    do {
        return try JSONDecoder().decode(T.self, from: Data(body))
    } catch let error as APIError {
        throw error
    } catch let DecodingError.keyNotFound(key, context) {
        let path = fieldPath(context.codingPath + [key])
        throw APIError(.invalidField, "missing field '\(path)'", field: path)
    } catch let DecodingError.typeMismatch(_, context) where !context.codingPath.isEmpty {
        let path = fieldPath(context.codingPath)
        throw APIError(.invalidField, "field '\(path)' has the wrong type", field: path)
    } catch let DecodingError.valueNotFound(_, context) {
        let path = fieldPath(context.codingPath)
        throw APIError(.invalidField, "field '\(path)' must not be null", field: path)
    } catch let DecodingError.dataCorrupted(context) where !context.codingPath.isEmpty {
        let path = fieldPath(context.codingPath)
        throw APIError(.invalidField, "field '\(path)' has an invalid value", field: path)
    } catch {
        throw APIError(.invalidJSON, "the body is not a valid JSON object")
    }
}

private func fieldPath(_ path: [CodingKey]) -> String {
    path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
}
