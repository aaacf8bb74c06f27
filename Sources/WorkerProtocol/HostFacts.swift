import Synchronization

/// What the daemon's probe VMs found about this host's KVM (the VMM's `HostEmulation`
/// and `GuestDebugSupport`), handed to every worker in its setup so that it runs no probe
/// VM of its own: each is a VM created and closed, and where `vmcall` hangs a 10 ms
/// wait — most of a worker's start before this was passed down.
public struct HostFacts: Sendable, Equatable {
    // HostEmulation.
    public var refusesInstructions = false
    public var syscallBroken = false
    public var hypercallsHang = false
    // GuestDebugSupport.
    public var singleStep = false
    public var singleStepInUserMode = false
    public var executionBreakpoints = false
    public var executionBreakpointsInUserMode = false
    public var dataBreakpoints = false
    public var softwareBreakpointExits = false
    /// KVM_GET_SUPPORTED_CPUID's entries, each as function, index, flags, EAX, EBX, ECX,
    /// EDX (KVM's `CPUIDEntry`, which this module does not import).
    public var supportedCPUID: [[UInt32]] = []

    /// Bounds a reader holds the entries to (KVM returns ~80; its own limit is 256).
    static let maxCPUIDEntries = 1024

    public init() {}

    private var flags: [Bool] {
        [refusesInstructions, syscallBroken, hypercallsHang, singleStep, singleStepInUserMode,
         executionBreakpoints, executionBreakpointsInUserMode, dataBreakpoints, softwareBreakpointExits]
    }

    func encode(into w: inout WireWriter) {
        for flag in flags { w.bool(flag) }
        w.u32(UInt32(supportedCPUID.count))
        for entry in supportedCPUID {
            for i in 0 ..< 7 { w.u32(i < entry.count ? entry[i] : 0) }
        }
    }

    static func decode(from r: inout WireReader) throws -> HostFacts {
        var f = HostFacts()
        f.refusesInstructions = try r.bool(); f.syscallBroken = try r.bool(); f.hypercallsHang = try r.bool()
        f.singleStep = try r.bool(); f.singleStepInUserMode = try r.bool()
        f.executionBreakpoints = try r.bool(); f.executionBreakpointsInUserMode = try r.bool()
        f.dataBreakpoints = try r.bool(); f.softwareBreakpointExits = try r.bool()
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
