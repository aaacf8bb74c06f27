/// Why `KVM_RUN` returned: `kvm_run.exit_reason` and its payload (api.rst 5, "The kvm_run structure").
public enum VCPUExit: Sendable, Equatable {
    /// `KVM_EXIT_IO`: an `in`/`out` (or string variant, `count > 1`). Data lives in the
    /// vCPU's run area: read it with `KVMVCPU.ioValue`, answer with `setIOValue`.
    case io(PortIO)
    /// `KVM_EXIT_MMIO`: an access to guest-physical memory with no RAM slot behind it.
    case mmio(MMIOAccess)
    /// `KVM_EXIT_HLT`: `hlt` with no in-kernel local APIC to wait on.
    case halt
    /// `KVM_EXIT_SHUTDOWN`: on x86, a triple fault.
    case shutdown
    /// `KVM_EXIT_SYSTEM_EVENT`: the guest asked for a reset, shutdown or crash (PSCI-like paths).
    case systemEvent(type: UInt32, data: UInt64)
    /// `KVM_EXIT_DEBUG`: a guest-debug event (single step, breakpoint).
    case debug(DebugEvent)
    /// `KVM_EXIT_INTERNAL_ERROR`: KVM could not go on (e.g. an instruction its emulator
    /// cannot handle: suberror 1, `KVM_INTERNAL_ERROR_EMULATION`).
    case internalError(suberror: UInt32, data: InternalErrorData)
    /// `KVM_EXIT_FAIL_ENTRY`: the hardware refused to enter the guest.
    case failEntry(reason: UInt64, cpu: UInt32)
    /// `KVM_EXIT_EXCEPTION` (only with some in-kernel configurations).
    case exception(vector: UInt32, errorCode: UInt32)
    /// `KVM_EXIT_IOAPIC_EOI`: with a split irqchip, the guest's local APIC took the EOI of
    /// a level-triggered `vector` an IOAPIC route announced; the userspace IOAPIC clears
    /// its remote IRR.
    case ioapicEOI(vector: UInt8)
    /// `KVM_EXIT_IRQ_WINDOW_OPEN`: the guest can take an interrupt (userspace irqchip only).
    case irqWindowOpen
    /// `KVM_RUN` returned EINTR: a signal (the kick) or `immediate_exit` stopped it.
    case interrupted
    /// `KVM_EXIT_UNKNOWN` or any reason this VMM does not model, with the raw value.
    case unknown(reason: UInt32, hardwareReason: UInt64)
}

/// The payload of `KVM_EXIT_IO`.
public struct PortIO: Sendable, Equatable {
    public enum Direction: UInt8, Sendable { case `in` = 0, out = 1 }
    public let direction: Direction
    /// Bytes per element: 1, 2 or 4.
    public let size: Int
    public let port: UInt16
    /// Elements: more than 1 for `rep ins`/`rep outs`.
    public let count: Int
    /// Offset of the data inside the run area, validated against its size.
    let dataOffset: Int
}

/// The payload of `KVM_EXIT_MMIO`.
public struct MMIOAccess: Sendable, Equatable {
    public let address: UInt64
    /// 1 to 8 bytes.
    public let size: Int
    public let isWrite: Bool
    /// For writes, the little-endian value written (`size` low bytes valid).
    public let value: UInt64
}

/// The payload of `KVM_EXIT_DEBUG` on x86 (`struct kvm_debug_exit_arch`).
public struct DebugEvent: Sendable, Equatable {
    public let exception: UInt32
    public let pc: UInt64
    public let dr6: UInt64
    public let dr7: UInt64
}

/// Up to four words of `kvm_run.internal.data`, held inline so that `VCPUExit` stays a
/// plain value (no reference counting on the exit path).
public struct InternalErrorData: Sendable, Equatable {
    public let count: Int
    let w0, w1, w2, w3: UInt64

    init(_ words: [UInt64]) {
        count = min(words.count, 4)
        func at(_ i: Int) -> UInt64 { i < words.count ? words[i] : 0 }
        w0 = at(0); w1 = at(1); w2 = at(2); w3 = at(3)
    }

    /// The words KVM supplied (at most four).
    public var words: [UInt64] { Array([w0, w1, w2, w3].prefix(count)) }
}
