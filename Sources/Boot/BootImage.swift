import GuestMemory

/// The kernel image formats the loaders understand, detected from the bytes.
public enum BootImageFormat: String, Sendable {
    /// ELF with a PVH entry note.
    case pvhELF = "PVH ELF"

    /// Recognises `bytes`, or explains why none of the loaders can boot it.
    public static func detect(_ bytes: [UInt8]) throws -> BootImageFormat {
        guard bytes.count >= 4, bytes[0 ..< 4].elementsEqual([0x7F, 0x45, 0x4C, 0x46]) else {
            throw BootError.badFormat("neither an ELF image nor another supported kernel format")
        }
        let image = try ELFImage(bytes: bytes)
        guard image.pvhEntry != nil else { throw BootError.missingPVHNote }
        return .pvhELF
    }
}

/// Loads any supported image: detects the format and runs its loader.
public enum ImageLoader {
    public static func load(_ request: BootRequest, into memory: GuestMemory) throws -> (BootImageFormat, BootEntry) {
        switch try BootImageFormat.detect(request.kernel) {
        case .pvhELF:
            return (.pvhELF, try PVHLoader.load(request, into: memory))
        }
    }
}
