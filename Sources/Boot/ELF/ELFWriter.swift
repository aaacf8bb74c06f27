/// Writes a minimal ELF32 x86 executable: one PT_LOAD segment and, optionally, a PVH
/// entry note in a PT_NOTE segment. Used for the built-in demo guest and by tests that
/// need well-formed (or deliberately broken) images.
public struct ELFWriter {
    public var loadAddress: UInt32
    public var code: [UInt8]
    /// Extra zeroed memory after the code (p_memsz − p_filesz), e.g. for a stack.
    public var bssSize: UInt32 = 0
    public var entry: UInt32
    /// Add the Xen PVH note (type 18) with `entry`.
    public var pvhNote = true
    /// More notes for the PT_NOTE segment (each from `note(owner:type:descriptor:)`);
    /// written only with `pvhNote`.
    public var extraNotes: [UInt8] = []

    public init(loadAddress: UInt32, code: [UInt8], entry: UInt32? = nil) {
        self.loadAddress = loadAddress
        self.code = code
        self.entry = entry ?? loadAddress
    }

    static let headerSize = 52, phSize = 32

    public func bytes() -> [UInt8] {
        let note = pvhNote ? Self.note(owner: "Xen", type: ELFImage.xenPhys32EntryNote, descriptor: le32(entry)) + extraNotes : []
        let phnum = pvhNote ? 2 : 1
        let noteOffset = Self.headerSize + phnum * Self.phSize
        let codeOffset = (noteOffset + note.count + 15) & ~15
        var w = ByteWriter(size: codeOffset + code.count)
        w.put([0x7F, 0x45, 0x4C, 0x46, 1, 1, 1], at: 0)   // magic, ELFCLASS32, LSB, version 1
        w.put(UInt16(2), at: 16)                            // ET_EXEC
        w.put(UInt16(3), at: 18)                            // EM_386
        w.put(UInt32(1), at: 20)                            // EV_CURRENT
        w.put(entry, at: 24)
        w.put(UInt32(Self.headerSize), at: 28)              // e_phoff
        w.put(UInt16(Self.headerSize), at: 40)              // e_ehsize
        w.put(UInt16(Self.phSize), at: 42)
        w.put(UInt16(phnum), at: 44)
        var ph = Self.headerSize
        // PT_LOAD: code at loadAddress, RWX.
        for (offset, value) in [(0, 1), (4, codeOffset), (8, Int(loadAddress)), (12, Int(loadAddress)),
                                (16, code.count), (20, code.count + Int(bssSize)), (24, 7), (28, 16)] {
            w.put(UInt32(truncatingIfNeeded: value), at: ph + offset)
        }
        if pvhNote {
            ph += Self.phSize
            for (offset, value) in [(0, 4), (4, noteOffset), (16, note.count), (24, 4), (28, 4)] {
                w.put(UInt32(value), at: ph + offset)
            }
            w.put(note, at: noteOffset)
        }
        w.put(code, at: codeOffset)
        return w.bytes
    }

    /// An ELF note: namesz, descsz, type, name (padded to 4), descriptor (padded to 4).
    public static func note(owner: String, type: UInt32, descriptor: [UInt8]) -> [UInt8] {
        let name = Array(owner.utf8) + [0]
        func pad(_ b: [UInt8]) -> [UInt8] { b + [UInt8](repeating: 0, count: (4 - b.count % 4) % 4) }
        return le32(UInt32(name.count)) + le32(UInt32(descriptor.count)) + le32(type) + pad(name) + pad(descriptor)
    }
}

func le32(_ v: UInt32) -> [UInt8] { (0 ..< 4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
