import CSys
#if canImport(Glibc)
import Glibc
#endif

/// The host side of the muxer: the listener, the CONNECT handshake, socket readiness,
/// the bytes waiting for a slow host socket, and the deadlines.
extension VsockMuxer {
    /// Accepts what the listener has (a bounded batch per wake-up, so a flood of
    /// connections cannot starve the queues); over the limits a connection is closed.
    func acceptConnections(now: UInt64) {
        for _ in 0 ..< 32 {
            let fd = csys_accept_nonblocking(backend.listener)
            guard fd >= 0 else { return }   // EAGAIN: all taken; EMFILE and the like: try at the next wake-up
            guard handshakes.count < limits.maxHandshakes, connections.count + handshakes.count < limits.maxConnections else {
                close(fd)
                VirtioStatistics.add(counters.connectionsRefused)
                continue
            }
            let id = nextID
            nextID += 1
            guard (try? poll.add(fd, [.readable, .readHangUp], token: id)) != nil else {
                close(fd)
                continue
            }
            let deadline = now &+ limits.handshakeTimeoutNanoseconds
            handshakes[id] = (fd, deadline)
            nextDeadline = min(nextDeadline, deadline)
        }
    }

    /// A handshaking socket is readable: once its line is complete it becomes a
    /// connection in REQUEST state (the REQUEST goes to the guest), or is closed.
    func readHandshake(id: UInt64, now: UInt64) {
        guard let (fd, _) = handshakes[id] else { return }
        var line = [UInt8](repeating: 0, count: VsockHandshake.maxLine)
        // Peek, so that bytes after the line stay in the socket for the guest.
        let n = recv(fd, &line, line.count, Int32(MSG_PEEK) | Int32(MSG_DONTWAIT))
        if n < 0, errno == EAGAIN || errno == EINTR { return }
        guard n > 0 else { return refuseHandshake(id) }
        guard let newline = line[0 ..< n].firstIndex(of: UInt8(ascii: "\n")) else {
            if n == line.count { refuseHandshake(id) }   // too long to be a CONNECT line
            return
        }
        guard recv(fd, &line, newline + 1, Int32(MSG_DONTWAIT)) == newline + 1,
              let port = VsockHandshake.port(fromLine: Array(line[0 ..< newline])) else { return refuseHandshake(id) }
        handshakes[id] = nil
        var local = nextLocalPort
        while byKey[Self.key(local: local, peer: port)] != nil { local = local == UInt32.max ? Self.firstLocalPort : local + 1 }
        nextLocalPort = local == UInt32.max ? Self.firstLocalPort : local + 1
        var c = VsockConnection(id: id, localPort: local, peerPort: port, state: .established)
        c.fd = fd
        setDeadline(&c, .requesting(deadline: now &+ limits.requestTimeoutNanoseconds))
        c.owed.insert(.request)
        guard (try? poll.modify(fd, Self.socketEvents, token: id)) != nil else {
            close(fd)
            return
        }
        byKey[Self.key(local: local, peer: port)] = id
        store(c)
    }

    private func refuseHandshake(_ id: UInt64) {
        guard let (fd, _) = handshakes.removeValue(forKey: id) else { return }
        close(fd)
        VirtioStatistics.add(counters.handshakesRefused)
    }

    /// Readiness of an established (or requesting) connection's socket.
    func socketEvent(id: UInt64, _ events: EventPoll.Events, now: UInt64) {
        guard var c = connections[id] else { return }
        if events.contains(.hangUp) || events.contains(.error) {
            // The peer closed both ways: what it sent can still be read, nothing more
            // can be written.
            c.hostHungUp = true
            c.hostReadable = true
            if c.pendingCount > 0 { return reset(c) }
        }
        if !events.intersection([.readable, .readHangUp]).isEmpty { c.hostReadable = true }
        if events.contains(.writable) {
            c.hostWritable = true
            guard flushPending(&c, now: now) else { return }
        }
        store(c)
    }

    /// Writes the guest's waiting bytes to a writable host socket. False when the
    /// connection is gone.
    func flushPending(_ c: inout VsockConnection, now: UInt64) -> Bool {
        while c.pendingCount > 0, c.hostWritable {
            let n = csys_send_from(c.fd, c.pending, c.pendingStart, c.pendingCount)
            if n == -Int(EAGAIN) {
                c.hostWritable = false
                break
            }
            guard n > 0 else {
                reset(c)   // EPIPE, ECONNRESET: the host peer has gone
                return false
            }
            c.consumePending(n)
            bufferedBytes -= n
            c.forwardCount &+= UInt32(n)
        }
        oweCreditIfDue(&c)
        if c.pendingCount == 0, c.guestShutdown != 0 { return finishGuestShutdown(&c, now: now) }
        return true
    }

    /// The host socket has no more to read (recv returned 0): the guest hears SHUTDOWN
    /// with SEND, or with both flags when the peer is gone altogether or the guest has
    /// stopped sending too (then the guest's RST ends it, or the close deadline).
    func hostReachedEOF(_ c: inout VsockConnection, now: UInt64) {
        c.hostEOF = true
        var flags = VsockHeader.Shutdown.send
        if c.hostHungUp || c.guestShutdown & VsockHeader.Shutdown.send != 0 {
            flags = VsockHeader.Shutdown.both
            setDeadline(&c, .closing(deadline: now &+ limits.closeTimeoutNanoseconds))
        }
        c.hostShutdown |= flags
        c.owed.insert(.shutdown)
    }

    /// Handshakes that never sent their line, REQUESTs the guest never answered and
    /// closing connections whose RST never came.
    func expireDeadlines(now: UInt64) {
        guard now >= nextDeadline else { return }
        var next = UInt64.max
        for (id, h) in handshakes {
            if h.deadline <= now { refuseHandshake(id) } else { next = min(next, h.deadline) }
        }
        for c in Array(connections.values) {
            switch c.state {
            case .requesting(let d), .closing(let d):
                if d <= now { reset(c) } else { next = min(next, d) }
            default: break
            }
        }
        nextDeadline = next
    }

    /// How long the device's thread may sleep: until the next deadline, or for good.
    func timeout(now: UInt64) -> Int32 {
        guard nextDeadline != .max else { return -1 }
        guard nextDeadline > now else { return 0 }
        return Int32(clamping: (nextDeadline - now) / 1_000_000 + 1)
    }
}
