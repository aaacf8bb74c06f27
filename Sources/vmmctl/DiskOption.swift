import ArgumentParser
import Devices
import VMM

/// `--disk PATH[,readonly][,serial=ID][,direct]`: one virtio-blk disk.
struct DiskOption: ExpressibleByArgument {
    var path: String
    var readOnly = false
    var serial = ""
    var direct = false

    init?(argument: String) {
        guard let parsed = try? Self.parse(argument) else { return nil }
        self = parsed
    }

    init(path: String) { self.path = path }

    /// Parses the option, naming what is wrong.
    static func parse(_ argument: String) throws(ValidationError) -> DiskOption {
        let parts = argument.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard let path = parts.first, !path.isEmpty else { throw ValidationError("--disk needs a path") }
        var disk = DiskOption(path: path)
        for part in parts.dropFirst() {
            switch part {
            case "readonly", "ro": disk.readOnly = true
            case "direct": disk.direct = true
            case _ where part.hasPrefix("serial="):
                disk.serial = String(part.dropFirst(7))
                guard disk.serial.utf8.count <= DiskConfig.maxSerialLength,
                      disk.serial.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                    throw ValidationError("--disk serial must be at most \(DiskConfig.maxSerialLength) printable ASCII characters")
                }
            default:
                throw ValidationError("--disk: unknown option '\(part)' (readonly, serial=ID, direct)")
            }
        }
        return disk
    }

    /// Opens the image and makes the machine's disk.
    func open() throws -> DiskConfig {
        DiskConfig(backend: try BlockBackend.open(path: path, readOnly: readOnly, direct: direct),
                   readOnly: readOnly, serial: serial, path: path)
    }

    static var helpText: String { "PATH[,readonly][,serial=ID][,direct]" }
}
