/// Why the debugger stopped the machine: the vCPU that stopped first, and what it hit.
/// In all-stop mode every other vCPU is stopped too by the time a stop is delivered.
public struct DebugStop: Sendable, Equatable, CustomStringConvertible {
    public enum Reason: Sendable, Equatable {
        /// An `int3` the debugger planted; RIP is on it (the original instruction has not run).
        case softwareBreakpoint(address: UInt64)
        /// A debug-register execution breakpoint; RIP is on the instruction.
        case hardwareBreakpoint(address: UInt64)
        /// A watchpoint after the access; `address` is the start of the watched range.
        case watchpoint(WatchKind, address: UInt64)
        /// One instruction stepped.
        case singleStep
        /// The debugger asked for the stop (Ctrl-C).
        case interrupted
    }

    /// The vCPU's index (0-based, in creation order; not its APIC ID).
    public let vcpu: Int
    public let reason: Reason

    public init(vcpu: Int, reason: Reason) {
        self.vcpu = vcpu
        self.reason = reason
    }

    /// Whether the event already happened (a trap: the instruction completed), so that it
    /// is lost unless reported. Breakpoints are faults: a vCPU stopped on one hits it
    /// again when it runs, so an unreported breakpoint hit can be dropped.
    var isTrap: Bool {
        switch reason {
        case .watchpoint, .singleStep: return true
        case .softwareBreakpoint, .hardwareBreakpoint, .interrupted: return false
        }
    }

    public var description: String {
        switch reason {
        case .softwareBreakpoint(let a): return "vCPU \(vcpu): breakpoint at 0x\(String(a, radix: 16))"
        case .hardwareBreakpoint(let a): return "vCPU \(vcpu): hardware breakpoint at 0x\(String(a, radix: 16))"
        case .watchpoint(let k, let a): return "vCPU \(vcpu): \(k) watchpoint at 0x\(String(a, radix: 16))"
        case .singleStep: return "vCPU \(vcpu): single step"
        case .interrupted: return "vCPU \(vcpu): interrupted"
        }
    }
}

/// What a watchpoint watches (x86 debug registers: write, or read/write; reads alone
/// are not a DR7 type, which is why `read` exists only for callers that emulate it).
public enum WatchKind: String, Sendable, Equatable {
    case write, read, access
}

/// How a vCPU goes on when the debugger resumes the machine.
public enum ResumeAction: Sendable, Equatable {
    /// Runs until the next stop.
    case run
    /// Runs one instruction, then stops (and stops every other vCPU).
    case step
    /// Stays stopped.
    case stay
}

/// A breakpoint or watchpoint the debugger can place: the unit of `insert`/`remove`.
public enum DebugPoint: Sendable, Hashable, CustomStringConvertible {
    /// An `int3` written into guest memory at a virtual address.
    case software(address: UInt64)
    /// A debug-register execution breakpoint at a linear address.
    case hardware(address: UInt64)
    /// A data watchpoint over `[address, address + length)`.
    case watch(WatchKind, address: UInt64, length: Int)

    public var description: String {
        switch self {
        case .software(let a): return "breakpoint at 0x\(String(a, radix: 16))"
        case .hardware(let a): return "hardware breakpoint at 0x\(String(a, radix: 16))"
        case .watch(let k, let a, let n): return "\(k) watchpoint at 0x\(String(a, radix: 16)) (\(n) bytes)"
        }
    }
}
