/// A gdb thread id as packets spell it: `-1` all threads, `0` any thread, else a
/// positive id (this stub numbers vCPU n as thread n + 1).
public enum ThreadID: Equatable, Sendable {
    case all, any
    case id(Int)

    /// Parses `-1`, `0`, a hex id, or the multiprocess form `pP.T` (the process ignored).
    init?<C: Collection>(_ text: C) where C.Element == UInt8, C.SubSequence: Collection {
        var digits = Array(text)
        if digits.first == UInt8(ascii: "p"), let dot = digits.firstIndex(of: UInt8(ascii: ".")) {
            digits = Array(digits[(dot + 1)...])
        }
        if digits == Array("-1".utf8) { self = .all; return }
        guard let n = PacketCodec.number(digits), n <= UInt64(Int32.max) else { return nil }
        self = n == 0 ? .any : .id(Int(n))
    }
}

/// One action of a `vCont` packet: what to do, and to which threads (nil: all the
/// threads no earlier action named).
public struct VContAction: Equatable, Sendable {
    public enum Kind: Equatable, Sendable { case `continue`, step, stop }
    public let kind: Kind
    public let thread: ThreadID?
}

/// A client packet, parsed (GDB manual, E.2 "Packets", E.4 "General Query Packets").
/// Parsing is pure: the session decides what each one does to the target.
public enum GDBCommand: Equatable, Sendable {
    case haltReason                                   // ?
    case readRegisters                                // g
    case writeRegisters([UInt8])                      // G XX...
    case readRegister(Int)                            // p n
    case writeRegister(Int, [UInt8])                  // P n=r...
    case readMemory(address: UInt64, length: Int)     // m addr,length
    case writeMemory(address: UInt64, bytes: [UInt8]) // M addr,length:XX... and X addr,length:bin
    case resume(step: Bool, address: UInt64?)         // c [addr], s [addr], C sig[;addr], S sig[;addr]
    case vContQuery                                   // vCont?
    case vCont([VContAction])                         // vCont;action[:thread]...
    case setThread(operation: UInt8, ThreadID)        // H op thread
    case threadAlive(ThreadID)                        // T thread
    case insertPoint(type: Int, address: UInt64, kind: Int)  // Z type,addr,kind
    case removePoint(type: Int, address: UInt64, kind: Int)  // z type,addr,kind
    case detach                                       // D, D;pid
    case kill                                         // k
    case vKill                                        // vKill;pid
    case supported([String])                          // qSupported[:features]
    case readFeatures(annex: String, offset: Int, length: Int)  // qXfer:features:read:annex:off,len
    case firstThreadInfo, nextThreadInfo              // qfThreadInfo, qsThreadInfo
    case currentThread                                // qC
    case attached                                     // qAttached[:pid]
    case threadExtraInfo(ThreadID)                    // qThreadExtraInfo,thread
    case monitor(String)                              // qRcmd,hex
    case startNoAckMode                               // QStartNoAckMode
    case symbolLookup                                 // qSymbol::
    /// Well formed but not something this stub does: answered with an empty packet.
    case unsupported
    /// A known packet whose arguments do not parse: answered with an error.
    case malformed(String)

    /// The most bytes one `m`/`M`/`X` may move (the reply must fit `PacketSize`).
    public static let maxTransfer = 8192

    public static func parse(_ raw: [UInt8]) -> GDBCommand {
        guard let head = raw.first else { return .unsupported }
        let rest = raw.dropFirst()
        let text = String(decoding: raw, as: UTF8.self)
        switch head {
        case UInt8(ascii: "?"): return .haltReason
        case UInt8(ascii: "g"): return rest.isEmpty ? .readRegisters : .malformed("g takes no argument")
        case UInt8(ascii: "G"):
            guard let bytes = PacketCodec.unhex(rest) else { return .malformed("G needs hex register data") }
            return .writeRegisters(bytes)
        case UInt8(ascii: "p"):
            guard let n = PacketCodec.number(rest), n < 4096 else { return .malformed("p needs a register number") }
            return .readRegister(Int(n))
        case UInt8(ascii: "P"):
            let parts = rest.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, let n = PacketCodec.number(parts[0]), n < 4096,
                  let value = PacketCodec.unhex(parts[1]), !value.isEmpty else { return .malformed("P needs n=value") }
            return .writeRegister(Int(n), value)
        case UInt8(ascii: "m"):
            guard let (address, length) = addressAndLength(rest) else { return .malformed("m needs addr,length") }
            return .readMemory(address: address, length: length)
        case UInt8(ascii: "M"), UInt8(ascii: "X"):
            guard let colon = rest.firstIndex(of: UInt8(ascii: ":")),
                  let (address, length) = addressAndLength(rest[rest.startIndex ..< colon]) else {
                return .malformed("\(Character(UnicodeScalar(head))) needs addr,length:data")
            }
            let data = rest[(colon + 1)...]
            let bytes = head == UInt8(ascii: "M") ? PacketCodec.unhex(data) : PacketCodec.unescape(data)
            guard let bytes, bytes.count == length else { return .malformed("the data is not the length given") }
            return .writeMemory(address: address, bytes: bytes)
        case UInt8(ascii: "c"), UInt8(ascii: "s"):
            let step = head == UInt8(ascii: "s")
            if rest.isEmpty { return .resume(step: step, address: nil) }
            guard let address = PacketCodec.number(rest) else { return .malformed("bad resume address") }
            return .resume(step: step, address: address)
        case UInt8(ascii: "C"), UInt8(ascii: "S"):
            // A signal means nothing to a machine: C and S resume as c and s.
            let step = head == UInt8(ascii: "S")
            let parts = rest.split(separator: UInt8(ascii: ";"), maxSplits: 1, omittingEmptySubsequences: false)
            guard let signal = parts.first, PacketCodec.number(signal) != nil else { return .malformed("bad signal") }
            guard parts.count == 2 else { return .resume(step: step, address: nil) }
            guard let address = PacketCodec.number(parts[1]) else { return .malformed("bad resume address") }
            return .resume(step: step, address: address)
        case UInt8(ascii: "H"):
            guard let op = rest.first, let thread = ThreadID(rest.dropFirst()) else { return .malformed("H needs op and thread") }
            return .setThread(operation: op, thread)
        case UInt8(ascii: "T"):
            guard let thread = ThreadID(rest) else { return .malformed("T needs a thread") }
            return .threadAlive(thread)
        case UInt8(ascii: "Z"), UInt8(ascii: "z"):
            let fields = rest.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false)
            // Conditions and commands (";X...") after the kind are not supported: cut them.
            guard fields.count >= 3, let type = PacketCodec.number(fields[0]), type <= 4,
                  let address = PacketCodec.number(fields[1]),
                  let kind = PacketCodec.number(fields[2].split(separator: UInt8(ascii: ";")).first ?? []),
                  kind <= 1 << 20 else { return .malformed("\(Character(UnicodeScalar(head))) needs type,addr,kind") }
            return head == UInt8(ascii: "Z") ? .insertPoint(type: Int(type), address: address, kind: Int(kind))
                : .removePoint(type: Int(type), address: address, kind: Int(kind))
        case UInt8(ascii: "D"): return .detach
        case UInt8(ascii: "k"): return .kill
        default: break
        }
        if text == "vCont?" { return .vContQuery }
        if text.hasPrefix("vCont;") { return parseVCont(text) }
        if text.hasPrefix("vKill") { return .vKill }
        if text == "qSupported" { return .supported([]) }
        if text.hasPrefix("qSupported:") {
            return .supported(text.dropFirst("qSupported:".count).split(separator: ";").map(String.init))
        }
        if text.hasPrefix("qXfer:features:read:") { return parseFeatures(text) }
        if text == "qfThreadInfo" { return .firstThreadInfo }
        if text == "qsThreadInfo" { return .nextThreadInfo }
        if text == "qC" { return .currentThread }
        if text == "qAttached" || text.hasPrefix("qAttached:") { return .attached }
        if text.hasPrefix("qThreadExtraInfo,") {
            guard let thread = ThreadID(Array(text.utf8).dropFirst("qThreadExtraInfo,".count)) else {
                return .malformed("qThreadExtraInfo needs a thread")
            }
            return .threadExtraInfo(thread)
        }
        if text.hasPrefix("qRcmd,") {
            guard let bytes = PacketCodec.unhex(Array(text.utf8).dropFirst("qRcmd,".count)) else {
                return .malformed("qRcmd needs hex")
            }
            return .monitor(String(decoding: bytes, as: UTF8.self))
        }
        if text == "QStartNoAckMode" { return .startNoAckMode }
        if text.hasPrefix("qSymbol") { return .symbolLookup }
        return .unsupported
    }

    private static func addressAndLength<C: Collection>(_ text: C) -> (UInt64, Int)? where C.Element == UInt8 {
        let parts = text.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false)
        guard parts.count == 2, let address = PacketCodec.number(parts[0]), let length = PacketCodec.number(parts[1]),
              length <= UInt64(maxTransfer) else { return nil }
        return (address, Int(length))
    }

    private static func parseVCont(_ text: String) -> GDBCommand {
        var actions: [VContAction] = []
        for item in text.dropFirst("vCont;".count).split(separator: ";", omittingEmptySubsequences: false) {
            let parts = item.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            guard let action = parts.first, let letter = action.first else { return .malformed("empty vCont action") }
            let kind: VContAction.Kind
            switch letter {
            case "c": kind = .continue
            case "s": kind = .step
            case "t": kind = .stop
            case "C", "S":
                // The signal is ignored (see C and S), but it must be there.
                guard action.count > 1, PacketCodec.number(Array(action.dropFirst().utf8)) != nil else {
                    return .malformed("vCont \(letter) needs a signal")
                }
                kind = letter == "C" ? .continue : .step
            default: return .malformed("unknown vCont action \(action)")
            }
            if letter != "C" && letter != "S" && action.count != 1 { return .malformed("unknown vCont action \(action)") }
            var thread: ThreadID?
            if parts.count == 2 {
                guard let t = ThreadID(Array(parts[1].utf8)) else { return .malformed("bad vCont thread \(parts[1])") }
                thread = t
            }
            actions.append(VContAction(kind: kind, thread: thread))
        }
        return actions.isEmpty ? .malformed("vCont without actions") : .vCont(actions)
    }

    private static func parseFeatures(_ text: String) -> GDBCommand {
        let args = text.dropFirst("qXfer:features:read:".count)
        guard let colon = args.lastIndex(of: ":") else { return .malformed("qXfer needs annex:offset,length") }
        // The length is what the client can take; the reply is cut to what the stub sends.
        let range = args[args.index(after: colon)...].split(separator: ",", omittingEmptySubsequences: false)
        guard range.count == 2, let offset = PacketCodec.number(Array(range[0].utf8)), offset <= UInt64(Int32.max),
              let length = PacketCodec.number(Array(range[1].utf8)) else {
            return .malformed("qXfer needs offset,length")
        }
        return .readFeatures(annex: String(args[..<colon]), offset: Int(offset), length: Int(min(length, UInt64(maxTransfer))))
    }
}
