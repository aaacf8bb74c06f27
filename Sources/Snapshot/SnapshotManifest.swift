/// `manifest.json`: a short human-readable summary of a snapshot, for people and tools.
/// Nothing restores from it — the state file is the authority, and carries all of it —
/// so an edited manifest cannot change what a restore does.
public struct SnapshotManifest: Sendable {
    public var id: SnapshotID
    public var machine: MachineDescription
    public var memory: MemoryDescription
    /// Bytes of the memory file that hold data (the rest are holes).
    public var memoryAllocated: UInt64
    public var stateFileSize: Int
    public var devices: [String]

    public init(id: SnapshotID, machine: MachineDescription, memory: MemoryDescription, memoryAllocated: UInt64,
                stateFileSize: Int, devices: [String]) {
        self.id = id; self.machine = machine; self.memory = memory; self.memoryAllocated = memoryAllocated
        self.stateFileSize = stateFileSize; self.devices = devices
    }

    /// The manifest as pretty-printed JSON (keys in a fixed order), ending in a newline.
    public var json: String {
        var fields: [(String, String)] = [
            ("format", quote("\(StateFile.format)")),
            ("swift_vmm", quote(machine.writer)),
            ("id", quote(id.description)),
            ("created", quote(Self.rfc3339(nanoseconds: machine.createdAt))),
            ("kind", quote(memory.isDiff ? "diff" : "full")),
        ]
        if let parent = memory.parent {
            fields.append(("parent", "{ \"id\": \(quote(parent.id.description)), \"path\": \(quote(parent.path)) }"))
        }
        fields += [
            ("name", quote(machine.name)),
            ("memory_mib", "\(machine.memoryMiB)"),
            ("vcpus", "\(machine.cpus)"),
            ("cpu_template", quote(machine.cpuTemplate)),
            ("boot_format", quote(machine.bootFormat)),
            ("cmdline", quote(machine.effectiveCommandLine)),
            ("devices", "[" + devices.map(quote).joined(separator: ", ") + "]"),
            ("disks", "[" + machine.disks.map { quote($0.path) }.joined(separator: ", ") + "]"),
            ("taps", "[" + machine.networks.map { quote($0.tap) }.joined(separator: ", ") + "]"),
            ("vsock", machine.vsock.map { "{ \"cid\": \($0.cid), \"socket\": \(quote($0.path)) }" } ?? "null"),
            ("generation", "\(machine.generation)"),
            ("files", "{ \"\(SnapshotFiles.state)\": \(stateFileSize), \"\(SnapshotFiles.memory)\": \(memory.fileSize), \"memory_allocated\": \(memoryAllocated)"
                + (memory.pages.map { ", \"diff_pages\": \($0.pageCount)" } ?? "") + " }"),
        ]
        return "{\n" + fields.map { "  \(quote($0.0)): \($0.1)" }.joined(separator: ",\n") + "\n}\n"
    }

    private func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            case _ where u.value < 0x20: out += "\\u" + String(u.value, radix: 16).leftPadded(to: 4)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    /// `YYYY-MM-DDTHH:MM:SSZ` for a CLOCK_REALTIME value (civil-from-days, no libc).
    public static func rfc3339(nanoseconds: UInt64) -> String {
        let seconds = Int64(nanoseconds / 1_000_000_000)
        let days = seconds / 86400, rest = seconds % 86400
        // Howard Hinnant's days-to-civil algorithm.
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        func two(_ v: Int64) -> String { String(v).leftPadded(to: 2) }
        return "\(year)-\(two(month))-\(two(day))T\(two(rest / 3600)):\(two(rest % 3600 / 60)):\(two(rest % 60))Z"
    }
}

/// The files of a snapshot directory.
public enum SnapshotFiles {
    public static let state = "state.bin"
    public static let memory = "memory.bin"
    public static let manifest = "manifest.json"
    /// The state file while it is written; renamed to `state` once everything is on
    /// disk, so a directory with a `state.bin` is a complete snapshot.
    public static let partialState = "state.bin.partial"
}
