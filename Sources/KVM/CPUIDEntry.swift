import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// One CPUID leaf (`struct kvm_cpuid_entry2`).
public struct CPUIDEntry: Equatable, Sendable {
    public var function: UInt32
    public var index: UInt32
    /// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX` when `index` selects a sub-leaf.
    public var flags: UInt32
    public var eax: UInt32
    public var ebx: UInt32
    public var ecx: UInt32
    public var edx: UInt32

    public init(function: UInt32, index: UInt32 = 0, flags: UInt32 = 0,
                eax: UInt32 = 0, ebx: UInt32 = 0, ecx: UInt32 = 0, edx: UInt32 = 0) {
        self.function = function; self.index = index; self.flags = flags
        self.eax = eax; self.ebx = ebx; self.ecx = ecx; self.edx = edx
    }

    /// The flag saying `index` is significant for this leaf.
    public static let significantIndex = UInt32(KVM_CPUID_FLAG_SIGNIFCANT_INDEX)

    init(_ e: kvm_cpuid_entry2) {
        self.init(function: e.function, index: e.index, flags: e.flags,
                  eax: e.eax, ebx: e.ebx, ecx: e.ecx, edx: e.edx)
    }

    var raw: kvm_cpuid_entry2 {
        var e = kvm_cpuid_entry2()
        e.function = function; e.index = index; e.flags = flags
        e.eax = eax; e.ebx = ebx; e.ecx = ecx; e.edx = edx
        return e
    }

    static let maxEntries = 256
    static let headerSize = 8  // struct kvm_cpuid2 { u32 nent; u32 padding; entries[] }

    /// Reads a `kvm_cpuid2` list with `request`, growing the buffer on E2BIG.
    static func fetch(fd: Int32, request: UInt, name: String) throws -> [CPUIDEntry] {
        let stride = MemoryLayout<kvm_cpuid_entry2>.stride
        var capacity = 80
        while true {
            var buffer = [UInt8](repeating: 0, count: headerSize + capacity * stride)
            let result: [CPUIDEntry]? = try buffer.withUnsafeMutableBytes { raw in
                raw.storeBytes(of: UInt32(capacity), as: UInt32.self)
                // SAFETY: raw is headerSize + capacity entries long, the layout of kvm_cpuid2.
                if ckvm_ioctl(fd, request, raw.baseAddress) < 0 {
                    if errno == E2BIG && capacity < maxEntries * 4 { return nil }
                    throw KVMError.last(name)
                }
                let count = min(Int(raw.load(as: UInt32.self)), capacity)
                return (0 ..< count).map { i in
                    CPUIDEntry(raw.loadUnaligned(fromByteOffset: headerSize + i * stride, as: kvm_cpuid_entry2.self))
                }
            }
            if let result { return result }
            capacity *= 2
        }
    }

    /// Encodes `entries` as a `kvm_cpuid2` and passes it with `request` (KVM_SET_CPUID2).
    static func store(_ entries: [CPUIDEntry], fd: Int32, request: UInt, name: String) throws {
        let stride = MemoryLayout<kvm_cpuid_entry2>.stride
        var buffer = [UInt8](repeating: 0, count: headerSize + entries.count * stride)
        let rc = buffer.withUnsafeMutableBytes { raw -> Int32 in
            raw.storeBytes(of: UInt32(entries.count), as: UInt32.self)
            for (i, entry) in entries.enumerated() {
                raw.storeBytes(of: entry.raw, toByteOffset: headerSize + i * stride, as: kvm_cpuid_entry2.self)
            }
            // SAFETY: raw holds a kvm_cpuid2 header followed by entries.count entries.
            return ckvm_ioctl(fd, request, raw.baseAddress)
        }
        guard rc >= 0 else { throw KVMError.last(name) }
    }
}

extension Array where Element == CPUIDEntry {
    /// The entry for `function`/`index` (index ignored for leaves without sub-leaves).
    public func leaf(_ function: UInt32, index: UInt32 = 0) -> CPUIDEntry? {
        first { $0.function == function && ($0.flags & CPUIDEntry.significantIndex == 0 || $0.index == index) }
    }
}
