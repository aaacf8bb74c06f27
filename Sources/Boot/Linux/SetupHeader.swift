/// The real-mode setup header of a Linux bzImage (Documentation/arch/x86/boot.rst, "The
/// Real-Mode Kernel Header"), parsed from untrusted bytes and checked for what this
/// loader needs: boot protocol 2.10 or later, a kernel loaded high (bzImage), sane
/// sizes and alignment.
public struct SetupHeader: Sendable, Equatable {
    /// Where the header starts in the image (and in `boot_params`).
    public static let offset = 0x1F1
    public static let bootFlag: UInt16 = 0xAA55
    public static let magic: UInt32 = 0x5372_6448    // "HdrS"
    /// The oldest protocol with `pref_address` and `init_size` (2.10).
    public static let minimumVersion: UInt16 = 0x020A

    // loadflags and xloadflags bits.
    public static let loadedHigh: UInt8 = 1 << 0
    public static let xlfKernel64: UInt16 = 1 << 0
    public static let xlfCanBeLoadedAbove4G: UInt16 = 1 << 1

    /// More than any kernel has asked for; bounds hostile headers.
    static let maxInitSize: UInt32 = 1 << 30
    static let maxAlignment: UInt32 = 1 << 30

    public let setupSectors: Int
    public let version: UInt16
    public let loadFlags: UInt8
    public let code32Start: UInt32
    public let initrdAddressMax: UInt32
    public let kernelAlignment: UInt32
    public let relocatable: Bool
    public let xLoadFlags: UInt16
    /// Longest command line, NUL excluded.
    public let commandLineSize: UInt32
    public let payloadOffset: UInt32
    public let payloadLength: UInt32
    public let preferredAddress: UInt64
    /// Memory the kernel needs from its load address while it decompresses and runs.
    public let initSize: UInt32
    /// The header's bytes as they go into `boot_params` at 0x1F1.
    public let bytes: [UInt8]

    /// Whether `image` looks like a bzImage (boot flag and "HdrS"), before full checks.
    public static func matches(_ image: [UInt8]) -> Bool {
        let r = ByteReader(bytes: image)
        return (try? r.u16(0x1FE, "")) == bootFlag && (try? r.u32(0x202, "")) == magic
    }

    public init(image: [UInt8]) throws {
        let r = ByteReader(bytes: image)
        guard try r.u16(0x1FE, "boot sector") == Self.bootFlag else { throw BootError.badFormat("no 0xAA55 boot flag at 0x1FE") }
        guard try r.u32(0x202, "setup header") == Self.magic else { throw BootError.badFormat("no \"HdrS\" setup header magic at 0x202") }
        version = try r.u16(0x206, "setup header")
        guard version >= Self.minimumVersion else {
            throw BootError.badFormat("boot protocol \(version >> 8).\(String(format2: version & 0xFF)) is older than 2.10")
        }
        let end = 0x202 + Int(try r.u8(0x201, "setup header"))
        guard end >= 0x268 else { throw BootError.badFormat("the setup header ends at 0x\(String(end, radix: 16)), before the 2.10 fields") }
        bytes = Array(try r.slice(UInt64(Self.offset), UInt64(end - Self.offset), "setup header"))
        let sects = Int(try r.u8(0x1F1, "setup header"))
        setupSectors = sects == 0 ? 4 : sects
        loadFlags = try r.u8(0x211, "setup header")
        guard loadFlags & Self.loadedHigh != 0 else { throw BootError.badFormat("a zImage (loaded low) is not supported; use a bzImage") }
        code32Start = try r.u32(0x214, "setup header")
        initrdAddressMax = try r.u32(0x22C, "setup header")
        kernelAlignment = try r.u32(0x230, "setup header")
        relocatable = try r.u8(0x234, "setup header") != 0
        xLoadFlags = try r.u16(0x236, "setup header")
        commandLineSize = try r.u32(0x238, "setup header")
        payloadOffset = try r.u32(0x248, "setup header")
        payloadLength = try r.u32(0x24C, "setup header")
        preferredAddress = try r.u64(0x258, "setup header")
        initSize = try r.u32(0x260, "setup header")

        guard kernelAlignment != 0, kernelAlignment & (kernelAlignment - 1) == 0, kernelAlignment <= Self.maxAlignment else {
            throw BootError.implausible("kernel_alignment 0x\(String(kernelAlignment, radix: 16)) is not a power of two up to 1 GiB")
        }
        guard preferredAddress % UInt64(kernelAlignment) == 0, preferredAddress < 1 << 40 else {
            throw BootError.implausible("pref_address 0x\(String(preferredAddress, radix: 16)) is not a kernel_alignment-aligned address")
        }
        guard setupSize < image.count else { throw BootError.truncated("the protected-mode kernel after \(setupSectors) setup sectors") }
        guard initSize >= UInt32(clamping: image.count - setupSize), initSize <= Self.maxInitSize else {
            throw BootError.implausible("init_size 0x\(String(initSize, radix: 16)) for a \(image.count - setupSize)-byte kernel")
        }
        let (payloadEnd, overflow) = UInt64(payloadOffset).addingReportingOverflow(UInt64(payloadLength))
        guard !overflow, payloadEnd <= UInt64(image.count - setupSize) else {
            throw BootError.truncated("the compressed payload (payload_offset/payload_length)")
        }
    }

    /// Bytes of real-mode setup code before the protected-mode kernel.
    public var setupSize: Int { (setupSectors + 1) * 512 }
    /// The kernel has a 64-bit entry point at its load address + 0x200.
    public var has64BitEntry: Bool { xLoadFlags & Self.xlfKernel64 != 0 }
}

extension String {
    /// Two decimal digits, for "2.05".
    init(format2 value: UInt16) {
        self = value < 10 ? "0\(value)" : "\(value)"
    }
}
