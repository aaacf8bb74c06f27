/// How vCPUs are arranged: sockets × cores per socket × threads per core, and the APIC
/// IDs that follow from it. As on real x86 (Intel SDM Vol. 3, 10.4.5 "Identifying
/// Logical Processors in an MP System"), each level gets enough APIC ID bits for its
/// count, so IDs are dense only when the counts are powers of two.
public struct CPUTopology: Sendable, Equatable, CustomStringConvertible {
    public let sockets: Int
    public let coresPerSocket: Int
    public let threadsPerCore: Int

    /// The largest APIC ID an xAPIC MADT entry and KVM's default vCPU IDs allow
    /// (255 is the broadcast ID).
    public static let maxAPICID: UInt32 = 254

    public init(sockets: Int, coresPerSocket: Int, threadsPerCore: Int) throws {
        guard sockets >= 1, coresPerSocket >= 1, threadsPerCore >= 1,
              sockets <= 255, coresPerSocket <= 255, threadsPerCore <= 255 else {
            throw TopologyError("sockets, cores and threads must each be between 1 and 255")
        }
        self.sockets = sockets; self.coresPerSocket = coresPerSocket; self.threadsPerCore = threadsPerCore
        let last = apicID(ofIndex: cpuCount - 1)
        guard last <= Self.maxAPICID else {
            throw TopologyError("\(self) needs APIC IDs up to \(last); at most \(Self.maxAPICID) are possible")
        }
    }

    /// One socket of `cpus` single-threaded cores: what `--cpus N` alone means.
    public static func flat(cpus: Int) -> CPUTopology? {
        try? CPUTopology(sockets: 1, coresPerSocket: cpus, threadsPerCore: 1)
    }

    /// Parses `sockets=S,cores=C,threads=T` (any order, each optional, default 1).
    public init(parsing text: String) throws {
        var values = ["sockets": 1, "cores": 1, "threads": 1]
        for part in text.split(separator: ",") {
            let kv = part.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, values[kv[0]] != nil, let n = Int(kv[1]) else {
                throw TopologyError("\"\(part)\" is not sockets=N, cores=N or threads=N")
            }
            values[kv[0]] = n
        }
        try self.init(sockets: values["sockets"] ?? 1, coresPerSocket: values["cores"] ?? 1, threadsPerCore: values["threads"] ?? 1)
    }

    public var cpuCount: Int { sockets * coresPerSocket * threadsPerCore }
    public var threadsPerSocket: Int { coresPerSocket * threadsPerCore }

    /// APIC ID bits for the thread and core levels.
    public var threadBits: Int { Self.bits(for: threadsPerCore) }
    public var coreBits: Int { Self.bits(for: coresPerSocket) }

    /// The APIC ID of vCPU `index` (counted thread-first, then core, then socket).
    public func apicID(ofIndex index: Int) -> UInt32 {
        let thread = index % threadsPerCore
        let core = (index / threadsPerCore) % coresPerSocket
        let socket = index / threadsPerSocket
        return UInt32(socket << (coreBits + threadBits) | core << threadBits | thread)
    }

    public var description: String { "sockets=\(sockets),cores=\(coresPerSocket),threads=\(threadsPerCore)" }

    static func bits(for count: Int) -> Int {
        var bits = 0
        while 1 << bits < count { bits += 1 }
        return bits
    }
}

public struct TopologyError: Error, Equatable, Sendable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = "invalid CPU topology: " + description }
}
