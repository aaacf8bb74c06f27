import CKVM
import GuestMemory
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A virtio socket device (5.10 "Socket Device") whose host side is Firecracker's
/// hybrid vsock (`VsockHostBackend`): stream connections both ways between guest ports
/// and host Unix sockets, credit-based flow control in both directions, and the
/// transport-reset event a restored guest needs.
///
/// Queues: rx (0, host → guest), tx (1, guest → host), event (2). All of the device's
/// work runs on one thread (`run`), an epoll loop over its queue eventfds and its host
/// sockets; a vCPU never waits for a host socket, and a host socket that cannot keep
/// up stalls only its own connection (see `VsockConnection` for the credit).
public final class VsockDevice: VirtioEventDevice {
    public let guestCID: UInt64
    public let limits: VsockLimits
    public let backend: any VsockHostBackend
    public let statistics = VirtioStatistics()
    public let vsockStatistics = VsockStatistics()
    private let poll: EventPoll
    private let wake: Int32
    let state: Mutex<VsockMuxer>

    public static let receiveQueue = 0, transmitQueue = 1, eventQueue = 2
    public static let queueSize: UInt16 = 256
    public static let eventQueueSize: UInt16 = 16
    /// VIRTIO_VSOCK_F_STREAM (bit 0): stream sockets (the only type offered).
    public static let featureStream: UInt64 = 1 << 0

    // epoll tokens: the queues' eventfds are 0-2; connections count from 16.
    static let stopToken: UInt64 = 3, wakeToken: UInt64 = 4, listenerToken: UInt64 = 5
    static let firstConnectionToken: UInt64 = 16

    /// A device for a guest with CID `guestCID` (3 ... 0xFFFF_FFFE: 0-2 are reserved
    /// and -1 is VMADDR_CID_ANY), served by `backend`.
    public init(guestCID: UInt64, backend: any VsockHostBackend, limits: VsockLimits = VsockLimits()) throws(DeviceError) {
        guard guestCID >= 3, guestCID < 0xFFFF_FFFF else {
            throw .invalid("vsock guest CID \(guestCID) must be between 3 and 4294967294")
        }
        self.guestCID = guestCID
        self.limits = limits
        self.backend = backend
        do { poll = try EventPoll() } catch let e as DeviceError { throw e } catch { throw .invalid("\(error)") }
        wake = ckvm_eventfd(0, CKVM_EFD_CLOEXEC | CKVM_EFD_NONBLOCK)
        guard wake >= 0 else { throw .system(operation: "eventfd", errno: errno) }
        let flags = fcntl(backend.listener, F_GETFL)
        guard flags >= 0, fcntl(backend.listener, F_SETFL, flags | O_NONBLOCK) == 0 else {
            close(wake)
            throw .system(operation: "making the vsock listener non-blocking", errno: errno)
        }
        let statistics = self.statistics, counters = vsockStatistics
        state = Mutex(VsockMuxer(guestCID: guestCID, limits: limits, backend: backend, poll: poll, statistics: statistics,
                                 counters: counters, completions: VsockCompletions(wake: wake)))
    }

    deinit { close(wake) }

    /// Descriptors the device holds for its whole life (a sandbox must keep them).
    public var descriptors: [Int32] { [poll.fd, wake, backend.listener] }

    public var deviceType: Virtio.DeviceType { .vsock }
    public var deviceFeatures: UInt64 { Self.featureStream }
    public var queueSizes: [UInt16] { [Self.queueSize, Self.queueSize, Self.eventQueueSize] }
    /// struct virtio_vsock_config: le64 guest_cid.
    public var configSpace: [UInt8] { (0 ..< 8).map { UInt8(truncatingIfNeeded: guestCID >> (8 * UInt64($0))) } }

    public var counters: [(name: String, value: UInt64)] {
        let (active, buffered) = state.withLock { ($0.connections.count, $0.bufferedBytes) }
        return statistics.snapshot + vsockStatistics.snapshot
            + [("connections_active", UInt64(active)), ("host_buffered_bytes", UInt64(max(0, buffered)))]
    }

    /// The driver reset the device, or the machine reset: every connection is closed
    /// (host peers see end of stream), nothing is owed to the guest any more.
    public func reset() {
        state.withLock { m in
            m.closeAll()
            m.transportResetPending = false
        }
    }

    /// DRIVER_OK: from now on host connections are accepted.
    public func activate(features: UInt64) {
        state.withLock { m in
            guard !m.listening else { return }
            m.listening = (try? poll.add(backend.listener, [.readable], token: Self.listenerToken)) != nil
        }
    }

    /// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (5.10.6.6): every connection is dropped and
    /// the guest told on the event queue (as soon as it has an event buffer there) that
    /// its connections are gone and its CID must be read again. What the machine does
    /// after restoring a snapshot, when the host sockets the guest knew no longer exist.
    public func resetTransport() {
        state.withLock { m in
            m.closeAll()
            m.transportResetPending = true
        }
        var one: UInt64 = 1
        _ = write(wake, &one, 8)
    }

    public func run(transport: VirtioMMIOTransport, queueEvents: [Int32], stop: Int32) {
        guard (try? poll.add(wake, [.readable], token: Self.wakeToken)) != nil,
              poll.serveDevice(queueEvents: queueEvents, stop: stop, stopToken: Self.stopToken, { ready in
                  let now = Self.monotonicNanoseconds()
                  return state.withLock { m -> Int32 in
                      for (token, events) in ready { handle(token, events, m, now: now) }
                      m.expireDeadlines(now: now)
                      m.serveTransmitQueue(transport, now: now)
                      m.deliverToGuest(transport, now: now)
                      // Replies that filled up may have stopped the tx ring: now there is room.
                      m.serveTransmitQueue(transport, now: now)
                      m.deliverToGuest(transport, now: now)
                      m.deliverEvent(transport)
                      return m.timeout(now: now)
                  }
              }) else {
            VirtioStatistics.add(statistics.errors)
            return
        }
        state.withLock { $0.closeAll() }
    }

    private func handle(_ token: UInt64, _ events: EventPoll.Events, _ m: VsockMuxer, now: UInt64) {
        switch token {
        case UInt64(Self.receiveQueue), UInt64(Self.eventQueue):
            VirtioStatistics.add(statistics.notifications)
        case UInt64(Self.transmitQueue):
            VirtioStatistics.add(statistics.notifications)
            m.txMaybePending = true
        case Self.wakeToken:
            drainEventFD(wake)
            for (id, result) in m.completions.take() { m.completeConnect(id: id, result) }
        case Self.listenerToken:
            m.acceptConnections(now: now)
        default:
            if m.handshakes[token] != nil { m.readHandshake(id: token, now: now) } else { m.socketEvent(id: token, events, now: now) }
        }
    }

    static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

/// What a vsock device counts beyond `VirtioStatistics` (relaxed atomics, written on
/// the device's thread).
public final class VsockStatistics: Sendable {
    /// Connections host processes opened through the listener (the guest accepted).
    public let hostConnections = Atomic<UInt64>(0)
    /// Connections the guest opened to `PATH_P` (the host side connected).
    public let guestConnections = Atomic<UInt64>(0)
    /// Connections refused: nobody at `PATH_P`, or over the connection limit.
    public let connectionsRefused = Atomic<UInt64>(0)
    /// Host connections closed for a bad, late or over-long CONNECT line.
    public let handshakesRefused = Atomic<UInt64>(0)
    public let resetsSent = Atomic<UInt64>(0)
    public let resetsReceived = Atomic<UInt64>(0)
    /// Guest packets past the credit the device advertised (each reset the connection).
    public let creditViolations = Atomic<UInt64>(0)
    /// Times a connection used up the guest's credit (its host socket waits unread).
    public let creditWaits = Atomic<UInt64>(0)
    /// Times the device had packets for the guest and no rx buffer to put them in.
    public let receiveBufferWaits = Atomic<UInt64>(0)
    public let packetsToGuest = Atomic<UInt64>(0)
    public let transportResets = Atomic<UInt64>(0)

    public init() {}

    public var snapshot: [(name: String, value: UInt64)] {
        [("host_connections", hostConnections.load(ordering: .relaxed)),
         ("guest_connections", guestConnections.load(ordering: .relaxed)),
         ("connections_refused", connectionsRefused.load(ordering: .relaxed)),
         ("handshakes_refused", handshakesRefused.load(ordering: .relaxed)),
         ("resets_sent", resetsSent.load(ordering: .relaxed)),
         ("resets_received", resetsReceived.load(ordering: .relaxed)),
         ("credit_violations", creditViolations.load(ordering: .relaxed)),
         ("credit_waits", creditWaits.load(ordering: .relaxed)),
         ("rx_buffer_waits", receiveBufferWaits.load(ordering: .relaxed)),
         ("packets_to_guest", packetsToGuest.load(ordering: .relaxed)),
         ("transport_resets", transportResets.load(ordering: .relaxed))]
    }
}
