/// The Multiboot (version 0.6.96) header of an OS image (Multiboot Specification, 3.1
/// "OS image format"): magic 0x1BADB002, flags and checksum, 4-byte aligned in the first
/// 8 KiB, with the a.out kludge's addresses when flag 16 is set.
public struct MultibootHeader: Sendable, Equatable {
    public static let magic: UInt32 = 0x1BAD_B002
    /// Where a boot loader searches for the header.
    public static let searchLimit = 8192

    // Flags (3.1.2). Bits 0-15 are requirements: one the loader does not know is fatal.
    public static let pageAlignModules: UInt32 = 1 << 0
    public static let memoryInfo: UInt32 = 1 << 1
    public static let videoMode: UInt32 = 1 << 2
    public static let aoutKludge: UInt32 = 1 << 16
    static let knownRequirements: UInt32 = pageAlignModules | memoryInfo | videoMode

    /// The a.out kludge (3.1.3): where the file goes in memory and where it starts.
    public struct Addresses: Sendable, Equatable {
        public let header: UInt32
        public let load: UInt32
        public let loadEnd: UInt32
        public let bssEnd: UInt32
        public let entry: UInt32
    }

    /// The header's offset in the file.
    public let offset: Int
    public let flags: UInt32
    public let addresses: Addresses?

    /// The offset of the first 4-aligned magic with a valid checksum in the first 8 KiB.
    public static func find(in image: [UInt8]) -> Int? {
        let r = ByteReader(bytes: image)
        for at in stride(from: 0, to: min(image.count, searchLimit), by: 4) {
            guard let m = try? r.u32(at, ""), m == magic,
                  let flags = try? r.u32(at + 4, ""), let sum = try? r.u32(at + 8, "") else { continue }
            if m &+ flags &+ sum == 0 { return at }
        }
        return nil
    }

    public init(image: [UInt8]) throws {
        guard let at = Self.find(in: image) else {
            throw BootError.badFormat("no multiboot header (magic 0x1BADB002 with a valid checksum) in the first 8 KiB")
        }
        let r = ByteReader(bytes: image)
        offset = at
        flags = try r.u32(at + 4, "multiboot header")
        let unknown = flags & 0xFFFF & ~Self.knownRequirements
        guard unknown == 0 else {
            throw BootError.badFormat("multiboot header requires features 0x\(String(unknown, radix: 16)) this loader does not know")
        }
        guard flags & Self.aoutKludge != 0 else { addresses = nil; return }
        let a = Addresses(header: try r.u32(at + 12, "multiboot address fields"), load: try r.u32(at + 16, "multiboot address fields"),
                          loadEnd: try r.u32(at + 20, "multiboot address fields"), bssEnd: try r.u32(at + 24, "multiboot address fields"),
                          entry: try r.u32(at + 28, "multiboot address fields"))
        guard a.load <= a.header, UInt64(a.header - a.load) <= UInt64(at) else {
            throw BootError.implausible("multiboot header_addr 0x\(String(a.header, radix: 16)) / load_addr 0x\(String(a.load, radix: 16)) put the load start before the file")
        }
        guard a.loadEnd == 0 || a.loadEnd > a.load else {
            throw BootError.implausible("multiboot load_end_addr 0x\(String(a.loadEnd, radix: 16)) is below load_addr")
        }
        guard a.bssEnd == 0 || a.bssEnd >= max(a.loadEnd, a.load) else {
            throw BootError.implausible("multiboot bss_end_addr 0x\(String(a.bssEnd, radix: 16)) is below the loaded image")
        }
        addresses = a
    }

    /// For the a.out kludge: the file range to copy and where, and the bss to clear.
    func aoutLayout(fileSize: Int) throws -> (fileOffset: Int, address: UInt64, size: UInt64, bssEnd: UInt64)? {
        guard let a = addresses else { return nil }
        let fileOffset = offset - Int(a.header - a.load)
        let size = a.loadEnd == 0 ? UInt64(fileSize - fileOffset) : UInt64(a.loadEnd - a.load)
        guard UInt64(fileOffset) + size <= UInt64(fileSize) else {
            throw BootError.truncated("the multiboot image (load_end_addr - load_addr = \(size) bytes)")
        }
        let end = UInt64(a.load) + size
        return (fileOffset, UInt64(a.load), size, a.bssEnd == 0 ? end : max(end, UInt64(a.bssEnd)))
    }
}
