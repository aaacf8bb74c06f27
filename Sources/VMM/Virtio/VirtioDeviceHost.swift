import Devices
import GuestMemory
import KVM
import Synchronization

/// A virtio-mmio device as the machine runs it: the transport on the MMIO bus, its
/// place in the `DeviceLayout`, and the notification path — an ioeventfd per queue
/// watched by a thread of the device's own and an irqfd for its interrupt, or the
/// synchronous bus path on the vCPU thread with KVM_IRQ_LINE.
///
/// A `VirtioEventDevice` (vsock, net) always has one thread, running its own event
/// loop: each queue's eventfd is signalled by KVM (ioeventfd) or, on the bus path, by
/// the transport from the MMIO exit, and the loop waits on them with its host
/// descriptors.
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
        let eventDevice = device as? any VirtioEventDevice
        if notification == .ioeventfd || eventDevice != nil {
            for queue in device.queueSizes.indices {
                let event = try EventFD()
                // Datamatch on the queue index: a write of another value still exits and
                // is handled (or ignored) by the transport.
                if notification == .ioeventfd {
                    try vm.registerIOEventFD(event, address: slot.base + VirtioMMIOTransport.queueNotifyOffset, length: 4,
                                             datamatch: UInt64(queue))
                }
                events.append(event)
                fds.append(event.rawDescriptor)
            }
        }
        if eventDevice != nil {
            let stop = try EventFD()
            fds.append(stop.rawDescriptor)
            events.append(stop)
        }
        queueEvents = events
        descriptors = fds
        let transport = self.transport
        guard !events.isEmpty else { return }   // a request device on the bus path: no thread
        transport.onNotify = { [events] queue in events[queue].signal() }
        if let eventDevice {
            let queueFDs = events.dropLast().map(\.rawDescriptor)
            let stopFD = events[events.count - 1].rawDescriptor
            threads.append(try HostThread(name: slot.name) {
                eventDevice.run(transport: transport, queueEvents: queueFDs, stop: stopFD)
            })
            return
        }
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
