/// An ELF executable's loadable view: its PT_LOAD segments, its notes and its entry,
/// parsed from untrusted bytes (System V ABI, "Object Files"; ELF32 and ELF64,
/// little-endian x86 only).
public struct ELFImage: Sendable {
    public enum Class: Sendable { case elf32, elf64 }

    /// A PT_LOAD program header.
    public struct Segment: Sendable, Equatable {
        public let physicalAddress: UInt64
        public let virtualAddress: UInt64
        public let fileOffset: UInt64
        public let fileSize: UInt64
        public let memorySize: UInt64
    }

    /// One note from a PT_NOTE segment.
    public struct Note: Sendable, Equatable {
        public let owner: String
        public let type: UInt32
        public let descriptor: [UInt8]
    }

    public let elfClass: Class
    public let entry: UInt64
    public let segments: [Segment]
    public let notes: [Note]
    let bytes: [UInt8]

    static let ptLoad: UInt32 = 1
    static let ptNote: UInt32 = 4
    /// More program headers than any real kernel has; a bound on hostile headers.
    static let maxProgramHeaders = 512

    public init(bytes: [UInt8]) throws {
        let r = ByteReader(bytes: bytes)
        guard bytes.count >= 16 else { throw BootError.truncated("ELF identification") }
        guard bytes[0 ..< 4].elementsEqual([0x7F, 0x45, 0x4C, 0x46]) else { throw BootError.badFormat("no ELF magic") }
        switch bytes[4] {
        case 1: elfClass = .elf32
        case 2: elfClass = .elf64
        default: throw BootError.badFormat("unknown ELF class \(bytes[4])")
        }
        guard bytes[5] == 1 else { throw BootError.badFormat("not little-endian") }
        guard bytes[6] == 1 else { throw BootError.badFormat("unknown ELF version \(bytes[6])") }
        let is64 = elfClass == .elf64
        let machine = try r.u16(18, "ELF header")
        guard machine == 3 || machine == 62 else { throw BootError.badFormat("machine \(machine) is not x86 (3) or x86-64 (62)") }
        let phoff = is64 ? try r.u64(32, "ELF header") : UInt64(try r.u32(28, "ELF header"))
        entry = is64 ? try r.u64(24, "ELF header") : UInt64(try r.u32(24, "ELF header"))
        let phentsize = Int(try r.u16(is64 ? 54 : 42, "ELF header"))
        let phnum = Int(try r.u16(is64 ? 56 : 44, "ELF header"))
        guard phentsize >= (is64 ? 56 : 32) else { throw BootError.badFormat("program header size \(phentsize) is too small") }
        guard phnum <= Self.maxProgramHeaders else { throw BootError.implausible("\(phnum) program headers") }
        _ = try r.slice(phoff, UInt64(phentsize * phnum), "program header table")

        var segments: [Segment] = []
        var notes: [Note] = []
        for i in 0 ..< phnum {
            let at = Int(phoff) + i * phentsize
            let what = "program header \(i)"
            let type = try r.u32(at, what)
            let offset, vaddr, paddr, filesz, memsz: UInt64
            if is64 {
                offset = try r.u64(at + 8, what); vaddr = try r.u64(at + 16, what); paddr = try r.u64(at + 24, what)
                filesz = try r.u64(at + 32, what); memsz = try r.u64(at + 40, what)
            } else {
                offset = UInt64(try r.u32(at + 4, what)); vaddr = UInt64(try r.u32(at + 8, what))
                paddr = UInt64(try r.u32(at + 12, what))
                filesz = UInt64(try r.u32(at + 16, what)); memsz = UInt64(try r.u32(at + 20, what))
            }
            switch type {
            case Self.ptLoad:
                guard filesz <= memsz else { throw BootError.badFormat("segment \(i): file size exceeds memory size") }
                _ = try r.slice(offset, filesz, "segment \(i)")
                if memsz > 0 { segments.append(Segment(physicalAddress: paddr, virtualAddress: vaddr, fileOffset: offset, fileSize: filesz, memorySize: memsz)) }
            case Self.ptNote:
                notes += try Self.parseNotes(r.slice(offset, filesz, "note segment \(i)"))
            default:
                continue
            }
        }
        guard !segments.isEmpty else { throw BootError.badFormat("no loadable segments") }
        self.segments = segments
        self.notes = notes
        self.bytes = bytes
    }

    /// Notes are { namesz, descsz, type, name (4-aligned), desc (4-aligned) }.
    static func parseNotes(_ data: ArraySlice<UInt8>) throws -> [Note] {
        let r = ByteReader(bytes: Array(data))
        var notes: [Note] = []
        var at = 0
        while at + 12 <= r.bytes.count {
            let namesz = UInt64(try r.u32(at, "note")), descsz = UInt64(try r.u32(at + 4, "note"))
            let type = try r.u32(at + 8, "note")
            let nameStart = UInt64(at + 12)
            let descStart = nameStart + ((namesz + 3) & ~3)
            let name = try r.slice(nameStart, namesz, "note name")
            let desc = try r.slice(descStart, descsz, "note descriptor")
            notes.append(Note(owner: String(decoding: name.prefix { $0 != 0 }, as: UTF8.self), type: type, descriptor: Array(desc)))
            let next = descStart + ((descsz + 3) & ~3)
            guard next <= UInt64(r.bytes.count) else { break }
            at = Int(next)
        }
        return notes
    }

    /// The entry as a physical address: e_entry translated through the segment whose
    /// virtual range holds it (kernels linked high give a virtual entry), else as is.
    public var physicalEntry: UInt64 {
        guard let s = segments.first(where: { entry >= $0.virtualAddress && entry - $0.virtualAddress < $0.memorySize }) else {
            return entry
        }
        return s.physicalAddress &+ (entry - s.virtualAddress)
    }

    /// The bytes of segment `s` present in the file.
    func fileBytes(of s: Segment) -> [UInt8] {
        Array(bytes[Int(s.fileOffset) ..< Int(s.fileOffset + s.fileSize)])
    }

    /// Xen ELF note type XEN_ELFNOTE_PHYS32_ENTRY (xen/include/public/elfnote.h).
    public static let xenPhys32EntryNote: UInt32 = 18

    /// The PVH 32-bit entry point from the `Xen` note, if the image has one.
    public var pvhEntry: UInt32? {
        guard let note = notes.first(where: { $0.owner == "Xen" && $0.type == Self.xenPhys32EntryNote }),
              note.descriptor.count >= 4 else { return nil }
        return note.descriptor.prefix(4).enumerated().reduce(0) { $0 | UInt32($1.element) << (8 * $1.offset) }
    }
}
