/// The stable, machine-readable error codes of the API. Clients switch on these; the
/// message is for humans and may change.
public enum APIErrorCode: String, Codable, Sendable, CaseIterable {
    /// The body is not JSON, or not the JSON object the endpoint takes.
    case invalidJSON = "invalid_json"
    /// The body has a field, or the URI a query parameter, this server does not know
    /// (never ignored: the ABI rule).
    case unknownField = "unknown_field"
    /// A known field or query parameter is missing, null, of the wrong type, out of
    /// range, or given twice.
    case invalidField = "invalid_field"
    /// A reserved field or flag bit is non-zero.
    case reservedNonZero = "reserved_nonzero"
    /// The caller already has a VM with this name.
    case nameTaken = "name_taken"
    /// No such VM for this caller (another user's VM also answers this).
    case notFound = "not_found"
    /// No such endpoint.
    case noRoute = "no_route"
    case methodNotAllowed = "method_not_allowed"
    /// The action does not apply in the VM's current state.
    case invalidState = "invalid_state"
    /// The kernel or initrd cannot be opened by the caller, or the image was refused.
    case imageRejected = "image_rejected"
    /// The caller may not do this (e.g. change a system VM).
    case forbidden = "forbidden"
    /// A per-user limit would be exceeded.
    case quotaExceeded = "quota_exceeded"
    case payloadTooLarge = "payload_too_large"
    /// The daemon or a worker failed.
    case internalError = "internal_error"

    /// The HTTP status that goes with the code.
    public var httpStatus: Int {
        switch self {
        case .invalidJSON, .unknownField, .invalidField, .reservedNonZero: return 400
        case .forbidden: return 403
        case .notFound, .noRoute: return 404
        case .methodNotAllowed: return 405
        case .nameTaken, .invalidState: return 409
        case .payloadTooLarge: return 413
        case .imageRejected: return 422
        case .quotaExceeded: return 429
        case .internalError: return 500
        }
    }
}

/// An API error: what goes back to the client as `{"error": {...}}`.
public struct APIError: Error, Codable, Sendable, Equatable, CustomStringConvertible {
    public var code: APIErrorCode
    public var message: String
    /// The request field at fault, when there is one (JSON name).
    public var field: String?
    /// For `method_not_allowed`: the methods the path takes (the response's `Allow`
    /// header, RFC 9110 §15.5.6); not part of the JSON body.
    public var allowedMethods: [String]?

    public init(_ code: APIErrorCode, _ message: String, field: String? = nil, allowedMethods: [String]? = nil) {
        self.code = code; self.message = message; self.field = field; self.allowedMethods = allowedMethods
    }

    enum CodingKeys: String, CodingKey { case code, message, field }

    public var description: String { "\(code.rawValue): \(message)" }
}

/// The body of every error response.
public struct APIErrorBody: Codable, Sendable {
    public var error: APIError
    public init(error: APIError) { self.error = error }
}
