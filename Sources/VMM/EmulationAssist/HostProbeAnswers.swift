import KVM

/// The probes' answers as bit sets, for handing to another process (vmmd gives its own
/// to every worker): one bit per flag, in declaration order. Only complete answers
/// travel; one with a `probeError` is probed again where it is needed.
extension HostEmulation {
    public var bits: UInt32 {
        [refusesInstructions, syscallBroken, hypercallsHang].enumerated().reduce(0) { $0 | ($1.element ? 1 << $1.offset : 0) }
    }

    public init(bits: UInt32) {
        self.init(refusesInstructions: bits & 1 != 0, syscallBroken: bits & 2 != 0, hypercallsHang: bits & 4 != 0)
    }
}

extension GuestDebugSupport {
    /// How many of `bits` mean something.
    public static let bitCount = 6

    public var bits: UInt32 {
        [singleStep, singleStepInUserMode, executionBreakpoints, executionBreakpointsInUserMode, dataBreakpoints,
         softwareBreakpointExits].enumerated().reduce(0) { $0 | ($1.element ? 1 << $1.offset : 0) }
    }

    public init(bits: UInt32) {
        self.init()
        singleStep = bits & 1 != 0
        singleStepInUserMode = bits & 2 != 0
        executionBreakpoints = bits & 4 != 0
        executionBreakpointsInUserMode = bits & 8 != 0
        dataBreakpoints = bits & 16 != 0
        softwareBreakpointExits = bits & 32 != 0
    }
}

extension CPUIDEntry {
    /// function, index, flags, EAX, EBX, ECX, EDX.
    public var words: [UInt32] { [function, index, flags, eax, ebx, ecx, edx] }

    /// From `words`; nil unless there are exactly seven.
    public init?(words w: [UInt32]) {
        guard w.count == 7 else { return nil }
        self.init(function: w[0], index: w[1], flags: w[2], eax: w[3], ebx: w[4], ecx: w[5], edx: w[6])
    }
}
