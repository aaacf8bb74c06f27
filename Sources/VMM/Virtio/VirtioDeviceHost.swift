import Devices
import GuestMemory
import KVM
import Synchronization

/// A virtio-mmio device as the machine runs it: the transport on the MMIO bus, its
/// place in the `DeviceLayout`, and the notification path — an ioeventfd per queue
/// watched by a thread of the device's own and an irqfd for its interrupt, or the
/// synchronous bus path on the vCPU thread with KVM_IRQ_LINE.
final class VirtioDeviceHost: @unchecked Sendable {
    // @unchecked: `threads` is written in init and in stop() (machine teardown, once).
    let slot: DeviceLayout.Slot
    let transport: VirtioMMIOTransport
    let notification: VirtioNotification
    /// Every descriptor the device uses (eventfds, the disk image): the worker's sandbox keeps them.
    let descriptors: [Int32]
    private let queueEvents: [EventFD]
    private var threads: [HostThread] = []
    private let stopping = StopFlag()

    init(slot: DeviceLayout.Slot, device: any VirtioDevice, vm: KVMVM, memory: GuestMemory,
         notification: VirtioNotification, irqchip: Bool, extraDescriptors: [Int32]) throws {
        self.slot = slot
        self.notification = notification
        let interrupt: any InterruptLine
        var fds = extraDescriptors
        if !irqchip {
            interrupt = NoInterruptLine()
        } else if notification == .ioeventfd {
            let event = try EventFD()
            try vm.registerIRQFD(event, gsi: slot.gsi)
            interrupt = IRQFDLine(event: event)
            fds.append(event.rawDescriptor)
        } else {
            interrupt = KVMInterruptLine(vm: vm, gsi: slot.gsi)
        }
        transport = VirtioMMIOTransport(device: device, memory: memory, interrupt: interrupt)
        var events: [EventFD] = []
        if notification == .ioeventfd {
            for queue in device.queueSizes.indices {
                let event = try EventFD()
                // Datamatch on the queue index: a write of another value still exits and
                // is handled (or ignored) by the transport.
                try vm.registerIOEventFD(event, address: slot.base + VirtioMMIOTransport.queueNotifyOffset, length: 4,
                                         datamatch: UInt64(queue))
                events.append(event)
                fds.append(event.rawDescriptor)
            }
        }
        queueEvents = events
        descriptors = fds
        guard notification == .ioeventfd else { return }
        let transport = self.transport
        transport.onNotify = { [events] queue in events[queue].signal() }
        for (queue, event) in events.enumerated() {
            threads.append(try HostThread(name: "\(slot.name)-q\(queue)") { [stopping] in
                while true {
                    _ = event.wait()
                    if stopping.isSet { return }
                    transport.processQueue(queue)
                }
            })
        }
    }

    /// A machine whose init failed after its devices were built never runs its deinit:
    /// the device threads end here then.
    deinit { stop() }

    /// Ends the device threads (machine teardown).
    func stop() {
        stopping.set()
        for event in queueEvents { event.signal() }
        for thread in threads { thread.join() }
        threads = []
    }
}

/// A flag the device threads read after each wake-up.
final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}
