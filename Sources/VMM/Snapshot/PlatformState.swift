import Dispatch
import KVM
import Snapshot
#if canImport(Glibc)
import Glibc
#endif

/// KVM's in-kernel interrupt controllers (KVM_GET_IRQCHIP): the master and slave PICs
/// and the IOAPIC, in section `irqchip`. With KVM_CAP_SPLIT_IRQCHIP the IOAPIC is the
/// VMM's, a device on the MMIO bus with its own section (`IOAPIC+Snapshot`); the local
/// APICs are part of each vCPU's state either way.
final class KVMInterruptControllers: SnapshotStateful {
    let vm: KVMVM
    init(vm: KVMVM) { self.vm = vm }

    var snapshotKind: String { "irqchip" }
    var snapshotVersion: UInt16 { 1 }

    func saveState(into e: inout SnapshotEncoder) throws(SnapshotError) {
        for chip in KVMVM.IRQChip.allCases {
            do { e.raw(try vm.irqchip(chip).stateBytes) } catch { throw .kvm(part: "the \(chip.name)", "\(error)") }
        }
    }

    func restoreState(from d: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        for chip in KVMVM.IRQChip.allCases {
            guard let state = IRQChipState(stateBytes: try d.raw(IRQChipState.stateSize, chip.name)) else { throw d.malformed(chip.name) }
            guard state.chip_id == chip.rawValue else { throw d.malformed("the \(chip.name) is chip \(state.chip_id)") }
            do { try vm.setIRQChip(chip, state) } catch { throw .kvm(part: "the \(chip.name)", "\(error)") }
        }
    }
}

/// KVM's in-kernel i8254 (KVM_GET_PIT2), in section `pit`. KVM_SET_PIT2 reloads each
/// channel's count from "now", so a counter continues from where it was, not from
/// where the wall clock would have taken it.
final class KVMPIT: SnapshotStateful {
    let vm: KVMVM
    init(vm: KVMVM) { self.vm = vm }

    var snapshotKind: String { "pit" }
    var snapshotVersion: UInt16 { 1 }

    func saveState(into e: inout SnapshotEncoder) throws(SnapshotError) {
        do { e.raw(try vm.pit().stateBytes) } catch { throw .kvm(part: "the PIT", "\(error)") }
    }

    func restoreState(from d: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        guard let state = PITState(stateBytes: try d.raw(PITState.stateSize, "PIT state")) else { throw d.malformed("PIT state") }
        do { try vm.setPIT(state) } catch { throw .kvm(part: "the PIT", "\(error)") }
    }
}

/// The kvmclock (KVM_GET_CLOCK), in section `clock`, with the host's CLOCK_REALTIME at
/// the time: a restore sets the guest's clock to where it was (`continued`) or to where
/// it would be had the guest run on (`advanced` by the wall time that passed).
final class KVMClock: SnapshotStateful {
    let vm: KVMVM
    /// Nanoseconds to add on restore (0: the clock continues where it stopped).
    var advance: UInt64 = 0
    init(vm: KVMVM) { self.vm = vm }

    var snapshotKind: String { "clock" }
    var snapshotVersion: UInt16 { 1 }

    func saveState(into e: inout SnapshotEncoder) throws(SnapshotError) {
        do { e.u64(try vm.clock().clock) } catch { throw .kvm(part: "the kvmclock", "\(error)") }
        e.u64(realtimeNanoseconds())
    }

    func restoreState(from d: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        let clock = try d.u64()
        _ = try d.u64()   // the realtime, read by `elapsed(since:)` before the vCPUs are restored
        do { try vm.setClock(nanoseconds: clock &+ advance) } catch { throw .kvm(part: "the kvmclock", "\(error)") }
    }

    /// Wall-clock nanoseconds since the snapshot in `section` was taken (0 if the host
    /// clock went back).
    static func elapsed(since section: SnapshotSection) throws(SnapshotError) -> UInt64 {
        var d = SnapshotDecoder(section.payload, section: section.name)
        _ = try d.u64()
        let then = try d.u64()
        let now = realtimeNanoseconds()
        return now > then ? now - then : 0
    }
}

/// CLOCK_REALTIME in nanoseconds since the epoch.
func realtimeNanoseconds() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_REALTIME, &t)
    return UInt64(t.tv_sec) &* 1_000_000_000 &+ UInt64(t.tv_nsec)
}
