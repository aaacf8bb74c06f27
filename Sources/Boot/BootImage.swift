import GuestMemory

/// The kernel image formats the loaders understand, detected from the bytes.
public enum BootImageFormat: String, Sendable {
    /// ELF with a PVH entry note.
    case pvhELF = "PVH ELF"
    /// A Linux bzImage (x86 boot protocol 2.10+).
    case bzImage
    /// A multiboot (v1) kernel: ELF, or any file with the a.out kludge.
    case multiboot

    /// Recognises `bytes`, or explains why none of the loaders can boot it. A PVH note
    /// wins over a multiboot header (it is the more direct entry for the same kernel).
    public static func detect(_ bytes: [UInt8]) throws -> BootImageFormat {
        if SetupHeader.matches(bytes) { return .bzImage }
        let isELF = bytes.count >= 4 && bytes[0 ..< 4].elementsEqual([0x7F, 0x45, 0x4C, 0x46])
        if isELF, try ELFImage(bytes: bytes).pvhEntry != nil { return .pvhELF }
        if MultibootHeader.find(in: bytes) != nil { return .multiboot }
        if isELF { throw BootError.missingPVHNote }
        throw BootError.badFormat("neither a PVH ELF, a bzImage nor a multiboot kernel")
    }
}

extension BootImageFormat {
    /// Xen ELF note XEN_ELFNOTE_GUEST_OS, which Linux's vmlinux sets to "linux".
    static let xenGuestOSNote: UInt32 = 6

    /// Whether `bytes` is a Linux kernel: a bzImage, or an ELF with a note owned by
    /// "Linux" (every vmlinux has them: LINUX_ELFNOTE_BUILD_SALT and friends, from
    /// include/linux/elfnote.h) or whose Xen guest-OS note says "linux" (a vmlinux built
    /// with Xen support). A PVH vmlinux without CONFIG_XEN has only the first kind.
    public static func isLinux(_ bytes: [UInt8]) -> Bool {
        if SetupHeader.matches(bytes) { return true }
        guard let elf = try? ELFImage(bytes: bytes) else { return false }
        return elf.notes.contains { note in
            note.owner == "Linux"
                || (note.owner == "Xen" && note.type == xenGuestOSNote && note.descriptor.starts(with: Array("linux".utf8)))
        }
    }
}

/// Loads any supported image: detects the format and runs its loader.
public enum ImageLoader {
    public static func load(_ request: BootRequest, into memory: GuestMemory) throws -> (BootImageFormat, BootEntry) {
        let format = try BootImageFormat.detect(request.kernel)
        switch format {
        case .pvhELF: return (format, try PVHLoader.load(request, into: memory))
        case .bzImage: return (format, try BzImageLoader.load(request, into: memory))
        case .multiboot: return (format, try MultibootLoader.load(request, into: memory))
        }
    }
}
