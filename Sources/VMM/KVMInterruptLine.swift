import Devices
import KVM

/// A device interrupt line wired to a GSI of KVM's in-kernel IOAPIC/PIC (`KVM_IRQ_LINE`).
struct KVMInterruptLine: InterruptLine {
    let vm: KVMVM
    let gsi: UInt32

    func set(_ level: Bool) {
        // An IRQ_LINE failure means the irqchip is gone (VM being torn down): nothing to do.
        try? vm.setIRQLine(gsi, level: level)
    }
}

/// A device interrupt line wired to a GSI through an irqfd (`KVM_IRQFD`): one eventfd
/// write sends an edge, without an ioctl and from any thread.
struct IRQFDLine: InterruptLine {
    let event: EventFD

    /// An irqfd only sends edges; a level cannot be held on it (that needs a resample fd).
    func set(_ level: Bool) { if level { event.signal() } }

    @inline(__always)
    func trigger() { event.signal() }
}

/// The line of a device on a machine without an in-kernel irqchip: nothing to drive.
struct NoInterruptLine: InterruptLine {
    func set(_ level: Bool) {}
}

/// Forwards device platform events to the machine once it exists (devices are built
/// before the machine finishes initialising, so they cannot capture it directly).
final class PlatformEventRelay: @unchecked Sendable {
    // @unchecked: `target` is set once, before any vCPU runs, and only read afterwards.
    weak var target: Machine?
    func send(_ event: PlatformEvent) { target?.platformEvent(event) }
    func stop(_ reason: StopReason) { target?.stop(reason) }
}

/// The exit dispatcher's way to the machine's debugger, which is built after it (it needs
/// the vCPUs). Weak: the debugger owns the vCPU runners, which own the dispatcher.
final class DebugExitRelay: @unchecked Sendable {
    // @unchecked: `target` is set once, before any vCPU runs, and only read afterwards.
    weak var target: MachineDebugger?
}
