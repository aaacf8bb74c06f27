/// The byte-level rules of the GDB remote serial protocol (GDB manual, appendix E.1
/// "Overview"): `$data#cs` framing with a modulo-256 checksum, `}`-escaping of binary
/// data, run-length encoding of replies, and the hex encodings packets are made of.
public enum PacketCodec {
    public static let start = UInt8(ascii: "$"), end = UInt8(ascii: "#"), escape = UInt8(ascii: "}")
    public static let repeatMark = UInt8(ascii: "*"), ack = UInt8(ascii: "+"), nack = UInt8(ascii: "-")
    /// Ctrl-C outside a packet: stop the target.
    public static let interrupt: UInt8 = 0x03

    /// The sum of the bytes modulo 256.
    public static func checksum<C: Collection>(_ bytes: C) -> UInt8 where C.Element == UInt8 {
        bytes.reduce(0) { $0 &+ $1 }
    }

    /// `$payload#cs`: the payload goes as is (escape and compress it first).
    public static func frame(_ payload: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [start]
        out.reserveCapacity(payload.count + 4)
        out += payload
        out.append(end)
        out += hexByte(checksum(payload))
        return out
    }

    /// Escapes `$`, `#`, `}` and `*` as `}` + (byte ^ 0x20), for binary data.
    public static func escape(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        for b in bytes {
            if b == start || b == end || b == escape || b == repeatMark {
                out.append(escape)
                out.append(b ^ 0x20)
            } else {
                out.append(b)
            }
        }
        return out
    }

    /// Undoes `escape`; nil when the data ends in the middle of an escape.
    public static func unescape<C: Collection>(_ bytes: C) -> [UInt8]? where C.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var escaped = false
        for b in bytes {
            if escaped {
                out.append(b ^ 0x20)
                escaped = false
            } else if b == escape {
                escaped = true
            } else {
                out.append(b)
            }
        }
        return escaped ? nil : out
    }

    /// Run-length encodes a reply: a run of n >= 4 equal bytes becomes the byte, `*`,
    /// and (n - 1) + 29 as a printable count. Counts that would print as `#` or `$`
    /// (runs of 7 and 8) are cut to 6, and a count never passes 126 (runs of 98), as
    /// the manual requires. Only for text replies: an escaped binary byte must not be
    /// repeated apart from its `}`.
    public static func runLengthEncode(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            var run = 1
            while i + run < bytes.count && bytes[i + run] == b && run < 98 { run += 1 }
            if run == 7 || run == 8 { run = 6 }
            if run >= 4 {
                out.append(b)
                out.append(repeatMark)
                out.append(UInt8(run - 1 + 29))
            } else {
                out += repeatElement(b, count: run)
            }
            i += run
        }
        return out
    }

    /// Expands `runLengthEncode`'s form (what a client does with a reply); nil when a
    /// `*` has no byte before it or no count after it, or the count is out of range.
    public static func runLengthDecode(_ bytes: [UInt8]) -> [UInt8]? {
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            if b == repeatMark {
                guard let last = out.last, i + 1 < bytes.count else { return nil }
                let count = Int(bytes[i + 1]) - 29
                guard count >= 0, bytes[i + 1] <= 126 else { return nil }
                out += repeatElement(last, count: count)
                i += 2
            } else {
                out.append(b)
                i += 1
            }
        }
        return out
    }

    // MARK: - Hex

    private static let digits = Array("0123456789abcdef".utf8)

    public static func hexByte(_ b: UInt8) -> [UInt8] { [digits[Int(b >> 4)], digits[Int(b & 0xF)]] }

    /// Bytes as two lowercase hex digits each.
    public static func hex<C: Sequence>(_ bytes: C) -> [UInt8] where C.Element == UInt8 {
        var out: [UInt8] = []
        for b in bytes { out += hexByte(b) }
        return out
    }

    /// Text as hex (`O` packets, `qThreadExtraInfo`, `qRcmd`).
    public static func hex(_ text: String) -> [UInt8] { hex(Array(text.utf8)) }

    public static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0") ... UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a") ... UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A") ... UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// Pairs of hex digits as bytes; nil for an odd count or a non-hex digit.
    public static func unhex<C: Collection>(_ text: C) -> [UInt8]? where C.Element == UInt8 {
        guard text.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(text.count / 2)
        var high: UInt8?
        for c in text {
            guard let n = nibble(c) else { return nil }
            if let h = high {
                out.append(h << 4 | n)
                high = nil
            } else {
                high = n
            }
        }
        return out
    }

    /// A big-endian hex number (addresses, lengths, register numbers) of 1 to 16 digits.
    public static func number<C: Collection>(_ text: C) -> UInt64? where C.Element == UInt8 {
        guard !text.isEmpty, text.count <= 16 else { return nil }
        var value: UInt64 = 0
        for c in text {
            guard let n = nibble(c) else { return nil }
            value = value << 4 | UInt64(n)
        }
        return value
    }

    /// A number in big-endian hex without leading zeros.
    public static func hexNumber(_ value: UInt64) -> [UInt8] { Array(String(value, radix: 16).utf8) }
}
