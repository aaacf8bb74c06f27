import CSys
import GuestMemory
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The state of a vsock device between the guest's queues and the host's sockets: the
/// connections by (host port, guest port), the host connections still handshaking,
/// what is owed to the guest, and the queue work. Only the device's thread touches it,
/// under the device's lock (a driver or machine reset arrives on a vCPU thread and
/// takes the same lock).
///
/// Nothing here waits: host sockets are non-blocking and watched edge-triggered; a
/// socket that cannot take more keeps the guest's bytes up to the credit the device
/// advertised, and one the guest has no credit for is simply not read.
final class VsockMuxer {
    let guestCID: UInt64
    let limits: VsockLimits
    let backend: any VsockHostBackend
    let poll: EventPoll
    let statistics: VirtioStatistics
    let counters: VsockStatistics
    let completions: VsockCompletions

    var connections: [UInt64: VsockConnection] = [:]
    /// (host port << 32 | guest port) → connection id.
    var byKey: [UInt64: UInt64] = [:]
    /// Accepted host sockets still sending their CONNECT line: id → (socket, deadline).
    var handshakes: [UInt64: (fd: Int32, deadline: UInt64)] = [:]
    /// Connections with something for the guest, in turn.
    var forGuest = FIFO<UInt64>()
    /// Packets for the guest that belong to no live connection (RSTs), in order.
    var replies = FIFO<VsockHeader>()
    /// An rx chain taken from the ring and not filled (the host had nothing after all):
    /// the next packet goes there.
    var spareChain: DescriptorChain?
    /// The tx ring may hold packets not yet served (a notification came, or serving it
    /// stopped because `replies` was full).
    var txMaybePending = false
    var transportResetPending = false
    /// The listener is watched once the driver has first set DRIVER_OK: before that
    /// nobody could answer, and the sandbox must not sweep accepted sockets away.
    var listening = false
    var nextID: UInt64 = VsockDevice.firstConnectionToken
    var nextLocalPort: UInt32 = VsockMuxer.firstLocalPort
    /// The earliest deadline of a handshake or a connection not established.
    var nextDeadline = UInt64.max
    /// Guest bytes held for host sockets, over all connections.
    var bufferedBytes = 0

    /// Host ports for host-initiated connections start here (as Firecracker's).
    static let firstLocalPort: UInt32 = 1 << 30
    /// Most replies queued before the device stops reading the tx ring (the guest gets
    /// them as it gives rx buffers back).
    static let maxReplies = 256

    init(guestCID: UInt64, limits: VsockLimits, backend: any VsockHostBackend, poll: EventPoll,
         statistics: VirtioStatistics, counters: VsockStatistics, completions: VsockCompletions) {
        self.guestCID = guestCID; self.limits = limits; self.backend = backend; self.poll = poll
        self.statistics = statistics; self.counters = counters; self.completions = completions
    }

    static func key(local: UInt32, peer: UInt32) -> UInt64 { UInt64(local) << 32 | UInt64(peer) }

    // MARK: - Packets from the guest (the tx queue)

    /// Serves the tx ring until it is empty or too many replies wait for rx buffers.
    func serveTransmitQueue(_ transport: VirtioMMIOTransport, now: UInt64) {
        guard txMaybePending else { return }
        let served = transport.withQueue(VsockDevice.transmitQueue) { q, memory in
            while replies.count < Self.maxReplies, let chain = try q.pop(memory: memory) {
                handleGuestPacket(chain, memory: memory, now: now)
                try q.putUsed(head: chain.head, length: 0, memory: memory)
            }
            txMaybePending = replies.count >= Self.maxReplies
        }
        if served == nil { txMaybePending = false }
    }

    func handleGuestPacket(_ chain: DescriptorChain, memory: GuestMemory, now: UInt64) {
        VirtioStatistics.add(statistics.requests)
        guard let bytes = try? DescriptorChain.gather(VsockHeader.size, from: chain.readable, memory: memory) ?? nil,
              let header = VsockHeader(bytes: bytes) else {
            VirtioStatistics.add(statistics.errors)
            return
        }
        // A packet claiming another source is not this guest's to send: dropped.
        guard header.sourceCID == guestCID else {
            VirtioStatistics.add(statistics.errors)
            return
        }
        let op = header.operation
        guard header.destinationCID == VsockHeader.hostCID, header.type == VsockHeader.typeStream, op != nil, op != .invalid else {
            if op != .reset { reply(resetFor: header) }
            return
        }
        guard let id = byKey[Self.key(local: header.destinationPort, peer: header.sourcePort)],
              var c = connections[id] else {
            switch op {
            case .request?: openFromGuest(header)
            case .reset?: break
            default: reply(resetFor: header)
            }
            return
        }
        c.peerBufferAllocation = header.bufferAllocation
        c.peerForwardCount = header.forwardCount
        switch op {
        case .response?:
            guard case .requesting = c.state else { return reset(c) }
            let ok = VsockHandshake.ok(hostPort: c.localPort)
            guard csys_send_from(c.fd, ok, 0, ok.count) == ok.count else { return reset(c) }
            c.state = .established
            VirtioStatistics.add(counters.hostConnections)
        case .readWrite?:
            guard receive(header, chain, into: &c, memory: memory) else { return reset(c) }
        case .shutdown?:
            c.guestShutdown |= header.flags & VsockHeader.Shutdown.both
            guard finishGuestShutdown(&c, now: now) else { return }
        case .reset?:
            VirtioStatistics.add(counters.resetsReceived)
            return drop(c)
        case .creditRequest?:
            c.owed.insert(.creditUpdate)
        case .creditUpdate?:
            break   // the credit came with the header
        default:
            // A second REQUEST for a live connection, or anything unknown: reset.
            return reset(c)
        }
        store(c)
    }

    /// A guest RW: its payload goes to the host socket at once where the socket takes
    /// it, the rest waits in the connection. False when the connection must be reset
    /// (not established, sending after its SHUTDOWN, past its credit, a broken host).
    private func receive(_ header: VsockHeader, _ chain: DescriptorChain, into c: inout VsockConnection,
                         memory: GuestMemory) -> Bool {
        guard c.state == .established, c.guestShutdown & VsockHeader.Shutdown.send == 0 else { return false }
        let length = Int(header.length)
        guard length > 0 else { return true }
        guard let all = DescriptorChain.ranges(chain.readable, dropFirst: UInt64(VsockHeader.size)),
              all.reduce(0, { $0 + $1.length }) >= UInt64(length) else {
            VirtioStatistics.add(statistics.errors)
            return false
        }
        guard UInt64(c.guestInFlight) + UInt64(length) <= UInt64(limits.bufferSize) else {
            VirtioStatistics.add(counters.creditViolations)
            return false
        }
        let payload = DescriptorChain.slice(all, from: 0, count: length)
        c.receivedFromGuest &+= UInt32(length)
        VirtioStatistics.add(statistics.bytesWritten, UInt64(length))
        var sent = 0
        if c.pendingCount == 0, c.hostWritable {
            do {
                sent = try memory.send(to: c.fd, from: payload)
            } catch GuestMemoryError.system(_, let e) where e == EAGAIN {
                c.hostWritable = false
            } catch {
                return false   // the host peer is gone (EPIPE, ECONNRESET)
            }
        }
        if sent < length {
            let before = c.pending.count
            guard (try? memory.append(DescriptorChain.slice(all, from: sent, count: length - sent), limit: length - sent,
                                      to: &c.pending)) != nil else { return false }
            bufferedBytes += c.pending.count - before
        }
        c.forwardCount &+= UInt32(sent)
        oweCreditIfDue(&c)
        return true
    }

    /// After a SHUTDOWN from the guest: the host socket's write side closes once the
    /// guest's bytes are through, and a connection shut both ways ends with the RST the
    /// guest waits for. False when the connection is gone.
    func finishGuestShutdown(_ c: inout VsockConnection, now: UInt64) -> Bool {
        guard c.pendingCount == 0 else {
            if c.guestShutdown == VsockHeader.Shutdown.both, case .established = c.state {
                setDeadline(&c, .closing(deadline: now &+ limits.closeTimeoutNanoseconds))
            }
            return true
        }
        if c.guestShutdown & VsockHeader.Shutdown.send != 0, !c.hostWriteClosed, c.fd >= 0 {
            _ = shutdown(c.fd, Int32(SHUT_WR))
            c.hostWriteClosed = true
        }
        if c.guestShutdown == VsockHeader.Shutdown.both || (c.guestShutdown & VsockHeader.Shutdown.send != 0 && c.hostEOF) {
            reset(c)
            return false
        }
        return true
    }

    /// The guest is told the device's forward count once it has moved a quarter of the
    /// buffer since the last time, so a sender waiting for credit always gets it.
    func oweCreditIfDue(_ c: inout VsockConnection) {
        if c.forwardCount &- c.advertisedForwardCount >= limits.bufferSize / 4 { c.owed.insert(.creditUpdate) }
    }

    /// A REQUEST for a connection that does not exist: the host side connects to
    /// `PATH_port` (asynchronously; `completeConnect` finishes it).
    private func openFromGuest(_ header: VsockHeader) {
        guard connections.count + handshakes.count < limits.maxConnections else {
            VirtioStatistics.add(counters.connectionsRefused)
            return reply(resetFor: header)
        }
        let id = nextID
        nextID += 1
        var c = VsockConnection(id: id, localPort: header.destinationPort, peerPort: header.sourcePort, state: .connecting)
        c.peerBufferAllocation = header.bufferAllocation
        c.peerForwardCount = header.forwardCount
        connections[id] = c
        byKey[Self.key(local: c.localPort, peer: c.peerPort)] = id
        let completions = self.completions
        backend.connect(port: header.destinationPort) { completions.post(id: id, $0) }
    }

    /// The host side's connect for connection `id` finished.
    func completeConnect(id: UInt64, _ result: Result<Int32, DeviceError>) {
        guard var c = connections[id], c.state == .connecting else {
            if case .success(let fd) = result { close(fd) }   // the guest or a reset got there first
            return
        }
        switch result {
        case .success(let fd):
            let flags = fcntl(fd, F_GETFL)
            guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0,
                  (try? poll.add(fd, Self.socketEvents, token: id)) != nil else {
                close(fd)
                VirtioStatistics.add(counters.connectionsRefused)
                return reset(c)
            }
            c.fd = fd
            c.state = .established
            c.owed.insert(.response)
            VirtioStatistics.add(counters.guestConnections)
            store(c)
        case .failure:
            // Nobody listens at PATH_port (or may not be reached): the guest sees a reset.
            VirtioStatistics.add(counters.connectionsRefused)
            reset(c)
        }
    }

    // MARK: - Bookkeeping

    /// What the device watches on an established connection's socket.
    static let socketEvents: EventPoll.Events = [.readable, .writable, .readHangUp, .edgeTriggered]

    /// Writes `c` back and queues it for the guest when it has something to send.
    func store(_ c: VsockConnection) {
        var c = c
        if c.hasWorkForGuest, !c.queuedForGuest {
            c.queuedForGuest = true
            forGuest.push(c.id)
        }
        connections[c.id] = c
    }

    /// Ends `c` with an RST to the guest (queued in order behind other replies).
    func reset(_ c: VsockConnection) {
        drop(c)
        VirtioStatistics.add(counters.resetsSent)
        replies.push(header(for: c, op: .reset))
    }

    /// Ends `c` without telling the guest (it sent the RST, or the transport was reset).
    func drop(_ c: VsockConnection) {
        if c.fd >= 0 { close(c.fd) }   // closing also takes it out of the epoll set
        bufferedBytes -= c.pendingCount
        connections[c.id] = nil
        byKey[Self.key(local: c.localPort, peer: c.peerPort)] = nil
    }

    /// An RST answering `header` (a packet for no connection the device knows).
    private func reply(resetFor header: VsockHeader) {
        VirtioStatistics.add(counters.resetsSent)
        replies.push(VsockHeader(sourceCID: VsockHeader.hostCID, destinationCID: guestCID, sourcePort: header.destinationPort,
                                 destinationPort: header.sourcePort, op: .reset))
    }

    /// A header from the host side of `c`, with the device's current credit.
    func header(for c: VsockConnection, op: VsockHeader.Op, length: UInt32 = 0, flags: UInt32 = 0) -> VsockHeader {
        VsockHeader(sourceCID: VsockHeader.hostCID, destinationCID: guestCID, sourcePort: c.localPort, destinationPort: c.peerPort,
                    length: length, op: op, flags: flags, bufferAllocation: limits.bufferSize, forwardCount: c.forwardCount)
    }

    func setDeadline(_ c: inout VsockConnection, _ state: VsockConnection.State) {
        c.state = state
        switch state {
        case .requesting(let d), .closing(let d): nextDeadline = min(nextDeadline, d)
        default: break
        }
    }

    /// Closes everything: a driver reset, a transport reset, the device's end. The
    /// guest is told nothing (its driver forgets its connections too).
    func closeAll() {
        for c in connections.values where c.fd >= 0 { close(c.fd) }
        for h in handshakes.values { close(h.fd) }
        connections = [:]
        byKey = [:]
        handshakes = [:]
        forGuest = FIFO()
        replies = FIFO()
        spareChain = nil
        txMaybePending = false
        bufferedBytes = 0
        nextDeadline = .max
    }
}

/// Connect results for a device's thread from whichever thread the backend answers
/// on, with an eventfd to wake the thread.
final class VsockCompletions: Sendable {
    let wake: Int32
    private let queue = Mutex<[(UInt64, Result<Int32, DeviceError>)]>([])

    init(wake: Int32) { self.wake = wake }

    func post(id: UInt64, _ result: Result<Int32, DeviceError>) {
        queue.withLock { $0.append((id, result)) }
        var one: UInt64 = 1
        _ = write(wake, &one, 8)
    }

    func take() -> [(UInt64, Result<Int32, DeviceError>)] {
        queue.withLock { q in defer { q = [] }; return q }
    }
}

/// A first-in first-out queue that does not shift its elements on every take.
struct FIFO<Element> {
    private var items: [Element] = []
    private var head = 0

    var count: Int { items.count - head }
    var isEmpty: Bool { head == items.count }

    mutating func push(_ e: Element) { items.append(e) }

    mutating func pop() -> Element? {
        guard head < items.count else { return nil }
        let e = items[head]
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 64, head * 2 >= items.count {
            items.removeFirst(head)
            head = 0
        }
        return e
    }
}
