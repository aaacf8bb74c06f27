import Devices
import KVM
import Logging
import Synchronization

/// The IOAPIC's way to KVM's local APICs with a split irqchip (`IRQChipMode.split`):
/// each message goes out with `KVM_SIGNAL_MSI`, and the unmasked redirection entries
/// become the VM's GSI routes (`KVM_SET_GSI_ROUTING`, GSI = pin), so that an irqfd on a
/// pin's GSI (a virtio device's interrupt) reaches the guest without passing through
/// the VMM, and so that KVM reports the EOIs of level-triggered vectors
/// (`KVM_EXIT_IOAPIC_EOI`). Routes are set only when they change: each call waits for
/// an SRCU grace period.
final class KVMInterruptMessages: InterruptMessageSink {
    let vm: KVMVM
    let logger: Logger
    /// The routes KVM has, by pin (KVM starts a split irqchip with none).
    private let applied = Mutex<[InterruptMessage?]>(Array(repeating: nil, count: IOAPIC.pinCount))

    init(vm: KVMVM, logger: Logger) {
        self.vm = vm
        self.logger = logger
    }

    func deliver(_ message: InterruptMessage) {
        // Fails only once the VM is being torn down: nothing is left to interrupt.
        _ = try? vm.signalMSI(addressLow: message.address, addressHigh: 0, data: message.data)
    }

    func routesChanged(_ routes: [InterruptMessage?]) {
        applied.withLock { current in
            guard current != routes else { return }
            let table = routes.enumerated().compactMap { pin, message in
                message.map { MSIRoute(gsi: UInt32(pin), addressLow: $0.address, data: $0.data) }
            }
            do {
                try vm.setGSIRouting(table)
                current = routes
            } catch {
                // Kept as it was: the next change tries again with the whole table.
                logger.error("IOAPIC: \(error); irqfd interrupts keep their previous routes")
            }
        }
    }
}
