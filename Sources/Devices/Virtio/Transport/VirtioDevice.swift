import GuestMemory
import Snapshot
import Synchronization

/// A virtio device behind a transport: its identity, features, configuration space and
/// what it does with a request. The transport owns the queues and the status machine;
/// the device sees only descriptor chains and guest memory.
public protocol VirtioDevice: AnyObject, Sendable {
    /// The device type (5 "Device Types").
    var deviceType: Virtio.DeviceType { get }
    /// Device-specific feature bits it offers (the transport adds VERSION_1,
    /// INDIRECT_DESC and EVENT_IDX).
    var deviceFeatures: UInt64 { get }
    /// QueueNumMax of each queue.
    var queueSizes: [UInt16] { get }
    /// The device configuration space (read-only for these devices).
    var configSpace: [UInt8] { get }
    /// Counters for `vmmctl stats` and `/metrics`.
    var statistics: VirtioStatistics { get }
    /// Every counter by name: `statistics` and whatever the device counts on its own.
    var counters: [(name: String, value: UInt64)] { get }
    /// The driver reset the device (status 0): forget everything negotiated.
    func reset()
    /// The driver set DRIVER_OK with `features` negotiated (3.1.1 step 8): what a
    /// device that configures its backend from the features (a tap's offloads) does then.
    func activate(features: UInt64)
    /// The device's snapshot state (`self` for a `SnapshotStateful` device); nil, the
    /// default, makes every snapshot of its machine fail naming it.
    var snapshotState: (any SnapshotStateful)? { get }
    /// Before a snapshot, with its transport frozen: an event device that keeps chains it
    /// took from a ring between wake-ups (receive buffers waiting for data, a frame
    /// waiting for room) puts them back, newest first (`VirtioMMIOTransport.giveBack`),
    /// and forgets them, so that the queues' state alone says what it owes the driver.
    func giveBackHeldChains(to transport: VirtioMMIOTransport)
    /// After a restore: what the device must tell the guest (vsock: its connections are gone).
    func restored(transport: VirtioMMIOTransport)
}

extension VirtioDevice {
    public var counters: [(name: String, value: UInt64)] { statistics.snapshot }
    public func activate(features: UInt64) {}
    public var snapshotState: (any SnapshotStateful)? { nil }
    public func giveBackHeldChains(to transport: VirtioMMIOTransport) {}
    public func restored(transport: VirtioMMIOTransport) {}
}

/// A device that answers each request as it comes (virtio-blk, virtio-rng): the
/// transport pops every available chain and returns it with what `handle` wrote.
public protocol VirtioRequestDevice: VirtioDevice {
    /// Serves one chain taken from queue `queue`; returns the bytes it wrote into the
    /// chain's writable buffers (the used length). Errors in the request are answered
    /// in the request (a status byte), not thrown.
    func handle(_ chain: DescriptorChain, queue: Int, memory: GuestMemory) -> UInt32
    /// Serves every chain queue `queue` has available, putting each on the used ring
    /// (the caller publishes the used index once, after). The default pops them one at a
    /// time and has `handle` answer each; a device that batches its backend's work
    /// (virtio-blk on an io_uring) takes them itself. A thrown error means the driver
    /// broke the ring's rules; every chain taken before it must still be answered.
    func serve(_ q: inout VirtQueue, queue: Int, memory: GuestMemory) throws
}

extension VirtioRequestDevice {
    public func serve(_ q: inout VirtQueue, queue: Int, memory: GuestMemory) throws {
        try q.serveEach(self, queue: queue, memory: memory)
    }
}

extension VirtQueue {
    /// Pops every available chain and puts it on the used ring with what `device`'s
    /// `handle` wrote (unpublished: see `VirtioRequestDevice.serve`).
    public mutating func serveEach(_ device: some VirtioRequestDevice, queue: Int, memory: GuestMemory) throws {
        while let chain = try pop(memory: memory) {
            let written = device.handle(chain, queue: queue, memory: memory)
            try putUsed(head: chain.head, length: written, memory: memory, publish: false)
        }
    }
}

/// A device whose work is asynchronous on both sides (virtio-vsock, virtio-net): it
/// holds the driver's receive buffers until the host has something for them, and host
/// descriptors wake it as much as queue notifications do. It runs one event loop on a
/// thread the machine gives it, takes chains itself through
/// `VirtioMMIOTransport.withQueue`, and never runs on a vCPU thread.
public protocol VirtioEventDevice: VirtioDevice {
    /// The device's loop, until `stop` (an eventfd) is signalled. `queueEvents[i]` is an
    /// eventfd signalled for every notification of queue `i` (by KVM through an
    /// ioeventfd, or by the transport on the bus path). `reset()` and `activate` arrive
    /// on vCPU threads meanwhile.
    func run(transport: VirtioMMIOTransport, queueEvents: [Int32], stop: Int32)
}

/// What a device did, by counter (relaxed atomics: written on the device's thread,
/// read by statistics requests).
public final class VirtioStatistics: Sendable {
    /// Requests (chains) served.
    public let requests = Atomic<UInt64>(0)
    /// Bytes the device read from guest memory and wrote to its backend (disk writes).
    public let bytesWritten = Atomic<UInt64>(0)
    /// Bytes the device put into guest memory (disk reads, entropy).
    public let bytesRead = Atomic<UInt64>(0)
    /// Requests that failed (I/O errors, refused writes, malformed requests).
    public let errors = Atomic<UInt64>(0)
    /// Flushes (virtio-blk FLUSH, each an fdatasync).
    public let flushes = Atomic<UInt64>(0)
    /// Queue notifications the device acted on (from the bus or an ioeventfd).
    public let notifications = Atomic<UInt64>(0)
    /// Notifications the transport ignored: before DRIVER_OK, for a queue not ready or
    /// that does not exist.
    public let ignoredNotifications = Atomic<UInt64>(0)
    /// Interrupts raised (used-buffer and configuration-change).
    public let interrupts = Atomic<UInt64>(0)
    /// Times the device set DEVICE_NEEDS_RESET because the driver broke a queue.
    public let queueErrors = Atomic<UInt64>(0)

    public init() {}

    @inline(__always)
    public static func add(_ counter: borrowing Atomic<UInt64>, _ n: UInt64 = 1) {
        counter.add(n, ordering: .relaxed)
    }

    /// `add` for a counter only one thread at a time changes (a single-queue device's,
    /// under its queue lock): a load and a store, without the locked read-modify-write
    /// that costs ~7 ns per call on the block device's per-request path. Readers still
    /// see a whole value, at worst one request late.
    @inline(__always)
    public static func addSerialized(_ counter: borrowing Atomic<UInt64>, _ n: UInt64 = 1) {
        counter.store(counter.load(ordering: .relaxed) &+ n, ordering: .relaxed)
    }

    /// Every counter by name.
    public var snapshot: [(name: String, value: UInt64)] {
        [("requests", requests.load(ordering: .relaxed)),
         ("bytes_read", bytesRead.load(ordering: .relaxed)),
         ("bytes_written", bytesWritten.load(ordering: .relaxed)),
         ("errors", errors.load(ordering: .relaxed)),
         ("flushes", flushes.load(ordering: .relaxed)),
         ("notifications", notifications.load(ordering: .relaxed)),
         ("ignored_notifications", ignoredNotifications.load(ordering: .relaxed)),
         ("interrupts", interrupts.load(ordering: .relaxed)),
         ("queue_errors", queueErrors.load(ordering: .relaxed))]
    }
}
