/// The vsock device of a create request (`vsock` in `POST /v1/vms`): the guest's CID
/// and the Unix socket host processes connect to (Firecracker's hybrid vsock: they send
/// `CONNECT <port>\n` and read `OK <host port>\n`); a connection the guest opens to host
/// port P goes to the Unix socket `<socket>_P`.
public struct VsockRequest: Codable, Sendable, Equatable {
    /// The guest's context ID: 3 ... 4294967294.
    public var cid: UInt64
    /// Absolute path where vmmd creates the listening socket, with the caller's
    /// permissions (it must not exist, or be a socket nobody listens on).
    public var socket: String

    public init(cid: UInt64, socket: String) { self.cid = cid; self.socket = socket }

    enum CodingKeys: String, CodingKey, CaseIterable { case cid, socket }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        cid = try c.decode(UInt64.self, forKey: .cid)
        socket = try c.decode(String.self, forKey: .socket)
    }

    /// sockaddr_un holds 107 bytes; `<socket>_4294967295` must fit too. Counted in
    /// characters, as the contract's maxLength; a path whose bytes do not fit fails when
    /// the socket is created (422).
    public static let maxSocketPath = 107 - 11

    public func validate() throws(APIError) {
        guard cid >= 3, cid < 0xFFFF_FFFF else {
            throw APIError(.invalidField, "vsock.cid must be between 3 and 4294967294 (0-2 are reserved, -1 is VMADDR_CID_ANY)", field: "vsock.cid")
        }
        try CreateVMRequest.validatePath(socket, field: "vsock.socket")
        guard socket.unicodeScalars.count <= Self.maxSocketPath else {
            throw APIError(.invalidField, "vsock.socket must be at most \(Self.maxSocketPath) bytes (with _PORT it must fit a sockaddr_un)",
                           field: "vsock.socket")
        }
    }
}

/// One network device of a create request (`net` in `POST /v1/vms`): a virtio-net
/// device on an existing tap the caller owns (the tap's owner or group, as set with
/// TUNSETOWNER/TUNSETGROUP, e.g. `ip tuntap add NAME mode tap user USER`).
public struct NetRequest: Codable, Sendable, Equatable {
    public var tap: String
    /// The guest's MAC address; vmmd picks one (52:54:00:xx:xx:xx) when it is absent.
    public var mac: String?

    public init(tap: String, mac: String? = nil) { self.tap = tap; self.mac = mac }

    enum CodingKeys: String, CodingKey, CaseIterable { case tap, mac }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        tap = try c.decode(String.self, forKey: .tap)
        mac = try c.decodeIfGiven(String.self, forKey: .mac)
    }

    public static let maxDevices = 8

    public static func validate(_ list: [NetRequest]) throws(APIError) {
        guard list.count <= maxDevices else { throw APIError(.invalidField, "at most \(maxDevices) network devices", field: "net") }
        for (i, n) in list.enumerated() {
            let field = "net[\(i)]"
            let name = Array(n.tap.utf8)
            let allowed = { (b: UInt8) in
                (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2E || b == 0x5F || b == 0x2D
            }
            // "." and ".." pass here and name no tap when opened (422).
            guard (1 ... 15).contains(name.count), name.allSatisfy(allowed) else {
                throw APIError(.invalidField, "\(field).tap must be an interface name: 1-15 of [A-Za-z0-9._-]", field: field + ".tap")
            }
            if let mac = n.mac, !Self.isUnicastMAC(mac) {
                throw APIError(.invalidField, "\(field).mac must be six hex octets of a unicast address (52:54:00:12:34:56)",
                               field: field + ".mac")
            }
        }
    }

    /// `xx:xx:xx:xx:xx:xx` in hex, the first octet even (not multicast).
    public static func isUnicastMAC(_ text: String) -> Bool {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6, parts.allSatisfy({ $0.count == 2 && UInt8($0, radix: 16) != nil }),
              let first = UInt8(parts[0], radix: 16) else { return false }
        return first & 1 == 0
    }
}
