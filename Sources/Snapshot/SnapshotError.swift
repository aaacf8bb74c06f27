/// Why a snapshot could not be written, read or restored. Every case says which part
/// (file, section, device) is at fault, so that a damaged snapshot can be diagnosed.
public enum SnapshotError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The bytes are not a swift-vmm snapshot state file (wrong magic number).
    case notASnapshot(String)
    /// The file's format version is not one this reader understands.
    case unsupportedFormat(found: FormatVersion, supported: FormatVersion)
    /// The file ends before `what` does.
    case truncated(String)
    /// A checksum does not match: `what` (the header, or a named section) is damaged.
    case damaged(String)
    /// A section's payload does not decode: `why`.
    case malformed(section: String, String)
    /// A section the restore needs is not in the file.
    case missingSection(String)
    /// A section no component of this machine reads (state this machine cannot restore).
    case unexpectedSection(String)
    /// A section's version is not one its reader understands.
    case unsupportedSectionVersion(section: String, found: UInt16, supported: [UInt16])
    /// A device whose state cannot be saved: a snapshot would restore wrong, so none is taken.
    case unsupportedDevice(String)
    /// The snapshot and the machine restoring it disagree (vCPU count, a disk's size, ...).
    case mismatch(String)
    /// The machine is not in a state that can be snapshotted or restored.
    case invalidState(String)
    /// A host call failed.
    case system(operation: String, errno: Int32)
    /// KVM refused part of the state (the wrapped KVM error names the ioctl).
    case kvm(part: String, String)

    public var description: String {
        switch self {
        case .notASnapshot(let what): return "\(what) is not a swift-vmm snapshot state file"
        case .unsupportedFormat(let found, let supported):
            return "snapshot format \(found) is not supported by this reader (format \(supported)): "
                + (found.major != supported.major ? "another major version" : "a newer minor version")
        case .truncated(let what): return "the state file is truncated: \(what) is incomplete"
        case .damaged(let what): return "\(what) is damaged (CRC-32C mismatch)"
        case .malformed(let section, let why): return "section '\(section)' is malformed: \(why)"
        case .missingSection(let name): return "the snapshot has no section '\(name)'"
        case .unexpectedSection(let name): return "section '\(name)' belongs to nothing on this machine"
        case .unsupportedSectionVersion(let section, let found, let supported):
            return "section '\(section)' has version \(found); this reader understands \(supported.map(String.init).joined(separator: ", "))"
        case .unsupportedDevice(let what): return "\(what) cannot be saved in a snapshot"
        case .mismatch(let why): return "the snapshot does not fit this machine: \(why)"
        case .invalidState(let why): return why
        case .system(let operation, let errno): return "\(operation) failed: \(describeErrno(errno))"
        case .kvm(let part, let error): return "\(part): \(error)"
        }
    }
}

/// A format version: a reader refuses another major version and a newer minor one.
public struct FormatVersion: Equatable, Comparable, Sendable, CustomStringConvertible {
    public var major: UInt16
    public var minor: UInt16
    public init(major: UInt16, minor: UInt16) { self.major = major; self.minor = minor }
    public static func < (a: FormatVersion, b: FormatVersion) -> Bool { (a.major, a.minor) < (b.major, b.minor) }
    public var description: String { "\(major).\(minor)" }
}
