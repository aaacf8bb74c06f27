/// One named, versioned part of a state file: a component's state (a vCPU, the irqchip,
/// a device) or a description of the snapshot (machine, memory, boot image).
public struct SnapshotSection: Sendable, Equatable {
    public var name: String
    public var version: UInt16
    public var payload: [UInt8]

    public init(name: String, version: UInt16, payload: [UInt8]) {
        self.name = name; self.version = version; self.payload = payload
    }

    /// A decoder over the payload, after checking that its version is one the caller reads.
    public func decoder(supporting versions: [UInt16]) throws(SnapshotError) -> SnapshotDecoder {
        guard versions.contains(version) else {
            throw .unsupportedSectionVersion(section: name, found: version, supported: versions)
        }
        return SnapshotDecoder(payload, section: name)
    }
}

/// A snapshot's identity: 16 random bytes. A diff snapshot names its parent by it, so a
/// chain whose files were swapped or rewritten is refused instead of restored wrong.
public struct SnapshotID: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// A new random identity (the system's CSPRNG).
    public static func random() -> SnapshotID {
        var g = SystemRandomNumberGenerator()
        // Two draws of 64 bits (a getrandom(2) each), not sixteen of a byte.
        let words = [g.next(), g.next()]
        // Sixteen bytes always make an ID.
        return SnapshotID(bytes: words.flatMap { w in (0 ..< 8).map { UInt8(truncatingIfNeeded: w >> (8 * $0)) } }) ?? SnapshotID.zero
    }

    static let zero = SnapshotID(uncheckedBytes: [UInt8](repeating: 0, count: 16))
    private init(uncheckedBytes: [UInt8]) { bytes = uncheckedBytes }

    public var description: String { bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined() }
}

extension String {
    func leftPadded(to width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}

/// The state file of a snapshot (docs/snapshot.md): a 64-byte header — magic, format
/// version, section count, the file's length, the snapshot's ID and a CRC-32C of the
/// header — then the sections, each a 16-byte header (name length, version, payload
/// length, CRC-32C over the section header, name and payload), its name and its payload.
public struct StateFile: Sendable, Equatable {
    /// "SVMM-SNP".
    public static let magic: [UInt8] = [0x53, 0x56, 0x4D, 0x4D, 0x2D, 0x53, 0x4E, 0x50]
    /// The format this code writes, and the newest it reads.
    public static let format = FormatVersion(major: 1, minor: 0)
    public static let headerSize = 64
    static let sectionHeaderSize = 16
    /// Limits a reader checks before it believes a number.
    public static let maxSections = 4096
    public static let maxNameLength = 63
    public static let maxSectionSize = 1 << 30
    /// The largest state file accepted (boot images are at most 1 GiB each).
    public static let maxFileSize = 3 << 30

    public var id: SnapshotID
    public var sections: [SnapshotSection]

    public init(id: SnapshotID, sections: [SnapshotSection]) {
        self.id = id; self.sections = sections
    }

    /// The section named `name`, if the file has one.
    public func section(_ name: String) -> SnapshotSection? { sections.first { $0.name == name } }

    /// The section named `name`, or `missingSection`.
    public func require(_ name: String) throws(SnapshotError) -> SnapshotSection {
        guard let s = section(name) else { throw .missingSection(name) }
        return s
    }

    /// `value` in lowercase hex without leading zeros, as section names carry device
    /// addresses (`port.uart@3f8`). Not `String(_:radix:)`: its generic first use costs a
    /// fresh process ~40 µs of conformance lookups, on every restore.
    public static func hex(_ value: UInt64) -> String {
        let digits = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f"]
        var text = ""
        var shift = max(0, (63 - value.leadingZeroBitCount) / 4 * 4)
        while shift >= 0 {
            text += digits[Int((value >> UInt64(shift)) & 0xF)]
            shift -= 4
        }
        return text
    }

    /// Whether `name` is a section name: 1-63 of [a-z0-9._@-].
    public static func isValidName(_ name: String) -> Bool {
        let b = Array(name.utf8)
        return (1 ... maxNameLength).contains(b.count) && b.allSatisfy {
            ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2E || $0 == 0x5F || $0 == 0x40 || $0 == 0x2D
        }
    }

    /// The file's bytes. Section names must be valid and unique (a programming error
    /// otherwise, reported as `invalidState`).
    public func encoded() throws(SnapshotError) -> [UInt8] {
        var seen = Set<String>()
        for s in sections {
            guard Self.isValidName(s.name), seen.insert(s.name).inserted else {
                throw .invalidState("section name '\(s.name)' is invalid or given twice")
            }
            guard s.payload.count <= Self.maxSectionSize else { throw .invalidState("section '\(s.name)' is too large") }
        }
        guard sections.count <= Self.maxSections else { throw .invalidState("\(sections.count) sections") }
        let total = Self.headerSize + sections.reduce(0) { $0 + Self.sectionHeaderSize + $1.name.utf8.count + $1.payload.count }
        var w = SnapshotEncoder()
        w.raw(Self.magic)
        w.u16(Self.format.major); w.u16(Self.format.minor)
        w.u32(UInt32(Self.headerSize))
        w.u32(UInt32(sections.count))
        w.u32(0)                                  // flags: none defined
        w.u64(UInt64(total))
        w.raw(id.bytes)
        w.raw([UInt8](repeating: 0, count: 12))   // reserved
        w.u32(CRC32C.checksum(w.bytes))
        var out = w.bytes
        out.reserveCapacity(total)
        for s in sections {
            var h = SnapshotEncoder()
            let name = Array(s.name.utf8)
            h.u8(UInt8(name.count)); h.u8(0); h.u16(s.version)
            h.u64(UInt64(s.payload.count))
            var crc = CRC32C.checksum(h.bytes)
            crc = CRC32C.checksum(name, continuing: crc)
            crc = CRC32C.checksum(s.payload, continuing: crc)
            h.u32(crc)
            out += h.bytes
            out += name
            out += s.payload
        }
        return out
    }

    /// Parses and checks a whole state file. `what` names it in errors (a path).
    public static func parse(_ bytes: [UInt8], what: String = "the state file") throws(SnapshotError) -> StateFile {
        guard bytes.count >= 12 else {
            throw bytes.starts(with: magic.prefix(bytes.count)) && !bytes.isEmpty ? .truncated("the header") : .notASnapshot(what)
        }
        guard Array(bytes[0 ..< 8]) == magic else { throw .notASnapshot(what) }
        var r = SnapshotDecoder(Array(bytes[8 ..< 12]), section: "header")
        let found = FormatVersion(major: try r.u16(), minor: try r.u16())
        guard found.major == format.major, found.minor <= format.minor else {
            throw .unsupportedFormat(found: found, supported: format)
        }
        guard bytes.count >= headerSize else { throw .truncated("the header") }
        let header = Array(bytes[0 ..< headerSize])
        var h = SnapshotDecoder(Array(header[60 ..< 64]), section: "header")
        guard try h.u32() == CRC32C.checksum(header, 0 ..< 60) else { throw .damaged("the state file's header") }
        var d = SnapshotDecoder(Array(header[12 ..< 60]), section: "header")
        let headerLength = try d.u32()
        let count = Int(try d.u32())
        let flags = try d.u32()
        let length = try d.u64()
        guard let id = SnapshotID(bytes: try d.raw(16, "the snapshot ID")) else { throw .malformed(section: "header", "snapshot ID") }
        guard headerLength == UInt32(headerSize) else { throw .malformed(section: "header", "header size \(headerLength)") }
        guard flags == 0 else { throw .malformed(section: "header", "unknown flags 0x\(String(flags, radix: 16))") }
        guard count <= maxSections else { throw .malformed(section: "header", "\(count) sections; at most \(maxSections)") }
        guard length <= UInt64(maxFileSize) else { throw .malformed(section: "header", "a file of \(length) bytes") }
        guard UInt64(bytes.count) >= length else {
            throw .truncated("the file (\(bytes.count) of \(length) bytes)")
        }
        guard UInt64(bytes.count) == length else {
            throw .malformed(section: "header", "\(UInt64(bytes.count) - length) bytes after the last section")
        }
        var sections: [SnapshotSection] = []
        // The names so far in an array, not a Set<String>: a few dozen sections, and a
        // set's first use in a process (a restore's is fresh) costs ~0.1 ms of generic
        // metadata and conformance lookups, more than the comparisons.
        var names: [String] = []
        names.reserveCapacity(count)
        var offset = headerSize
        for index in 0 ..< count {
            // Labels are made only for errors: the success path builds no strings.
            func numbered() -> String { "section \(index + 1) of \(count)" }
            guard bytes.count - offset >= sectionHeaderSize else { throw .truncated(numbered()) }
            var s = SnapshotDecoder(Array(bytes[offset ..< offset + sectionHeaderSize]), section: "a section header")
            let nameLength = Int(try s.u8())
            let reserved = try s.u8()
            let version = try s.u16()
            let payloadLength = try s.u64()
            let crc = try s.u32()
            let nameStart = offset + sectionHeaderSize
            guard nameLength >= 1, nameLength <= maxNameLength, reserved == 0 else {
                throw .malformed(section: numbered(), "name length \(nameLength), reserved \(reserved)")
            }
            guard bytes.count - nameStart >= nameLength else { throw .truncated(numbered()) }
            let name = String(decoding: bytes[nameStart ..< nameStart + nameLength], as: UTF8.self)
            func label() -> String { isValidName(name) ? "section '\(name)'" : numbered() }
            guard payloadLength <= UInt64(maxSectionSize) else {
                throw .malformed(section: isValidName(name) ? name : numbered(), "a payload of \(payloadLength) bytes")
            }
            let payloadStart = nameStart + nameLength
            guard UInt64(bytes.count - payloadStart) >= payloadLength else { throw .truncated(label()) }
            let payloadEnd = payloadStart + Int(payloadLength)
            var check = CRC32C.checksum(bytes, offset ..< offset + 12)
            check = CRC32C.checksum(bytes, nameStart ..< payloadEnd, continuing: check)
            guard check == crc else { throw .damaged(label()) }
            guard isValidName(name) else { throw .malformed(section: numbered(), "invalid name") }
            guard !names.contains(name) else { throw .malformed(section: name, "given twice") }
            names.append(name)
            sections.append(SnapshotSection(name: name, version: version, payload: Array(bytes[payloadStart ..< payloadEnd])))
            offset = payloadEnd
        }
        guard offset == bytes.count else { throw .malformed(section: "header", "\(bytes.count - offset) bytes after the last section") }
        return StateFile(id: id, sections: sections)
    }
}
