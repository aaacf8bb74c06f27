/// One disk of a create request (`disks` in `POST /v1/vms`): a raw image the VM sees as
/// a virtio-blk device, in list order (the first is the root disk, /dev/vda).
public struct DiskRequest: Codable, Sendable, Equatable {
    /// Absolute path of a regular file, or of a block device the caller owns; opened
    /// with the caller's permissions (read-write needs write permission).
    public var path: String
    public var readOnly: Bool
    /// What the guest reads with GET_ID: at most 20 printable ASCII characters.
    public var serial: String
    /// Open with O_DIRECT (no host page cache).
    public var direct: Bool

    public init(path: String, readOnly: Bool = false, serial: String = "", direct: Bool = false) {
        self.path = path; self.readOnly = readOnly; self.serial = serial; self.direct = direct
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case path, readOnly = "read_only", serial, direct
    }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        path = try c.decode(String.self, forKey: .path)
        readOnly = try c.decodeIfGiven(Bool.self, forKey: .readOnly) ?? false
        serial = try c.decodeIfGiven(String.self, forKey: .serial) ?? ""
        direct = try c.decodeIfGiven(Bool.self, forKey: .direct) ?? false
    }

    /// Most disks per VM (each is a descriptor handed to the worker with the setup).
    public static let maxDisks = 8
    public static let maxSerialLength = 20

    /// Checks the list: the count, each path and serial, and that no image is attached
    /// twice where either attachment may write it.
    public static func validate(_ disks: [DiskRequest]) throws(APIError) {
        guard disks.count <= maxDisks else {
            throw APIError(.invalidField, "at most \(maxDisks) disks", field: "disks")
        }
        for (i, disk) in disks.enumerated() {
            let field = "disks[\(i)]"
            try CreateVMRequest.validatePath(disk.path, field: field + ".path")
            guard disk.serial.utf8.count <= maxSerialLength, disk.serial.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                throw APIError(.invalidField, "\(field).serial must be at most \(maxSerialLength) printable ASCII characters without spaces",
                               field: field + ".serial")
            }
        }
    }
}
