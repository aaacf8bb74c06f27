import Synchronization

/// What the daemon's probe VMs found about this host's KVM (the VMM's `HostEmulation`
/// and `GuestDebugSupport`), handed to every worker in its setup so that it runs no probe
/// VM of its own: each is a VM created and closed, and where `vmcall` hangs a 10 ms
/// wait — most of a worker's start before this was passed down.
public struct HostFacts: Sendable, Equatable {
    /// `HostEmulation.bits` and `GuestDebugSupport.bits` (VMM types this module does not
    /// import).
    public var emulation: UInt32 = 0
    public var debug: UInt32 = 0
    /// KVM_GET_SUPPORTED_CPUID's entries, each `CPUIDEntry.words`: function, index,
    /// flags, EAX, EBX, ECX, EDX.
    public var supportedCPUID: [[UInt32]] = []

    /// Bounds a reader holds the entries to (KVM returns ~80; its own limit is 256).
    static let maxCPUIDEntries = 1024

    public init(emulation: UInt32 = 0, debug: UInt32 = 0, supportedCPUID: [[UInt32]] = []) {
        self.emulation = emulation; self.debug = debug; self.supportedCPUID = supportedCPUID
    }

    func encode(into w: inout WireWriter) {
        w.u32(emulation); w.u32(debug)
        w.u32(UInt32(supportedCPUID.count))
        for entry in supportedCPUID {
            for i in 0 ..< 7 { w.u32(i < entry.count ? entry[i] : 0) }
        }
    }

    static func decode(from r: inout WireReader) throws -> HostFacts {
        var f = HostFacts(emulation: try r.u32(), debug: try r.u32())
        let count = try r.u32()
        guard count <= maxCPUIDEntries else { throw WireError.malformed("\(count) CPUID entries") }
        for _ in 0 ..< count { f.supportedCPUID.append(try (0 ..< 7).map { _ in try r.u32() }) }
        return f
    }
}

/// The daemon's answer once its probes have run (they run after the API socket is up,
/// so that start-up does not wait for them); nil before, and a worker set up meanwhile
/// probes for itself.
public final class HostFactsSlot: Sendable {
    private let facts = Mutex<HostFacts?>(nil)
    public init() {}
    public var value: HostFacts? { facts.withLock { $0 } }
    public func set(_ value: HostFacts) { facts.withLock { $0 = value } }
}
