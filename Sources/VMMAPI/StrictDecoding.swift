/// A coding key for any name: used to list every key an object actually has.
struct AnyCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { return nil }
}

public extension Decoder {
    /// Refuses an object carrying a key outside `Keys`: an ABI that silently ignores
    /// what it does not understand can never give that name a meaning later.
    func rejectUnknownKeys<Keys: CodingKey & CaseIterable>(_ keys: Keys.Type) throws {
        let container = try container(keyedBy: AnyCodingKey.self)
        let known = Set(Keys.allCases.map(\.stringValue))
        let prefix = codingPath.map(\.stringValue).joined(separator: ".")
        for key in container.allKeys.map(\.stringValue).sorted() where !known.contains(key) {
            let path = prefix.isEmpty ? key : prefix + "." + key
            throw APIError(.unknownField, "unknown field '\(path)'", field: path)
        }
    }
}

public extension KeyedDecodingContainer {
    /// The value when the key is there, nil when it is absent. Unlike `decodeIfPresent`,
    /// an explicit `null` is an error: the contract's optional fields are absent or typed.
    ///
    /// A number the type cannot hold (-1, 2.5, 1e300 or 2^64 for an unsigned integer)
    /// comes out of JSONDecoder as an error of its own that names no field; it becomes
    /// `invalid_field` with this key, like any other value out of range.
    func decodeIfGiven<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        guard contains(key) else { return nil }
        do {
            return try decode(T.self, forKey: key)
        } catch let error as DecodingError {
            throw error
        } catch let error as APIError {
            throw error
        } catch {
            let path = fieldPath(codingPath + [key])
            throw APIError(.invalidField, "field '\(path)' must be a whole number in range", field: path)
        }
    }
}
