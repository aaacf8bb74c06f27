import GuestMemory
import Snapshot

/// A virtio-mmio device's state: the transport's registers, every queue (what the
/// driver configured and how far the device got) and the device's own section. The
/// device must be `SnapshotStateful` too, or the snapshot fails naming it.
extension VirtioMMIOTransport: SnapshotStateful {
    public var snapshotKind: String { "virtio-mmio" }
    public var snapshotState: (any SnapshotStateful)? { self }
    public var snapshotVersion: UInt16 { 1 }

    /// Status bits a driver or the device can have set (2.1).
    static let knownStatusBits: UInt32 = Virtio.Status.acknowledge | Virtio.Status.driver | Virtio.Status.driverOK
        | Virtio.Status.featuresOK | Virtio.Status.deviceNeedsReset | Virtio.Status.failed

    var statefulDevice: any SnapshotStateful {
        get throws(SnapshotError) {
            guard let stateful = device.snapshotState else {
                throw .unsupportedDevice("virtio device type \(device.deviceType.rawValue) (\(type(of: device)))")
            }
            return stateful
        }
    }

    /// Settles the device for a snapshot, with the vCPUs paused (nothing new arrives from
    /// the driver): a request device serves every chain the driver made available, on
    /// the calling thread (under each queue's lock, so a batch in progress is waited
    /// for); then the transport freezes — `withQueue` runs nothing — and an event device
    /// gives back the chains it was holding. Afterwards the queues' state is the whole
    /// truth and no device thread writes guest memory until `thaw()`.
    public func quiesce() {
        if requestDevice != nil, status.load(ordering: .acquiring) & Virtio.Status.driverOK != 0 {
            for index in queues.indices where queues[index].lock.withLock({ $0.state.ready }) { processQueue(index) }
        }
        frozen.store(true, ordering: .releasing)
        for q in queues { q.lock.withLock { _ in } }   // a withQueue under way finishes
        device.giveBackHeldChains(to: self)
    }

    /// Ends a `quiesce()` on a machine that runs on: event devices are woken on every
    /// queue, since notifications that came while frozen went unserved.
    public func thaw() {
        frozen.store(false, ordering: .releasing)
        guard requestDevice == nil, let onNotify else { return }
        for index in queues.indices { onNotify(index) }
    }

    /// Puts the last `count` chains taken from queue `index` back on offer (they are the
    /// newest: the driver sees them as never taken), for `VirtioDevice.giveBackHeldChains`.
    public func giveBack(queue index: Int, count: Int) {
        guard count > 0, index >= 0, index < queues.count else { return }
        queues[index].lock.withLock { $0.state.nextAvailable &-= UInt16(truncatingIfNeeded: count) }
    }

    public func saveState(into e: inout SnapshotEncoder) throws(SnapshotError) {
        let stateful = try statefulDevice
        e.u32(device.deviceType.rawValue); e.u64(offeredFeatures); e.data(config.withLock { $0 })
        let s = state
        e.u32(s.status); e.u32(s.deviceFeaturesSelect); e.u64(s.driverFeatures); e.u32(s.driverFeaturesSelect)
        e.u32(s.queueSelect); e.u32(s.interruptStatus); e.u32(s.configGeneration)
        let flags = queues.map { q in q.lock.withLock { ($0.eventIndex, $0.indirect) } }
        e.count(s.queues.count)
        for (q, f) in zip(s.queues, flags) {
            e.u16(q.maxSize); e.u16(q.size); e.bool(q.ready)
            e.u64(q.descriptorTable); e.u64(q.availableRing); e.u64(q.usedRing)
            e.u16(q.nextAvailable); e.u16(q.nextUsed)
            e.bool(f.0); e.bool(f.1)
        }
        let inner = try stateful.snapshotSection(named: "device")
        e.u16(inner.version); e.data(inner.payload)
    }

    public func restoreState(from d: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        let stateful = try statefulDevice
        let type = try d.u32(), features = try d.u64(), space = try d.data(maxLength: 4096, "configuration space")
        guard type == device.deviceType.rawValue, features == offeredFeatures else {
            throw .mismatch("\(d.section): the snapshot's device (type \(type), features 0x\(String(features, radix: 16))) is not this one (type \(device.deviceType.rawValue), features 0x\(String(offeredFeatures, radix: 16)))")
        }
        var r = VirtioTransportState()
        r.status = try d.u32(); r.deviceFeaturesSelect = try d.u32(); r.driverFeatures = try d.u64()
        r.driverFeaturesSelect = try d.u32(); r.queueSelect = try d.u32(); r.interruptStatus = try d.u32()
        r.configGeneration = try d.u32()
        guard r.status & ~Self.knownStatusBits == 0, r.driverFeatures & ~offeredFeatures == 0,
              r.interruptStatus & ~(Virtio.Interrupt.usedBuffer | Virtio.Interrupt.configChange) == 0 else {
            throw d.malformed("status 0x\(String(r.status, radix: 16)), driver features 0x\(String(r.driverFeatures, radix: 16)), interrupt status 0x\(String(r.interruptStatus, radix: 16))")
        }
        let count = try d.count(max: 64, elementSize: 32, "queues")
        guard count == queues.count else { throw .mismatch("\(d.section): \(count) queues in the snapshot, \(queues.count) on this device") }
        var restored: [VirtQueue] = []
        for (i, q) in queues.enumerated() {
            let maxSize = try d.u16()
            var queue = VirtQueue(maxSize: maxSize)
            queue.state.size = try d.u16(); queue.state.ready = try d.bool()
            queue.state.descriptorTable = try d.u64(); queue.state.availableRing = try d.u64(); queue.state.usedRing = try d.u64()
            queue.state.nextAvailable = try d.u16(); queue.state.nextUsed = try d.u16()
            queue.eventIndex = try d.bool(); queue.indirect = try d.bool()
            guard maxSize == q.lock.withLock({ $0.state.maxSize }) else { throw .mismatch("\(d.section): queue \(i) has another maximum size") }
            if queue.state.ready, let problem = queue.configurationProblem(memory: memory) {
                throw d.malformed("queue \(i): \(problem)")
            }
            restored.append(queue)
        }
        let innerVersion = try d.u16()
        let inner = SnapshotSection(name: d.section + ".device", version: innerVersion, payload: try d.data(maxLength: 1 << 20, "device state"))
        try stateful.restore(from: inner)
        for (q, queue) in zip(queues, restored) { q.lock.withLock { $0 = queue } }
        r.queues = restored.map(\.state)
        // The device is the authority on its configuration (a clone's own vsock CID or
        // MAC): a driver that knew another one sees a new generation, and an interrupt.
        let current = config.withLock { $0 }
        if current != space {
            r.configGeneration &+= 1
            configChangedByRestore.store(true, ordering: .releasing)
        }
        let registersNow = r
        registers.withLock { $0 = registersNow }
        status.store(r.status, ordering: .releasing)
        pendingInterrupts.store(r.interruptStatus, ordering: .releasing)
    }

    /// After a restore, before the guest runs: the device is told the features the
    /// driver negotiated (a tap's offloads, a vsock listener), a device with news for the
    /// guest gives it (`VirtioDevice.restored`), a pending interrupt is sent again and every
    /// ready queue is looked at. An edge sent through an irqfd just before the snapshot
    /// may not have reached the interrupt controller yet (KVM injects it from a work
    /// queue), so it goes again; a driver reads InterruptStatus and takes a second edge
    /// for the same bits as nothing new.
    public func resumeAfterRestore() {
        guard status.load(ordering: .acquiring) & Virtio.Status.driverOK != 0 else { return }
        device.activate(features: registers.withLock { $0.driverFeatures })
        device.restored(transport: self)
        if configChangedByRestore.exchange(false, ordering: .acquiringAndReleasing) {
            pendingInterrupts.bitwiseOr(Virtio.Interrupt.configChange, ordering: .acquiringAndReleasing)
        }
        if pendingInterrupts.load(ordering: .acquiring) != 0 { interrupt.trigger() }
        for index in queues.indices where queues[index].lock.withLock({ $0.state.ready }) {
            if let onNotify { onNotify(index) } else { processQueue(index) }
        }
    }
}

/// A disk's identity: the size, the read-only flag and the serial the guest saw. The
/// image's contents are the disk's own (not in the snapshot).
extension BlockDevice: SnapshotStateful {
    public var snapshotKind: String { "virtio-blk" }
    public var snapshotState: (any SnapshotStateful)? { self }
    public var snapshotVersion: UInt16 { 1 }

    public func saveState(into e: inout SnapshotEncoder) throws(SnapshotError) {
        e.u64(capacity); e.bool(readOnly); e.data(serial)
    }

    public func restoreState(from d: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        let sectors = try d.u64(), ro = try d.bool(), id = try d.data(maxLength: Self.serialLength, "serial")
        guard sectors == capacity else {
            throw .mismatch("the disk has \(capacity) sectors; the guest knew one of \(sectors) (\(d.section))")
        }
        guard ro == readOnly, id == serial else { throw .mismatch("the disk's read-only flag or serial differs from the snapshot's (\(d.section))") }
    }
}

/// No state beyond its queue.
extension EntropyDevice: SnapshotStateful {
    public var snapshotKind: String { "virtio-rng" }
    public var snapshotState: (any SnapshotStateful)? { self }
    public var snapshotVersion: UInt16 { 1 }
    public func saveState(into e: inout SnapshotEncoder) throws(SnapshotError) {}
    public func restoreState(from d: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {}
}
