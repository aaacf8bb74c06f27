/// Finds an object key given twice in a JSON text (RFC 8259 §4: names "SHOULD be
/// unique"; a decoder that keeps one of them silently lets `{"name":"a","name":"b"}`
/// mean whatever the parser happens to pick). JSONDecoder keeps the first, so the
/// request decoder asks this scanner first and refuses the request instead.
///
/// It walks the text once and checks only its structure: on text that is not JSON it
/// answers nil, and the decoder reports the syntax error. Keys are compared after
/// unescaping (`"n\u0061me"` is `"name"`).
enum JSONDuplicateKeys {
    /// The dotted path of the first repeated key (`quotas.default.vms`, `disks[1].path`).
    static func first(in text: [UInt8]) -> String? {
        var scanner = Scanner(bytes: text)
        do {
            try scanner.value(path: "")
            scanner.skipSpace()
            guard scanner.i == text.count else { return nil }
        } catch {
            return nil
        }
        return scanner.duplicate
    }

    private enum Found: Error { case malformed }

    private struct Scanner {
        let bytes: [UInt8]
        var i = 0
        /// Nesting bound: deeper text is left to the decoder (which refuses it too).
        var depth = 0
        /// The first key found twice; the scan goes on to the end to check it is JSON.
        var duplicate: String?

        init(bytes: [UInt8]) { self.bytes = bytes }

        mutating func skipSpace() {
            while i < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[i]) { i += 1 }
        }

        mutating func value(path: String) throws {
            skipSpace()
            guard i < bytes.count else { throw Found.malformed }
            switch bytes[i] {
            case UInt8(ascii: "{"): try object(path: path)
            case UInt8(ascii: "["): try array(path: path)
            case UInt8(ascii: "\""): _ = try string()
            default:
                // A number or a literal: its syntax is the decoder's business.
                while i < bytes.count, !",]} \t\r\n".utf8.contains(bytes[i]) { i += 1 }
            }
        }

        mutating func object(path: String) throws {
            depth += 1
            guard depth <= 512 else { throw Found.malformed }
            defer { depth -= 1 }
            i += 1
            var seen = Set<[UInt8]>()
            skipSpace()
            if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return }
            while true {
                skipSpace()
                guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw Found.malformed }
                let key = try string()
                let name = String(decoding: key, as: UTF8.self)
                let keyPath = path.isEmpty ? name : path + "." + name
                if !seen.insert(key).inserted, duplicate == nil { duplicate = keyPath }
                skipSpace()
                guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw Found.malformed }
                i += 1
                try value(path: keyPath)
                skipSpace()
                guard i < bytes.count else { throw Found.malformed }
                if bytes[i] == UInt8(ascii: "}") { i += 1; return }
                guard bytes[i] == UInt8(ascii: ",") else { throw Found.malformed }
                i += 1
            }
        }

        mutating func array(path: String) throws {
            depth += 1
            guard depth <= 512 else { throw Found.malformed }
            defer { depth -= 1 }
            i += 1
            skipSpace()
            if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return }
            var index = 0
            while true {
                try value(path: path + "[\(index)]")
                index += 1
                skipSpace()
                guard i < bytes.count else { throw Found.malformed }
                if bytes[i] == UInt8(ascii: "]") { i += 1; return }
                guard bytes[i] == UInt8(ascii: ",") else { throw Found.malformed }
                i += 1
            }
        }

        /// A string starting at the opening quote, unescaped to UTF-8.
        mutating func string() throws -> [UInt8] {
            i += 1
            var out: [UInt8] = []
            while i < bytes.count {
                let b = bytes[i]
                i += 1
                switch b {
                case UInt8(ascii: "\""): return out
                case UInt8(ascii: "\\"):
                    guard i < bytes.count else { throw Found.malformed }
                    let e = bytes[i]
                    i += 1
                    switch e {
                    case UInt8(ascii: "u"):
                        var scalar = try hex4()
                        if (0xD800 ..< 0xDC00).contains(scalar), i + 1 < bytes.count,
                           bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") {
                            i += 2
                            let low = try hex4()
                            guard (0xDC00 ..< 0xE000).contains(low) else { throw Found.malformed }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        }
                        // A lone surrogate cannot be a key JSONDecoder accepts anyway.
                        guard let s = Unicode.Scalar(scalar) else { throw Found.malformed }
                        out += Array(String(Character(s)).utf8)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    default: out.append(e)   // \" \\ \/ (anything else is the decoder's to refuse)
                    }
                default:
                    out.append(b)
                }
            }
            throw Found.malformed
        }

        mutating func hex4() throws -> UInt32 {
            guard i + 4 <= bytes.count, let v = UInt32(String(decoding: bytes[i ..< i + 4], as: UTF8.self), radix: 16) else {
                throw Found.malformed
            }
            i += 4
            return v
        }
    }
}
