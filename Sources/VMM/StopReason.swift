import Devices

/// Why a machine stopped running. Reported to its owner (CLI, daemon, library user).
public enum StopReason: Sendable, Equatable, CustomStringConvertible {
    /// The guest powered off (ACPI S5).
    case powerOff
    /// The guest asked for a reset and rebooting is disabled.
    case reset
    /// Every way forward is gone: the guest halted with nothing to wake it.
    case halt(vcpu: UInt32)
    /// A triple fault (KVM_EXIT_SHUTDOWN).
    case tripleFault(vcpu: UInt32)
    /// KVM could not continue: emulation failure, failed entry, unknown exit.
    case internalError(vcpu: UInt32, detail: String)
    /// The guest wrote `value` to the debug-exit port.
    case debugExit(value: UInt32)
    /// The VMM itself failed (an ioctl that should not fail did).
    case vmmError(String)
    /// The owner stopped it (kill).
    case killed

    /// The process exit status `vmmctl run` ends with. Debug-exit statuses are odd
    /// (`(value << 1) | 1`, as QEMU); the others are even so they never collide.
    public var exitStatus: Int32 {
        switch self {
        case .powerOff: return 0
        case .debugExit(let v): return DebugExit.exitStatus(for: v) & 0xFF
        case .reset: return ExitStatus.reset
        case .halt: return ExitStatus.halt
        case .tripleFault: return ExitStatus.tripleFault
        case .internalError: return ExitStatus.internalError
        case .vmmError: return ExitStatus.vmmError
        case .killed: return ExitStatus.killed
        }
    }

    /// A stable one-word name for APIs and logs.
    public var kind: String {
        switch self {
        case .powerOff: return "poweroff"
        case .reset: return "reset"
        case .halt: return "halt"
        case .tripleFault: return "triple_fault"
        case .internalError: return "internal_error"
        case .debugExit: return "debug_exit"
        case .vmmError: return "vmm_error"
        case .killed: return "killed"
        }
    }

    public var description: String {
        switch self {
        case .powerOff: return "guest powered off"
        case .reset: return "guest reset (rebooting disabled)"
        case .halt(let c): return "vCPU \(c) halted with no way to wake up"
        case .tripleFault(let c): return "triple fault on vCPU \(c)"
        case .internalError(let c, let d): return "KVM internal error on vCPU \(c): \(d)"
        case .debugExit(let v): return "guest wrote 0x\(String(v, radix: 16)) to the debug-exit port"
        case .vmmError(let e): return "VMM error: \(e)"
        case .killed: return "stopped by its owner"
        }
    }
}

/// The documented exit statuses of `vmmctl run` (besides 0 and debug-exit's odd values).
public enum ExitStatus {
    public static let reset: Int32 = 2
    public static let halt: Int32 = 4
    public static let tripleFault: Int32 = 6
    public static let internalError: Int32 = 8
    /// The VMM failed, including an image or configuration refused before the guest ran.
    public static let vmmError: Int32 = 10
    public static let killed: Int32 = 12
}
