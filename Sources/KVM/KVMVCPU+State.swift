import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// General-purpose registers, RIP and RFLAGS (`struct kvm_regs`).
public typealias Registers = kvm_regs
/// Segment, control and descriptor-table registers, EFER, APIC base (`struct kvm_sregs`).
public typealias SpecialRegisters = kvm_sregs
/// One segment register as KVM sees it, including the hidden part (`struct kvm_segment`).
public typealias Segment = kvm_segment
/// x87/SSE state (`struct kvm_fpu`).
public typealias FPUState = kvm_fpu
/// The local APIC's 1 KiB register page (`struct kvm_lapic_state`).
public typealias LAPICState = kvm_lapic_state
/// Pending exceptions, interrupts, NMIs and SMIs (`struct kvm_vcpu_events`).
public typealias VCPUEvents = kvm_vcpu_events
/// DR0-DR3, DR6, DR7 (`struct kvm_debugregs`).
public typealias DebugRegisters = kvm_debugregs
/// Extended control registers (XCR0) (`struct kvm_xcrs`).
public typealias XCRs = kvm_xcrs

/// The multiprocessing state of a vCPU (`KVM_GET_MP_STATE`, api.rst 4.38).
public enum MPState: UInt32, Sendable {
    case runnable = 0        // KVM_MP_STATE_RUNNABLE
    case uninitialized = 1   // KVM_MP_STATE_UNINITIALIZED: an AP waiting for INIT
    case initReceived = 2    // KVM_MP_STATE_INIT_RECEIVED: waiting for SIPI
    case halted = 3          // KVM_MP_STATE_HALTED
    case sipiReceived = 4    // KVM_MP_STATE_SIPI_RECEIVED
}

extension KVMVCPU {
    /// One `KVM_GET_*` of a fixed-size struct.
    private func get<T>(_ initial: T, _ request: UInt, _ name: String) throws -> T {
        var value = initial
        try ioctlValue(fd.raw, request, &value, name)
        return value
    }

    /// One `KVM_SET_*` of a fixed-size struct.
    private func set<T>(_ value: T, _ request: UInt, _ name: String) throws {
        var copy = value
        try ioctlValue(fd.raw, request, &copy, name)
    }

    /// `KVM_GET_REGS`.
    public func registers() throws -> Registers { try get(Registers(), CKVM_GET_REGS, "KVM_GET_REGS") }

    /// `KVM_SET_REGS`.
    public func setRegisters(_ regs: Registers) throws { try set(regs, CKVM_SET_REGS, "KVM_SET_REGS") }

    /// `KVM_GET_SREGS`.
    public func specialRegisters() throws -> SpecialRegisters { try get(SpecialRegisters(), CKVM_GET_SREGS, "KVM_GET_SREGS") }

    /// `KVM_SET_SREGS`.
    public func setSpecialRegisters(_ sregs: SpecialRegisters) throws { try set(sregs, CKVM_SET_SREGS, "KVM_SET_SREGS") }

    /// `KVM_GET_FPU`.
    public func fpu() throws -> FPUState { try get(FPUState(), CKVM_GET_FPU, "KVM_GET_FPU") }

    /// `KVM_SET_FPU`.
    public func setFPU(_ fpu: FPUState) throws { try set(fpu, CKVM_SET_FPU, "KVM_SET_FPU") }

    /// `KVM_GET_LAPIC` (needs the in-kernel irqchip).
    public func lapic() throws -> LAPICState { try get(LAPICState(), CKVM_GET_LAPIC, "KVM_GET_LAPIC") }

    /// `KVM_SET_LAPIC`.
    public func setLAPIC(_ state: LAPICState) throws { try set(state, CKVM_SET_LAPIC, "KVM_SET_LAPIC") }

    /// `KVM_GET_VCPU_EVENTS`.
    public func events() throws -> VCPUEvents { try get(VCPUEvents(), CKVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS") }

    /// `KVM_SET_VCPU_EVENTS`.
    public func setEvents(_ events: VCPUEvents) throws { try set(events, CKVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS") }

    /// Queues exception `vector` for delivery at the next entry (`KVM_SET_VCPU_EVENTS`
    /// with only `KVM_VCPUEVENT_VALID_*` bits clear except the exception itself).
    /// `errorCode` is pushed for vectors that take one (#DF, #TS, #NP, #SS, #GP, #PF, #AC).
    public func injectException(vector: UInt8, errorCode: UInt32? = nil) throws {
        var e = try events()
        e.exception.injected = 1
        e.exception.nr = vector
        e.exception.has_error_code = errorCode == nil ? 0 : 1
        e.exception.error_code = errorCode ?? 0
        e.flags = 0  // only the exception block; leave NMI, SIPI and shadow state alone
        try setEvents(e)
    }

    /// Queues software interrupt `vector` (`int n`) for delivery at the next entry
    /// (`KVM_SET_VCPU_EVENTS`, `interrupt.injected` with `soft`): RIP must already point
    /// past the `int` instruction, which is the return address the frame gets.
    public func injectSoftwareInterrupt(vector: UInt8) throws {
        var e = try events()
        e.interrupt.injected = 1
        e.interrupt.nr = vector
        e.interrupt.soft = 1
        e.flags = 0
        try setEvents(e)
    }

    /// `KVM_NMI`: queues an NMI (in-kernel LAPIC).
    public func injectNMI() throws {
        _ = try ioctlInt(fd.raw, CKVM_NMI, 0, "KVM_NMI")
    }

    /// `KVM_GET_MP_STATE`.
    public func mpState() throws -> MPState {
        var s = kvm_mp_state()
        try ioctlValue(fd.raw, CKVM_GET_MP_STATE, &s, "KVM_GET_MP_STATE")
        guard let state = MPState(rawValue: s.mp_state) else {
            throw KVMError(operation: "KVM_GET_MP_STATE", errno: 0, detail: "unknown state \(s.mp_state)")
        }
        return state
    }

    /// `KVM_SET_MP_STATE`.
    public func setMPState(_ state: MPState) throws {
        var s = kvm_mp_state(mp_state: state.rawValue)
        try ioctlValue(fd.raw, CKVM_SET_MP_STATE, &s, "KVM_SET_MP_STATE")
    }

    /// `KVM_GET_XCRS`.
    public func xcrs() throws -> XCRs { try get(XCRs(), CKVM_GET_XCRS, "KVM_GET_XCRS") }

    /// One extended control register from `KVM_GET_XCRS` (XCR0 is index 0), or nil when
    /// KVM does not report it.
    public func extendedControlRegister(_ index: UInt32) throws -> UInt64? {
        let all = try xcrs()
        return withUnsafeBytes(of: all.xcrs) { raw in
            raw.bindMemory(to: kvm_xcr.self).prefix(Int(all.nr_xcrs)).first { $0.xcr == index }?.value
        }
    }

    /// `KVM_SET_XCRS`.
    public func setXCRs(_ xcrs: XCRs) throws { try set(xcrs, CKVM_SET_XCRS, "KVM_SET_XCRS") }

    /// `KVM_GET_DEBUGREGS`.
    public func debugRegisters() throws -> DebugRegisters { try get(DebugRegisters(), CKVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS") }

    /// `KVM_SET_DEBUGREGS`.
    public func setDebugRegisters(_ regs: DebugRegisters) throws { try set(regs, CKVM_SET_DEBUGREGS, "KVM_SET_DEBUGREGS") }

    /// `KVM_SET_CPUID2`: what CPUID reports to this vCPU.
    public func setCPUID(_ entries: [CPUIDEntry]) throws {
        try CPUIDEntry.store(entries, fd: fd.raw, request: CKVM_SET_CPUID2, name: "KVM_SET_CPUID2")
    }

    /// `KVM_GET_CPUID2`.
    public func cpuid() throws -> [CPUIDEntry] {
        try CPUIDEntry.fetch(fd: fd.raw, request: CKVM_GET_CPUID2, name: "KVM_GET_CPUID2")
    }

    /// `KVM_GET_MSRS`: the values of `indices`, in order. Fails when KVM returns fewer.
    public func msrs(_ indices: [UInt32]) throws -> [UInt64] {
        var entries = indices.map { kvm_msr_entry(index: $0, reserved: 0, data: 0) }
        let n = try transferMSRs(&entries, request: CKVM_GET_MSRS, name: "KVM_GET_MSRS")
        guard n == indices.count else {
            throw KVMError(operation: "KVM_GET_MSRS", errno: 0,
                           detail: "MSR \(hex(indices[n])) is not readable")
        }
        return entries.map(\.data)
    }

    /// `KVM_SET_MSRS`. Fails naming the first MSR KVM refused.
    public func setMSRs(_ values: [(index: UInt32, value: UInt64)]) throws {
        var entries = values.map { kvm_msr_entry(index: $0.index, reserved: 0, data: $0.value) }
        let n = try transferMSRs(&entries, request: CKVM_SET_MSRS, name: "KVM_SET_MSRS")
        guard n == values.count else {
            throw KVMError(operation: "KVM_SET_MSRS", errno: 0,
                           detail: "MSR \(hex(values[n].index)) was refused")
        }
    }

    func transferMSRs(_ entries: inout [kvm_msr_entry], request: UInt, name: String) throws -> Int {
        let header = 8  // struct kvm_msrs { u32 nmsrs; u32 pad; entries[] }
        let stride = MemoryLayout<kvm_msr_entry>.stride
        var buffer = [UInt8](repeating: 0, count: header + entries.count * stride)
        let rc = buffer.withUnsafeMutableBytes { raw -> Int32 in
            raw.storeBytes(of: UInt32(entries.count), as: UInt32.self)
            for (i, e) in entries.enumerated() {
                raw.storeBytes(of: e, toByteOffset: header + i * stride, as: kvm_msr_entry.self)
            }
            // SAFETY: raw holds a kvm_msrs header followed by entries.count kvm_msr_entry.
            let rc = ckvm_ioctl(fd.raw, request, raw.baseAddress)
            if rc >= 0 {
                for i in 0 ..< entries.count {
                    entries[i] = raw.loadUnaligned(fromByteOffset: header + i * stride, as: kvm_msr_entry.self)
                }
            }
            return rc
        }
        guard rc >= 0 else { throw KVMError.last(name) }
        return Int(rc)
    }

    /// `KVM_SET_GUEST_DEBUG`: `control` is a `KVM_GUESTDBG_*` mask; `debugreg` DR0-DR7.
    public func setGuestDebug(control: UInt32, debugRegisters: [UInt64] = []) throws {
        var dbg = kvm_guest_debug()
        dbg.control = control
        withUnsafeMutableBytes(of: &dbg.arch.debugreg) { raw in
            for (i, v) in debugRegisters.prefix(8).enumerated() {
                raw.storeBytes(of: v, toByteOffset: i * 8, as: UInt64.self)
            }
        }
        try ioctlValue(fd.raw, CKVM_SET_GUEST_DEBUG, &dbg, "KVM_SET_GUEST_DEBUG")
    }
}

func hex<T: BinaryInteger>(_ v: T) -> String { "0x" + String(v, radix: 16) }
