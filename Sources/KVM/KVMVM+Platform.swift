import CKVM

/// The in-kernel interrupt controllers' state (`struct kvm_irqchip`: a PIC or the IOAPIC).
public typealias IRQChipState = kvm_irqchip
/// The in-kernel i8254's three channels (`struct kvm_pit_state2`).
public typealias PITState = kvm_pit_state2
/// The kvmclock base (`struct kvm_clock_data`).
public typealias ClockData = kvm_clock_data

extension KVMVM {
    /// The chips of `KVM_CREATE_IRQCHIP` (`KVM_IRQCHIP_*`).
    public enum IRQChip: UInt32, Sendable, CaseIterable {
        case picMaster = 0, picSlave = 1, ioapic = 2

        public var name: String {
            switch self {
            case .picMaster: return "pic-master"
            case .picSlave: return "pic-slave"
            case .ioapic: return "ioapic"
            }
        }
    }

    /// `KVM_GET_IRQCHIP` of one chip.
    public func irqchip(_ chip: IRQChip) throws -> IRQChipState {
        var state = IRQChipState()
        state.chip_id = chip.rawValue
        try ioctlValue(fd.raw, CKVM_GET_IRQCHIP, &state, "KVM_GET_IRQCHIP")
        return state
    }

    /// `KVM_SET_IRQCHIP`; the chip is the one named in `state.chip_id`, which must be `chip`.
    public func setIRQChip(_ chip: IRQChip, _ state: IRQChipState) throws {
        var copy = state
        copy.chip_id = chip.rawValue
        try ioctlValue(fd.raw, CKVM_SET_IRQCHIP, &copy, "KVM_SET_IRQCHIP")
    }

    /// `KVM_GET_PIT2`.
    public func pit() throws -> PITState {
        var state = PITState()
        try ioctlValue(fd.raw, CKVM_GET_PIT2, &state, "KVM_GET_PIT2")
        return state
    }

    /// `KVM_SET_PIT2`.
    public func setPIT(_ state: PITState) throws {
        var copy = state
        try ioctlValue(fd.raw, CKVM_SET_PIT2, &copy, "KVM_SET_PIT2")
    }

    /// `KVM_GET_CLOCK`: the kvmclock value now, in ns, with the host's realtime and TSC
    /// when KVM reports them (`flags`: KVM_CLOCK_REALTIME, KVM_CLOCK_HOST_TSC).
    public func clock() throws -> ClockData {
        var data = ClockData()
        try ioctlValue(fd.raw, CKVM_GET_CLOCK, &data, "KVM_GET_CLOCK")
        return data
    }

    /// `KVM_SET_CLOCK` to `nanoseconds` (no flags: the guest's clock reads that value now).
    public func setClock(nanoseconds: UInt64) throws {
        var data = ClockData()
        data.clock = nanoseconds
        try ioctlValue(fd.raw, CKVM_SET_CLOCK, &data, "KVM_SET_CLOCK")
    }
}
