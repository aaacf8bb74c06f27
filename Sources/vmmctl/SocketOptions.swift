import ArgumentParser
import Devices
import VMM

/// `--vsock cid=N,socket=PATH`: a virtio-vsock device whose host side is the Unix
/// socket PATH (Firecracker's hybrid vsock: `CONNECT <port>\n` / `OK <port>\n`), and
/// `PATH_P` for connections the guest opens to host port P.
struct VsockOption: ExpressibleByArgument {
    var cid: UInt64
    var socket: String

    init?(argument: String) {
        guard let parsed = try? Self.parse(argument) else { return nil }
        self = parsed
    }

    init(cid: UInt64, socket: String) { self.cid = cid; self.socket = socket }

    static func parse(_ argument: String) throws(ValidationError) -> VsockOption {
        var cid: UInt64?, socket: String?
        for part in argument.split(separator: ",").map(String.init) {
            if part.hasPrefix("cid="), let n = UInt64(part.dropFirst(4)) { cid = n }
            else if part.hasPrefix("socket="), part.count > 7 { socket = String(part.dropFirst(7)) }
            else { throw ValidationError("--vsock: unknown or malformed option '\(part)' (cid=N, socket=PATH)") }
        }
        guard let cid, let socket else { throw ValidationError("--vsock needs cid=N and socket=PATH") }
        guard cid >= 3, cid < 0xFFFF_FFFF else { throw ValidationError("--vsock cid must be between 3 and 4294967294") }
        return VsockOption(cid: cid, socket: socket)
    }

    /// Binds the listener and makes the machine's vsock device.
    func open() throws -> VsockConfig {
        VsockConfig(guestCID: cid, backend: try VsockUnixBackend(path: socket), path: socket)
    }

    static var helpText: String { "cid=N,socket=PATH" }
}

/// `--net tap=NAME[,mac=MAC]`: a virtio-net device on the tap NAME.
struct NetOption: ExpressibleByArgument {
    var tap: String
    var mac: MACAddress?

    init?(argument: String) {
        guard let parsed = try? Self.parse(argument) else { return nil }
        self = parsed
    }

    init(tap: String, mac: MACAddress?) { self.tap = tap; self.mac = mac }

    static func parse(_ argument: String) throws(ValidationError) -> NetOption {
        var tap: String?, mac: MACAddress?
        for part in argument.split(separator: ",").map(String.init) {
            if part.hasPrefix("tap="), part.count > 4, part.utf8.count <= 4 + 15 { tap = String(part.dropFirst(4)) }
            else if part.hasPrefix("mac=") {
                guard let m = MACAddress(String(part.dropFirst(4))) else {
                    throw ValidationError("--net mac must be six hex octets of a unicast address (52:54:00:12:34:56)")
                }
                mac = m
            } else { throw ValidationError("--net: unknown or malformed option '\(part)' (tap=NAME, mac=MAC)") }
        }
        guard let tap else { throw ValidationError("--net needs tap=NAME (at most 15 bytes)") }
        return NetOption(tap: tap, mac: mac)
    }

    /// Opens the tap and makes the machine's network device.
    func open() throws -> NetworkConfig {
        NetworkConfig(tap: try TapDevice.open(name: tap), mac: mac ?? .random())
    }

    static var helpText: String { "tap=NAME[,mac=MAC]" }
}
