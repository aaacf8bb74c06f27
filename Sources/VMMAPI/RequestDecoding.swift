import FoundationEssentials

/// Decodes a JSON request (an HTTP body, a handle-socket line, the daemon's
/// configuration) into `T`, turning every decoding failure into an API error with a
/// stable code that names the field. A key given twice is refused, not resolved.
///
/// The codes, one rule: `invalid_json` when the text is not JSON or not the JSON value
/// the endpoint takes (no field); `unknown_field` for a name the server does not know
/// (a body field or a query parameter); `invalid_field` for a known name with a bad
/// value (missing, null, wrong type, out of range, given twice); `reserved_nonzero` for
/// a reserved field or flag that is not zero.
public func decodeRequest<T: Decodable>(_ type: T.Type, from body: [UInt8]) throws(APIError) -> T {
    guard !body.isEmpty else { throw APIError(.invalidJSON, "the request needs a JSON object") }
    if let twice = JSONDuplicateKeys.first(in: body) {
        throw APIError(.invalidField, "field '\(twice)' is given twice", field: twice)
    }
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
        throw APIError(.invalidJSON, "the request is not a valid JSON object")
    }
}

func fieldPath(_ path: [CodingKey]) -> String {
    path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
}
