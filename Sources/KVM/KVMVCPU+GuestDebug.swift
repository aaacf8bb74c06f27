import CKVM

/// The `control` word of `KVM_SET_GUEST_DEBUG` (api.rst 4.59; the `KVM_GUESTDBG_*` flags).
public struct GuestDebugControl: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `KVM_GUESTDBG_ENABLE`: guest debugging on; without it every other flag is ignored.
    public static let enable = GuestDebugControl(rawValue: UInt32(KVM_GUESTDBG_ENABLE))
    /// `KVM_GUESTDBG_SINGLESTEP`: exit with `KVM_EXIT_DEBUG` (DR6.BS) after each instruction.
    public static let singleStep = GuestDebugControl(rawValue: UInt32(KVM_GUESTDBG_SINGLESTEP))
    /// `KVM_GUESTDBG_USE_SW_BP`: a guest `int3` (#BP) exits with `KVM_EXIT_DEBUG` instead of
    /// reaching the guest's IDT.
    public static let useSoftwareBreakpoints = GuestDebugControl(rawValue: UInt32(KVM_GUESTDBG_USE_SW_BP))
    /// `KVM_GUESTDBG_USE_HW_BP`: the debug registers given with the call are the guest's
    /// while it runs; a match exits with `KVM_EXIT_DEBUG` (#DB, DR6.Bn).
    public static let useHardwareBreakpoints = GuestDebugControl(rawValue: UInt32(KVM_GUESTDBG_USE_HW_BP))
    /// `KVM_GUESTDBG_BLOCKIRQ`: no interrupt is injected while single-stepping, so a step
    /// does not land in an interrupt handler (Linux 5.16+; see `KVM_CAP_SET_GUEST_DEBUG2`).
    public static let blockInterrupts = GuestDebugControl(rawValue: UInt32(KVM_GUESTDBG_BLOCKIRQ))
}

/// The debug registers a debugger hands to `KVM_SET_GUEST_DEBUG` (`kvm_guest_debug_arch`):
/// DR0-DR3 hold linear addresses, DR7 enables and types them (Intel SDM vol. 3B 18.2).
public struct GuestDebugRegisters: Sendable, Equatable {
    public var address: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    public var dr7: UInt64 = 0

    public init() {}

    public subscript(slot: Int) -> UInt64 {
        get {
            switch slot {
            case 0: return address.0
            case 1: return address.1
            case 2: return address.2
            default: return address.3
            }
        }
        set {
            switch slot {
            case 0: address.0 = newValue
            case 1: address.1 = newValue
            case 2: address.2 = newValue
            default: address.3 = newValue
            }
        }
    }

    public static func == (a: GuestDebugRegisters, b: GuestDebugRegisters) -> Bool {
        a.dr7 == b.dr7 && (0 ..< 4).allSatisfy { a[$0] == b[$0] }
    }
}

extension KVMVCPU {
    /// `KVM_SET_GUEST_DEBUG` with typed flags. Issue it while the vCPU is outside `KVM_RUN`;
    /// it stays in force for every later entry until replaced.
    public func setGuestDebug(_ control: GuestDebugControl, registers: GuestDebugRegisters = GuestDebugRegisters()) throws {
        try setGuestDebug(control: control.rawValue,
                          debugRegisters: [registers[0], registers[1], registers[2], registers[3], 0, 0, 0, registers.dr7])
    }
}

extension KVMSystem {
    /// The `KVM_GUESTDBG_*` flags this KVM accepts (`KVM_CAP_SET_GUEST_DEBUG2`), or nil
    /// when it does not say (older kernels: only the base flags are known to work).
    public func supportedGuestDebugControl() -> GuestDebugControl? {
        let raw = check(Capability(Int32(KVM_CAP_SET_GUEST_DEBUG2)))
        return raw > 0 ? GuestDebugControl(rawValue: UInt32(raw)) : nil
    }
}
