/// The guest-visible hypercall ABI, version 1. `docs/hypercalls.md` is its prose twin:
/// change neither without the other.
public enum HypercallABI {
    /// ABI version reported in CPUID 0x40000001.EBX and by `abiInfo`.
    public static let version: UInt32 = 1
    /// The doorbell: a 32-bit `out` to this port (`out %eax, %dx`) makes a call.
    public static let doorbellPort: UInt16 = 0x0610

    /// CPUID leaf with the highest hypervisor leaf (EAX) and the 12-byte signature (EBX, ECX, EDX).
    public static let signatureLeaf: UInt32 = 0x4000_0000
    /// CPUID leaf: EAX bit 0 = hypercalls enabled, EBX = ABI version, ECX = doorbell port.
    public static let infoLeaf: UInt32 = 0x4000_0001
    /// Where KVM's own paravirtual leaves ("KVMKVMKVM", features) are moved, so that Linux,
    /// which scans 0x40000000-0x4000FF00 in steps of 0x100, still finds them.
    public static let kvmLeafBase: UInt32 = 0x4000_0100
    /// "SwiftVMM" followed by four NUL bytes, as EBX, ECX, EDX (little-endian ASCII).
    public static let signature: (ebx: UInt32, ecx: UInt32, edx: UInt32) = (0x6669_7753, 0x4D4D_5674, 0)
    /// CPUID 0x40000001.EAX bit 0.
    public static let enabledBit: UInt32 = 1
}

/// Built-in call numbers (RAX). Numbers below 0x1000 are reserved for swift-vmm; library
/// users register theirs from 0x1000 up.
public enum HypercallNumber: UInt64, CaseIterable, Sendable {
    /// → `(features << 16) | version`; features bit n set when built-in call n exists.
    case abiInfo = 0
    /// (RBX address, RCX length) → bytes written to the VM's console. Any ring.
    case consoleWrite = 1
    /// (RBX address, RCX length ≥ 16) → 0; writes { u64 realtime_ns; u64 monotonic_ns }.
    case time = 2
    /// (RBX address, RCX length) → name length; copies the VM's name (no NUL).
    case vmName = 3
    /// Powers the VM off. Ring 0 only. Does not return.
    case powerOff = 4
    /// Resets the VM. Ring 0 only. Does not return.
    case reset = 5
    /// (RBX level 0-4, RCX address, RSI length) → 0; one line in the VMM's log.
    case log = 6
    /// (RBX address, RCX length ≥ 24) → 0; writes { u64 generation; u8 instance_id[16] }:
    /// how many snapshot restores lie behind this VM, and an ID of this running instance
    /// (new with every restore, different for every clone of one snapshot).
    case vmGeneration = 7

    /// First number available to library users.
    public static let firstUserNumber: UInt64 = 0x1000
}

/// Errors a call returns in RAX, as negative numbers (two's complement in 64-bit mode,
/// the low 32 bits in 32-bit mode).
public enum HypercallError: Int64, Error, Sendable {
    /// The calling ring may not make this call.
    case notPermitted = -1
    /// An argument is out of range (e.g. a log level above 4).
    case invalidArgument = -2
    /// An (address, length) pair is not entirely inside guest RAM, or wraps.
    case badAddress = -3
    /// The guest's buffer is too small for the answer.
    case bufferTooSmall = -4
}

/// One call as the guest made it.
public struct HypercallRequest: Sendable {
    public let number: UInt64
    /// RBX, RCX, RSI, RDI (the low 32 bits when the guest is not in 64-bit mode). Plain
    /// fields, not an array: building a request allocates nothing.
    let rbx, rcx, rsi, rdi: UInt64
    /// The caller's CPL, 0-3.
    public let ring: Int
    public let vcpu: UInt32

    @inline(__always)
    public init(number: UInt64, rbx: UInt64, rcx: UInt64, rsi: UInt64, rdi: UInt64, ring: Int, vcpu: UInt32) {
        self.number = number; self.rbx = rbx; self.rcx = rcx; self.rsi = rsi; self.rdi = rdi
        self.ring = ring; self.vcpu = vcpu
    }

    /// A request with up to four arguments in RBX, RCX, RSI, RDI order (the rest 0).
    public init(number: UInt64, arguments: [UInt64], ring: Int, vcpu: UInt32) {
        func at(_ i: Int) -> UInt64 { i < arguments.count ? arguments[i] : 0 }
        self.init(number: number, rbx: at(0), rcx: at(1), rsi: at(2), rdi: at(3), ring: ring, vcpu: vcpu)
    }

    /// Argument `i` (0: RBX, 1: RCX, 2: RSI, 3: RDI), or 0 beyond them.
    public func argument(_ i: Int) -> UInt64 {
        switch i {
        case 0: return rbx
        case 1: return rcx
        case 2: return rsi
        case 3: return rdi
        default: return 0
        }
    }
}

/// What the VMM does with the calling vCPU after dispatch.
public enum HypercallOutcome: Sendable, Equatable {
    /// Put this value in RAX and continue after the doorbell.
    case result(Int64)
    /// No such call: inject #UD (vector 6) into the caller.
    case undefinedOpcode
}
