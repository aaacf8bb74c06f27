import CSys
#if canImport(Glibc)
import Glibc
#endif

/// A tap interface behind a virtio-net device: a /dev/net/tun descriptor attached with
/// IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, so that every frame read or written carries a
/// virtio-net header (12 bytes, TUNSETVNETHDRSZ) and the kernel does the checksum and
/// segmentation offloads the header asks for (TUNSETOFFLOAD).
public final class TapDevice: Sendable {
    /// The descriptor (non-blocking), owned by the tap.
    public let fd: Int32
    /// The interface's name (TUNGETIFF).
    public let name: String

    // <linux/if_tun.h>
    static let iffTap: UInt32 = 0x0002, iffNoPI: UInt32 = 0x1000, iffVnetHeader: UInt32 = 0x4000
    /// TUNSETOFFLOAD bits.
    public enum Offload {
        public static let checksum: UInt32 = 0x01, tso4: UInt32 = 0x02, tso6: UInt32 = 0x04, tsoECN: UInt32 = 0x08
    }

    /// Adopts a tap descriptor (opened by this process or handed over by a supervisor):
    /// it must be a tap with IFF_NO_PI and IFF_VNET_HDR. Sets the header size and
    /// non-blocking mode. Closes `fd` when it refuses it.
    public init(adopting fd: Int32) throws(DeviceError) {
        var raw = [CChar](repeating: 0, count: 16)
        var flags: UInt32 = 0
        let rc = csys_tap_info(fd, &raw, &flags)
        guard rc == 0 else {
            close(fd)
            throw .system(operation: "TUNGETIFF (is it a tap descriptor?)", errno: -rc)
        }
        let wanted = Self.iffTap | Self.iffNoPI | Self.iffVnetHeader
        guard flags & wanted == wanted else {
            close(fd)
            throw .invalid("the descriptor is not a tap with IFF_NO_PI and IFF_VNET_HDR (flags 0x\(String(flags, radix: 16)))")
        }
        let status = fcntl(fd, F_GETFL)
        let header = csys_tap_set_vnet_header_size(fd, Int32(NetDevice.headerSize))
        guard status >= 0, fcntl(fd, F_SETFL, status | O_NONBLOCK) == 0, header == 0 else {
            let e = header != 0 ? -header : errno
            close(fd)
            throw .system(operation: "TUNSETVNETHDRSZ/O_NONBLOCK", errno: e)
        }
        self.fd = fd
        name = String(decoding: raw.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Opens the tap `name` (TUNSETIFF). The interface is created if it does not exist
    /// and the caller may (CAP_NET_ADMIN); an existing persistent tap needs its owner
    /// or group, or CAP_NET_ADMIN.
    public static func open(name: String) throws(DeviceError) -> TapDevice {
        let fd = csys_tap_open(name)
        guard fd >= 0 else { throw .system(operation: "opening tap \(name)", errno: -fd) }
        return try TapDevice(adopting: fd)
    }

    deinit { close(fd) }

    /// TUNSETOFFLOAD.
    public func setOffload(_ offloads: UInt32) throws(DeviceError) {
        let rc = csys_tap_set_offload(fd, offloads)
        guard rc == 0 else { throw .system(operation: "TUNSETOFFLOAD", errno: -rc) }
    }
}

/// An Ethernet MAC address.
public struct MACAddress: Sendable, Equatable, CustomStringConvertible {
    public let bytes: [UInt8]

    /// Parses `52:54:00:12:34:56` (six hex octets, `:` or `-`); nil for anything else,
    /// including multicast addresses, which no interface may have.
    public init?(_ text: String) {
        let parts = text.split(separator: text.contains("-") ? "-" : ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var bytes: [UInt8] = []
        for p in parts {
            guard p.count == 2, let b = UInt8(p, radix: 16) else { return nil }
            bytes.append(b)
        }
        guard bytes[0] & 1 == 0 else { return nil }
        self.bytes = bytes
    }

    public init?(bytes: [UInt8]) {
        guard bytes.count == 6, bytes[0] & 1 == 0 else { return nil }
        self.bytes = bytes
    }

    /// A random locally administered unicast address in QEMU's 52:54:00 prefix.
    public static func random() -> MACAddress {
        MACAddress(unicast: [0x52, 0x54, 0x00] + (0 ..< 3).map { _ in UInt8.random(in: 0 ... 255) })
    }

    private init(unicast bytes: [UInt8]) { self.bytes = bytes }

    public var description: String { bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":") }
}
