/// Errors from guest memory: every refused access names the address and length asked for.
public enum GuestMemoryError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `address + length` passes 2^64.
    case overflow(address: UInt64, length: UInt64)
    /// No single segment holds the whole range (outside RAM, in the MMIO hole, or across
    /// the end of a segment).
    case unmapped(address: UInt64, length: UInt64)
    /// A write to a segment the guest and its devices may only read (a ROM).
    case readOnly(address: UInt64, segment: String)
    /// Two segments would overlap.
    case overlap(String, String)
    /// A segment that cannot exist (zero or unaligned size, too large, ...).
    case invalidSegment(String)
    /// An atomic access whose address is not a multiple of its size.
    case misaligned(address: UInt64, alignment: UInt64)
    /// A host call failed.
    case system(operation: String, errno: Int32)

    public var description: String {
        switch self {
        case .overflow(let a, let l): return "guest range 0x\(String(a, radix: 16)) + 0x\(String(l, radix: 16)) wraps past 2^64"
        case .unmapped(let a, let l): return "guest range 0x\(String(a, radix: 16)) length 0x\(String(l, radix: 16)) is not inside one memory segment"
        case .readOnly(let a, let s): return "guest address 0x\(String(a, radix: 16)) is in read-only segment \(s)"
        case .overlap(let a, let b): return "memory segments \(a) and \(b) overlap"
        case .invalidSegment(let why): return "invalid memory segment: \(why)"
        case .misaligned(let a, let n): return "guest address 0x\(String(a, radix: 16)) is not \(n)-byte aligned"
        case .system(let op, let e): return "\(op) failed: errno \(e)"
        }
    }
}
