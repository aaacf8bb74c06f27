import CKVM

/// A KVM state structure from the UAPI headers (`kvm_regs`, `kvm_sregs`, `kvm_lapic_state`,
/// ...): fixed-size plain data whose layout is part of KVM's ABI, so that its bytes are a
/// stable serialisation (what a snapshot stores) and any bit pattern of the right size is
/// a value of the type (KVM itself validates what it is handed on the way back in).
public protocol KVMPlainState: Sendable {
    init()
}

extension kvm_regs: KVMPlainState {}
extension kvm_sregs: KVMPlainState {}
extension kvm_fpu: KVMPlainState {}
extension kvm_lapic_state: KVMPlainState {}
extension kvm_vcpu_events: KVMPlainState {}
extension kvm_debugregs: KVMPlainState {}
extension kvm_xcrs: KVMPlainState {}
extension kvm_irqchip: KVMPlainState {}
extension kvm_pit_state2: KVMPlainState {}
extension kvm_clock_data: KVMPlainState {}

extension KVMPlainState {
    /// The structure's size in bytes, as the ioctls exchange it.
    public static var stateSize: Int { MemoryLayout<Self>.size }

    /// The structure's bytes.
    public var stateBytes: [UInt8] {
        // SAFETY: reads exactly MemoryLayout<Self>.size bytes of a plain C struct.
        withUnsafeBytes(of: self) { Array($0) }
    }

    /// The value whose bytes are `bytes`; nil unless there are exactly `stateSize` of them.
    public init?(stateBytes bytes: [UInt8]) {
        guard bytes.count == Self.stateSize else { return nil }
        var value = Self()
        // SAFETY: writes exactly MemoryLayout<Self>.size bytes into a plain C struct, for
        // which every bit pattern is a valid value.
        withUnsafeMutableBytes(of: &value) { dst in
            bytes.withUnsafeBytes { src in dst.copyMemory(from: src) }
        }
        self = value
    }
}

extension kvm_vcpu_events {
    /// `KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR`: the flags that
    /// make KVM_SET_VCPU_EVENTS also write the NMI-pending bit and the SIPI vector, which
    /// it otherwise leaves alone (a restore wants them).
    public static let alsoNMIPendingAndSIPI = UInt32(KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR)
}
