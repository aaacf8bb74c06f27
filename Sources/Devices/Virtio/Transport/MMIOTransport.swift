import GuestMemory
import Synchronization

/// The registers of a virtio-mmio transport that are not queue state, as plain values
/// (for snapshots): 4.2.2 "MMIO Device Register Layout".
public struct VirtioTransportState: Sendable, Equatable {
    public var status: UInt32 = 0
    public var deviceFeaturesSelect: UInt32 = 0
    public var driverFeatures: UInt64 = 0
    public var driverFeaturesSelect: UInt32 = 0
    public var queueSelect: UInt32 = 0
    public var interruptStatus: UInt32 = 0
    public var configGeneration: UInt32 = 0
    public var queues: [VirtQueueState] = []

    public init(queues: [VirtQueueState] = []) { self.queues = queues }
}

/// The virtio 1.x MMIO transport, register layout version 2 ("Virtio Over MMIO", 4.2):
/// a 4 KiB window of 32-bit registers and the device configuration space at 0x100.
///
/// Register accesses arrive on vCPU threads (the MMIO bus); queue processing runs on
/// whichever thread a notification is delivered to — the vCPU's own (the synchronous
/// bus path) or a device thread woken by an ioeventfd, as the machine decides through
/// `onNotify`. Each queue has its own lock; a reset takes them all, so it waits for a
/// batch in progress.
///
/// Interrupts are edge-triggered: every used-buffer or configuration-change event sets
/// its InterruptStatus bit and sends one edge; the driver reads InterruptStatus and
/// acknowledges what it saw, and an event after its read is a new edge. A level line
/// would have to stay asserted until InterruptACK, which with an irqfd needs a resample
/// fd and a userspace wake-up at every guest EOI; edges need neither (as Firecracker).
public final class VirtioMMIOTransport: BusDevice, @unchecked Sendable {
    // @unchecked: `onNotify` is set once before any vCPU runs and only read afterwards;
    // everything else is immutable or behind its lock or atomic.

    /// The size of each transport's window (one page: ioeventfds and guest mappings
    /// stay page-granular).
    public static let windowSize: UInt64 = 0x1000
    /// QueueNotify's offset: where an ioeventfd watches.
    public static let queueNotifyOffset: UInt64 = 0x050
    static let magic: UInt32 = 0x7472_6976          // "virt"
    static let version: UInt32 = 2
    /// "SVMM", this VMM's vendor ID.
    public static let vendorID: UInt32 = 0x4D4D_5653

    enum Register: UInt64 {
        case magic = 0x000, version = 0x004, deviceID = 0x008, vendorID = 0x00C
        case deviceFeatures = 0x010, deviceFeaturesSelect = 0x014
        case driverFeatures = 0x020, driverFeaturesSelect = 0x024
        case queueSelect = 0x030, queueNumMax = 0x034, queueNum = 0x038, queueReady = 0x044
        case queueNotify = 0x050, interruptStatus = 0x060, interruptACK = 0x064, status = 0x070
        case queueDescLow = 0x080, queueDescHigh = 0x084, queueDriverLow = 0x090, queueDriverHigh = 0x094
        case queueDeviceLow = 0x0A0, queueDeviceHigh = 0x0A4
        case shmSelect = 0x0AC, shmLengthLow = 0x0B0, shmLengthHigh = 0x0B4, shmBaseLow = 0x0B8, shmBaseHigh = 0x0BC
        case configGeneration = 0x0FC
    }
    static let configOffset: UInt64 = 0x100

    public let device: any VirtioDevice
    let memory: GuestMemory
    let interrupt: any InterruptLine
    /// What the device offers: its own bits plus the transport's.
    public let offeredFeatures: UInt64
    /// The device's configuration space as the driver last could read it; refreshed by
    /// `configurationChanged()`.
    let config: Mutex<[UInt8]>
    /// The device as a `VirtioRequestDevice`, whose queues the transport serves itself;
    /// nil for a `VirtioEventDevice`, which takes its chains through `withQueue`.
    let requestDevice: (any VirtioRequestDevice)?
    let registers = Mutex(VirtioTransportState())
    let queues: [LockedQueue]
    /// Mirrors of `status` and `interruptStatus` for the lock-free notify and interrupt paths.
    let status = Atomic<UInt32>(0)
    let pendingInterrupts = Atomic<UInt32>(0)
    /// Set while a snapshot is taken: `withQueue` runs nothing, so an event device's
    /// thread (woken by its host socket or tap) leaves the rings and guest memory alone.
    let frozen = Atomic<Bool>(false)
    /// A restore found the device's configuration different from the snapshot's.
    let configChangedByRestore = Atomic<Bool>(false)
    /// Why the device last set DEVICE_NEEDS_RESET (for logs and tests).
    public let lastQueueError = Mutex<VirtioError?>(nil)

    /// What a QueueNotify write does, set by the machine before the vCPUs run; nil
    /// processes the queue on the notifying thread.
    public var onNotify: (@Sendable (Int) -> Void)?

    public init(device: any VirtioDevice, memory: GuestMemory, interrupt: any InterruptLine) {
        self.device = device
        self.memory = memory
        self.interrupt = interrupt
        offeredFeatures = device.deviceFeatures | Virtio.Feature.version1 | Virtio.Feature.indirectDescriptors
            | Virtio.Feature.eventIndex
        config = Mutex(device.configSpace)
        requestDevice = device as? any VirtioRequestDevice
        queues = device.queueSizes.map { LockedQueue(VirtQueue(maxSize: $0)) }
    }

    /// The transport's registers and queues now, as plain values.
    public var state: VirtioTransportState {
        var s = registers.withLock { $0 }
        s.status = status.load(ordering: .acquiring)
        s.interruptStatus = pendingInterrupts.load(ordering: .acquiring)
        s.queues = queues.map { $0.lock.withLock { $0.state } }
        return s
    }

    /// The device status register (2.1).
    public var deviceStatus: UInt32 { status.load(ordering: .acquiring) }

    // MARK: - Registers

    public func read(offset: UInt64, size: Int) -> UInt64 {
        if offset >= Self.configOffset { return readConfig(offset - Self.configOffset, size: size) }
        // 4.2.2.2: the driver uses 32-bit aligned accesses for the registers.
        guard size == 4, let register = Register(rawValue: offset) else { return 0 }
        return UInt64(registers.withLock { r -> UInt32 in
            switch register {
            case .magic: return Self.magic
            case .version: return Self.version
            case .deviceID: return device.deviceType.rawValue
            case .vendorID: return Self.vendorID
            case .deviceFeatures:
                return r.deviceFeaturesSelect < 2 ? UInt32(truncatingIfNeeded: offeredFeatures >> (32 * UInt64(r.deviceFeaturesSelect))) : 0
            case .queueNumMax: return selectedQueue(r).map { q in q.lock.withLock { UInt32($0.state.maxSize) } } ?? 0
            case .queueReady: return selectedQueue(r).map { q in q.lock.withLock { $0.state.ready ? 1 : 0 } } ?? 0
            case .interruptStatus: return pendingInterrupts.load(ordering: .acquiring)
            case .status: return status.load(ordering: .acquiring)
            case .configGeneration: return r.configGeneration
            case .shmLengthLow, .shmLengthHigh: return 0xFFFF_FFFF   // no shared memory regions
            default: return 0                                         // write-only registers
            }
        })
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard offset < Self.configOffset else { return }   // these devices' configuration is read-only
        guard size == 4, let register = Register(rawValue: offset) else { return }
        let v = UInt32(truncatingIfNeeded: value)
        switch register {
        case .queueNotify: return notify(queue: Int(v))
        case .interruptACK:
            pendingInterrupts.bitwiseAnd(~v, ordering: .acquiringAndReleasing)
            return
        case .status: return writeStatus(v)
        default: break
        }
        registers.withLock { r in
            let deviceStatus = status.load(ordering: .acquiring)
            switch register {
            case .deviceFeaturesSelect: r.deviceFeaturesSelect = v
            case .driverFeaturesSelect: r.driverFeaturesSelect = v
            case .driverFeatures:
                // Only while negotiating (3.1.1 steps 4-5).
                guard deviceStatus & Virtio.Status.driver != 0, deviceStatus & Virtio.Status.featuresOK == 0,
                      r.driverFeaturesSelect < 2 else { return }
                let shift = 32 * UInt64(r.driverFeaturesSelect)
                r.driverFeatures = (r.driverFeatures & ~(0xFFFF_FFFF << shift)) | (UInt64(v) << shift)
            case .queueSelect: r.queueSelect = v
            case .queueNum, .queueReady, .queueDescLow, .queueDescHigh, .queueDriverLow, .queueDriverHigh,
                 .queueDeviceLow, .queueDeviceHigh:
                guard let queue = selectedQueue(r) else { return }
                // Queues are set up after FEATURES_OK and before DRIVER_OK (3.1.1 step 7).
                guard deviceStatus & Virtio.Status.featuresOK != 0, deviceStatus & Virtio.Status.driverOK == 0 else { return }
                queue.lock.withLock { q in configure(&q, register, v, features: r.driverFeatures) }
            default: break   // read-only registers
            }
        }
    }

    private func selectedQueue(_ r: VirtioTransportState) -> LockedQueue? {
        Int(exactly: r.queueSelect).flatMap { $0 < queues.count ? queues[$0] : nil }
    }

    private func configure(_ q: inout VirtQueue, _ register: Register, _ v: UInt32, features: UInt64) {
        if register == .queueReady {
            guard v == 1 else { q.state.ready = false; return }
            guard !q.state.ready else { return }
            if q.configurationProblem(memory: memory) != nil {
                // QueueReady reads back 0: the driver sees the queue was refused.
                VirtioStatistics.add(device.statistics.errors)
                return
            }
            q.eventIndex = features & Virtio.Feature.eventIndex != 0
            q.indirect = features & Virtio.Feature.indirectDescriptors != 0
            q.state.nextAvailable = 0
            q.state.nextUsed = 0
            q.state.ready = true
            return
        }
        guard !q.state.ready else { return }   // a live queue's layout cannot change under the device
        func low(_ a: UInt64) -> UInt64 { (a & ~0xFFFF_FFFF) | UInt64(v) }
        func high(_ a: UInt64) -> UInt64 { (a & 0xFFFF_FFFF) | UInt64(v) << 32 }
        switch register {
        case .queueNum: q.state.size = v <= UInt32(UInt16.max) ? UInt16(v) : 0   // 0 is refused at QueueReady
        case .queueDescLow: q.state.descriptorTable = low(q.state.descriptorTable)
        case .queueDescHigh: q.state.descriptorTable = high(q.state.descriptorTable)
        case .queueDriverLow: q.state.availableRing = low(q.state.availableRing)
        case .queueDriverHigh: q.state.availableRing = high(q.state.availableRing)
        case .queueDeviceLow: q.state.usedRing = low(q.state.usedRing)
        case .queueDeviceHigh: q.state.usedRing = high(q.state.usedRing)
        default: break
        }
    }

    /// 4.2.2: reads past the end of the configuration space read as zero.
    private func readConfig(_ offset: UInt64, size: Int) -> UInt64 {
        config.withLock { config in
            var value: UInt64 = 0
            for i in 0 ..< min(size, 8) {
                let at = offset &+ UInt64(i)
                if at < UInt64(config.count) { value |= UInt64(config[Int(at)]) << (8 * UInt64(i)) }
            }
            return value
        }
    }

    /// The device's configuration changed (a link went up or down): the driver sees a
    /// new ConfigGeneration and gets a configuration-change interrupt (4.2.2, 2.5.1).
    public func configurationChanged() {
        let space = device.configSpace
        config.withLock { $0 = space }
        registers.withLock { $0.configGeneration &+= 1 }
        if status.load(ordering: .acquiring) & Virtio.Status.driverOK != 0 { raise(Virtio.Interrupt.configChange) }
    }

    // MARK: - Status

    /// 2.1 / 3.1.1: the driver only adds bits; 0 resets. FEATURES_OK sticks only for a
    /// subset of the offered features that includes VERSION_1; DRIVER_OK only after
    /// FEATURES_OK. DEVICE_NEEDS_RESET belongs to the device.
    private func writeStatus(_ value: UInt32) {
        guard value != 0 else { return reset() }
        let activated = registers.withLock { r -> UInt64? in
            let old = status.load(ordering: .acquiring)
            let ownBits = Virtio.Status.deviceNeedsReset
            var new = value & ~ownBits
            guard new & old == old & ~ownBits else { return nil }   // clearing a bit needs a reset
            if new & Virtio.Status.featuresOK != 0, old & Virtio.Status.featuresOK == 0 {
                let acceptable = r.driverFeatures & ~offeredFeatures == 0 && r.driverFeatures & Virtio.Feature.version1 != 0
                if !acceptable { new &= ~Virtio.Status.featuresOK }
            }
            if new & Virtio.Status.featuresOK == 0 { new &= ~Virtio.Status.driverOK }
            r.status = new | (old & ownBits)
            status.store(r.status, ordering: .releasing)
            return new & Virtio.Status.driverOK != 0 && old & Virtio.Status.driverOK == 0 ? r.driverFeatures : nil
        }
        // Outside the register lock: a device may configure its backend here.
        if let activated { device.activate(features: activated) }
    }

    /// Back to the power-on state (status 0 or a machine reset): queues forgotten,
    /// features cleared, no interrupt pending. Waits for a queue batch in progress.
    public func reset() {
        status.store(0, ordering: .releasing)   // notifications are ignored from here on
        for q in queues { q.lock.withLock { $0 = VirtQueue(maxSize: $0.state.maxSize) } }
        registers.withLock { r in
            let generation = r.configGeneration
            r = VirtioTransportState()
            r.configGeneration = generation
        }
        pendingInterrupts.store(0, ordering: .releasing)
        lastQueueError.withLock { $0 = nil }
        device.reset()
    }

    // MARK: - Notifications and interrupts

    /// A QueueNotify write that reached userspace (no ioeventfd, or a value it did not match).
    private func notify(queue index: Int) {
        guard index < queues.count, status.load(ordering: .acquiring) & Virtio.Status.driverOK != 0 else {
            VirtioStatistics.add(device.statistics.ignoredNotifications)
            return
        }
        if let onNotify { onNotify(index) } else { processQueue(index) }
    }

    /// Serves every chain queue `index` has available to the request device, then
    /// interrupts the driver if it asked for it.
    public func processQueue(_ index: Int) {
        var served = false
        if let requestDevice {
            withQueue(index) { q, memory in
                served = true
                // One used-index store for the batch, also when a broken chain ends it.
                defer { try? q.publishUsed(memory: memory) }
                try requestDevice.serve(&q, queue: index, memory: memory)
            }
        }
        if served {
            VirtioStatistics.add(device.statistics.notifications)
        } else {
            VirtioStatistics.add(device.statistics.ignoredNotifications)
        }
    }

    /// Runs `body` on queue `index` under the queue's lock, when the driver has set
    /// DRIVER_OK, the device does not need a reset and the queue is ready; returns nil
    /// (and runs nothing) otherwise. `body` pops chains and puts used ones; afterwards
    /// the driver is interrupted if it asked for that (2.7.10), and an error thrown from
    /// `body` — the driver broke the ring's rules — sets DEVICE_NEEDS_RESET. The way
    /// every device reaches its queues: the transport's own `processQueue` and an event
    /// device's loop alike.
    @discardableResult
    public func withQueue<R>(_ index: Int, _ body: (inout VirtQueue, GuestMemory) throws -> R) -> R? {
        let current = status.load(ordering: .acquiring)
        guard index >= 0, index < queues.count, current & Virtio.Status.driverOK != 0,
              current & Virtio.Status.deviceNeedsReset == 0, !frozen.load(ordering: .acquiring) else { return nil }
        var interruptNeeded = false
        var failure: VirtioError?
        let result = queues[index].lock.withLock { q -> R? in
            guard q.state.ready else { return nil }
            let before = q.state.nextUsed
            do {
                let r = try body(&q, memory)
                interruptNeeded = try q.needsInterrupt(since: before, memory: memory)
                return r
            } catch {
                failure = error as? VirtioError ?? .memory("\(error)")
                interruptNeeded = q.state.nextUsed != before
                return nil
            }
        }
        if interruptNeeded { raise(Virtio.Interrupt.usedBuffer) }
        if let failure { needsReset(failure) }
        return result
    }

    /// Sets DEVICE_NEEDS_RESET and tells a live driver through a configuration-change
    /// interrupt (2.1.2).
    func needsReset(_ error: VirtioError) {
        VirtioStatistics.add(device.statistics.queueErrors)
        lastQueueError.withLock { $0 = error }
        let old = status.fetchOr(Virtio.Status.deviceNeedsReset)
        registers.withLock { $0.status |= Virtio.Status.deviceNeedsReset }
        if old & Virtio.Status.driverOK != 0 { raise(Virtio.Interrupt.configChange) }
    }

    private func raise(_ bit: UInt32) {
        pendingInterrupts.bitwiseOr(bit, ordering: .acquiringAndReleasing)
        VirtioStatistics.add(device.statistics.interrupts)
        interrupt.trigger()
    }
}

/// A queue behind its own lock (Mutex is not copyable, so it cannot sit in an array).
final class LockedQueue: Sendable {
    let lock: Mutex<VirtQueue>
    init(_ queue: VirtQueue) { lock = Mutex(queue) }
}

extension Atomic where Value == UInt32 {
    @inline(__always)
    func fetchOr(_ bits: UInt32) -> UInt32 { bitwiseOr(bits, ordering: .acquiringAndReleasing).oldValue }
}
