import VMMAPI
#if canImport(Glibc)
import Glibc
#endif

/// Per-user limits (the analog of FreeBSD's RLIMIT_VMM): how many VMs, how much guest
/// memory and how many vCPUs one uid may hold at once. Nil means no limit (in a uid's
/// entry: the default's limit). Root is not limited: it administers the daemon.
public struct Quota: Sendable, Equatable {
    public var vms: Int?
    public var memoryMiB: UInt64?
    public var vcpus: Int?

    public init(vms: Int? = nil, memoryMiB: UInt64? = nil, vcpus: Int? = nil) {
        self.vms = vms; self.memoryMiB = memoryMiB; self.vcpus = vcpus
    }
}

/// The quotas of the daemon's configuration: one for everyone, and per-uid overrides.
public struct QuotaPolicy: Sendable, Equatable {
    public var standard: Quota
    public var perUID: [UInt32: Quota]

    public init(standard: Quota = Quota(), perUID: [UInt32: Quota] = [:]) {
        self.standard = standard; self.perUID = perUID
    }

    /// A uid's entry, its missing limits taken from the default.
    public func quota(for uid: UInt32) -> Quota {
        guard let own = perUID[uid] else { return standard }
        return Quota(vms: own.vms ?? standard.vms, memoryMiB: own.memoryMiB ?? standard.memoryMiB,
                     vcpus: own.vcpus ?? standard.vcpus)
    }

    /// What a daemon without a quota configuration enforces: a uid's guest memory in
    /// total may not exceed the host's RAM (the configuration raises or lowers it).
    public static var defaults: QuotaPolicy { QuotaPolicy(standard: Quota(memoryMiB: hostMemoryMiB)) }

    /// The host's RAM in MiB (_SC_PHYS_PAGES pages of _SC_PAGESIZE bytes).
    public static var hostMemoryMiB: UInt64 {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
        guard pages > 0, size > 0 else { return CreateVMRequest.maxMemoryMiB }
        return (UInt64(pages) * UInt64(size)) >> 20
    }
}

/// What an owner holds (VMs and reservations for VMs being created).
struct Usage: Equatable {
    var vms = 0
    var memoryMiB: UInt64 = 0
    var vcpus = 0

    mutating func add(memoryMiB: UInt64, vcpus: Int) {
        vms += 1
        self.memoryMiB += memoryMiB
        self.vcpus += vcpus
    }

    /// Throws `quota_exceeded` when adding one VM of this size would pass `quota`.
    func check(adding memory: UInt64, vcpus more: Int, against quota: Quota, uid: UInt32) throws(APIError) {
        if let limit = quota.vms, vms + 1 > limit {
            throw APIError(.quotaExceeded, "uid \(uid) may hold \(limit) VMs and holds \(vms)")
        }
        if let limit = quota.memoryMiB, memoryMiB + memory > limit {
            throw APIError(.quotaExceeded, "uid \(uid) may hold \(limit) MiB of guest memory; it holds \(memoryMiB) MiB and asks for \(memory) MiB more",
                           field: "memory_mib")
        }
        if let limit = quota.vcpus, vcpus + more > limit {
            throw APIError(.quotaExceeded, "uid \(uid) may hold \(limit) vCPUs; it holds \(vcpus) and asks for \(more) more",
                           field: "vcpus")
        }
    }
}
