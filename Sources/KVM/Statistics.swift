import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// One KVM binary statistic (`KVM_GET_STATS_FD`, api.rst 4.133): a named counter,
/// gauge, peak or histogram with its unit.
public struct Statistic: Sendable, Equatable {
    public enum Kind: String, Sendable { case cumulative, instant, peak, linearHistogram, logHistogram, unknown }
    public enum Unit: String, Sendable { case none, bytes, seconds, cycles, boolean, unknown }

    public let name: String
    public let kind: Kind
    public let unit: Unit
    /// The value is `raw × base^exponent` (base 10 or 2), e.g. nanoseconds are 10^-9 seconds.
    public let base: Int
    public let exponent: Int
    /// One value, or one per bucket for histograms.
    public let values: [UInt64]
    /// Bucket width of a linear histogram.
    public let bucketSize: UInt32

    /// The single value of a non-histogram statistic.
    public var value: UInt64 { values.first ?? 0 }
}

/// An open KVM statistics file (`KVM_GET_STATS_FD`): header, id string, descriptors,
/// then data, re-read on every `read()`.
///
/// Open it once, before the vCPU runs: the ioctl takes the vCPU's mutex and would wait
/// for `KVM_RUN` to return, while reading the file never does.
public final class StatisticsFile: @unchecked Sendable {
    // @unchecked: the fd is immutable and pread(2) is thread-safe.
    let fd: OwnedFD
    init(fd: OwnedFD) { self.fd = fd }

    // Sizes of the fixed parts, from <linux/kvm.h>.
    static let headerSize = MemoryLayout<kvm_stats_header>.size
    static let descriptorSize = MemoryLayout<kvm_stats_desc>.size

    /// The current values of every statistic.
    public func read() throws -> [Statistic] {
        let header = try bytes(at: 0, count: Self.headerSize)
        let nameSize = Int(header.u32(4)), count = Int(header.u32(8))
        let descOffset = Int(header.u32(16)), dataOffset = Int(header.u32(20))
        // The kernel's own values are small; refuse absurd ones instead of allocating them.
        guard nameSize > 0, nameSize <= 4096, count <= 65536 else {
            throw KVMError(operation: "KVM_GET_STATS_FD", errno: 0, detail: "implausible stats header")
        }
        let stride = Self.descriptorSize + nameSize
        let descriptors = try bytes(at: descOffset, count: stride * count)
        var stats: [Statistic] = []
        stats.reserveCapacity(count)
        for i in 0 ..< count {
            let d = descriptors[(i * stride)...]
            let base = d.startIndex
            let flags = d.u32(base), exponent = Int(Int16(bitPattern: d.u16(base + 4)))
            let size = Int(d.u16(base + 6)), offset = Int(d.u32(base + 8)), bucket = d.u32(base + 12)
            let nameBytes = d[(base + Self.descriptorSize) ..< (base + stride)].prefix { $0 != 0 }
            let data = try bytes(at: dataOffset + offset, count: 8 * min(size, 4096))
            stats.append(Statistic(
                name: String(decoding: nameBytes, as: UTF8.self),
                kind: Self.kind(flags & UInt32(KVM_STATS_TYPE_MASK)),
                unit: Self.unit(flags & UInt32(KVM_STATS_UNIT_MASK)),
                base: flags & UInt32(KVM_STATS_BASE_MASK) == UInt32(KVM_STATS_BASE_POW2) ? 2 : 10,
                exponent: exponent,
                values: (0 ..< min(size, 4096)).map { data.u64($0 * 8) },
                bucketSize: bucket))
        }
        return stats
    }

    private func bytes(at offset: Int, count: Int) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            // SAFETY: reads at most count - done bytes into the buffer's tail.
            let n = buffer.withUnsafeMutableBytes { pread(fd.raw, $0.baseAddress! + done, count - done, off_t(offset + done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw KVMError(operation: "read(stats fd)", errno: n < 0 ? errno : EIO) }
            done += n
        }
        return buffer
    }

    static func kind(_ v: UInt32) -> Statistic.Kind {
        switch Int32(v) {
        case KVM_STATS_TYPE_CUMULATIVE: return .cumulative
        case KVM_STATS_TYPE_INSTANT: return .instant
        case KVM_STATS_TYPE_PEAK: return .peak
        case KVM_STATS_TYPE_LINEAR_HIST: return .linearHistogram
        case KVM_STATS_TYPE_LOG_HIST: return .logHistogram
        default: return .unknown
        }
    }

    static func unit(_ v: UInt32) -> Statistic.Unit {
        switch Int32(v) {
        case KVM_STATS_UNIT_NONE: return .none
        case KVM_STATS_UNIT_BYTES: return .bytes
        case KVM_STATS_UNIT_SECONDS: return .seconds
        case KVM_STATS_UNIT_CYCLES: return .cycles
        case KVM_STATS_UNIT_BOOLEAN: return .boolean
        default: return .unknown
        }
    }
}

extension Collection where Element == UInt8, Index == Int {
    func u16(_ i: Int) -> UInt16 { UInt16(self[i]) | UInt16(self[i + 1]) << 8 }
    func u32(_ i: Int) -> UInt32 { UInt32(u16(i)) | UInt32(u16(i + 2)) << 16 }
    func u64(_ i: Int) -> UInt64 { UInt64(u32(i)) | UInt64(u32(i + 4)) << 32 }
}

extension KVMVCPU {
    /// `KVM_GET_STATS_FD` on the vCPU (from the vCPU's own thread, or before it runs).
    public func openStatistics() throws -> StatisticsFile {
        StatisticsFile(fd: OwnedFD(try ioctlInt(fd.raw, CKVM_GET_STATS_FD, 0, "KVM_GET_STATS_FD")))
    }
}
