/// A guest-physical address.
///
/// A distinct type so that guest addresses never mix with host pointers or lengths, and
/// with no arithmetic operators: every offset is checked and a wrap is `nil`, never a
/// silently small number (FreeBSD-SA-16:38 was a wrapped guest address + length).
public struct GuestAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let raw: UInt64

    public init(_ raw: UInt64) { self.raw = raw }

    /// `self + offset`, or nil when it passes UInt64.max.
    public func adding(_ offset: UInt64) -> GuestAddress? {
        let (sum, overflow) = raw.addingReportingOverflow(offset)
        return overflow ? nil : GuestAddress(sum)
    }

    /// The distance from `base` up to `self`, or nil when `self` is below `base`.
    public func offset(from base: GuestAddress) -> UInt64? {
        raw >= base.raw ? raw - base.raw : nil
    }

    /// Whether `self` is a multiple of `alignment` (a power of two).
    public func isAligned(to alignment: UInt64) -> Bool {
        alignment != 0 && raw & (alignment - 1) == 0
    }

    /// `self` rounded up to `alignment` (a power of two), or nil on overflow.
    public func alignedUp(to alignment: UInt64) -> GuestAddress? {
        guard alignment != 0, alignment & (alignment - 1) == 0 else { return nil }
        return adding(alignment - 1).map { GuestAddress($0.raw & ~(alignment - 1)) }
    }

    /// `self` rounded down to `alignment` (a power of two).
    public func alignedDown(to alignment: UInt64) -> GuestAddress {
        alignment == 0 ? self : GuestAddress(raw & ~(alignment - 1))
    }

    public static func < (a: GuestAddress, b: GuestAddress) -> Bool { a.raw < b.raw }

    public var description: String { "0x" + String(raw, radix: 16) }
}

/// A half-open range of guest-physical addresses, `[start, start + length)`, that is
/// known not to wrap.
public struct GuestRange: Hashable, Sendable, CustomStringConvertible {
    public let start: GuestAddress
    public let length: UInt64

    /// Nil when `start + length` would pass 2^64.
    public init?(start: GuestAddress, length: UInt64) {
        guard length == 0 || start.adding(length - 1) != nil else { return nil }
        self.start = start
        self.length = length
    }

    /// The last address in the range (nil when empty).
    public var last: GuestAddress? { length == 0 ? nil : GuestAddress(start.raw + (length - 1)) }

    /// Whether `other` lies entirely inside `self`.
    public func contains(_ other: GuestRange) -> Bool {
        guard let offset = other.start.offset(from: start), offset <= length else { return false }
        return other.length <= length - offset
    }

    public func contains(_ address: GuestAddress) -> Bool {
        guard let offset = address.offset(from: start) else { return false }
        return offset < length
    }

    public func overlaps(_ other: GuestRange) -> Bool {
        guard let a = last, let b = other.last else { return false }
        return start <= b && other.start <= a
    }

    public var description: String {
        guard let last else { return "[\(start), empty)" }
        return "[\(start)-\(last)]"
    }
}
