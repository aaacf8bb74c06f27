import VMMAPI

/// Per-user limits (the analog of FreeBSD's RLIMIT_VMM): how many VMs, how much guest
/// memory and how many vCPUs one uid may hold at once. Nil means no limit. Root is not
/// limited: it administers the daemon.
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

    public func quota(for uid: UInt32) -> Quota { perUID[uid] ?? standard }
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
