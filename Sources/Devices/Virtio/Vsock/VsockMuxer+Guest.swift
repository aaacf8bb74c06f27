import GuestMemory
#if canImport(Glibc)
import Glibc
#endif

/// Packets to the guest: the rx queue (replies first, then connections in turn, one
/// packet each per turn) and the event queue.
extension VsockMuxer {
    /// Fills rx buffers while there is something for the guest and buffers to hold it.
    func deliverToGuest(_ transport: VirtioMMIOTransport, now: UInt64) {
        guard !forGuest.isEmpty || !replies.isEmpty else { return }
        transport.withQueue(VsockDevice.receiveQueue) { q, memory in
            while !forGuest.isEmpty || !replies.isEmpty {
                guard let chain = try spareChain ?? q.pop(memory: memory) else {
                    VirtioStatistics.add(counters.receiveBufferWaits)
                    return
                }
                spareChain = nil
                guard let ranges = DescriptorChain.ranges(chain.writable),
                      ranges.reduce(0, { $0 + $1.length }) >= UInt64(VsockHeader.size) else {
                    VirtioStatistics.add(statistics.errors)   // a buffer too small for a header
                    try q.putUsed(head: chain.head, length: 0, memory: memory)
                    continue
                }
                if let length = fill(ranges, memory: memory, now: now) {
                    try q.putUsed(head: chain.head, length: length, memory: memory)
                    VirtioStatistics.add(counters.packetsToGuest)
                } else {
                    spareChain = chain
                }
            }
        }
    }

    /// Writes the next packet into `ranges`; returns its length, or nil when the turn
    /// produced nothing (the host socket had nothing after all).
    private func fill(_ ranges: [GuestRange], memory: GuestMemory, now: UInt64) -> UInt32? {
        if let reply = replies.pop() {
            return write(reply, ranges, memory) ? UInt32(VsockHeader.size) : 0
        }
        guard let id = forGuest.pop(), var c = connections[id] else { return nil }
        c.queuedForGuest = false
        defer { if connections[id] != nil { store(c) } }
        if let op = nextControl(&c) {
            let h = header(for: c, op: op, flags: op == .shutdown ? c.hostShutdown : 0)
            c.advertisedForwardCount = c.forwardCount
            return write(h, ranges, memory) ? UInt32(VsockHeader.size) : 0
        }
        guard c.wantsToSendData else { return nil }
        let capacity = Int(clamping: ranges.reduce(0) { $0 + $1.length }) - VsockHeader.size
        let room = min(capacity, Int(min(c.peerCredit, limits.maxPacketPayload)))
        guard room > 0 else { return nil }
        let n: Int
        do {
            n = try memory.receive(from: c.fd, into: DescriptorChain.slice(ranges, from: VsockHeader.size, count: room))
        } catch GuestMemoryError.system(_, let e) where e == EAGAIN {
            c.hostReadable = false
            return nil
        } catch {
            reset(c)   // ECONNRESET: the host peer is gone
            return nil
        }
        guard n > 0 else {
            hostReachedEOF(&c, now: now)
            return nil
        }
        c.sentToGuest &+= UInt32(n)
        c.advertisedForwardCount = c.forwardCount
        VirtioStatistics.add(statistics.bytesRead, UInt64(n))
        if c.peerCredit == 0 { VirtioStatistics.add(counters.creditWaits) }
        let h = header(for: c, op: .readWrite, length: UInt32(n))
        return write(h, ranges, memory) ? UInt32(VsockHeader.size + n) : 0
    }

    /// The control packet `c` owes the guest next, taken off its list.
    private func nextControl(_ c: inout VsockConnection) -> VsockHeader.Op? {
        for (owed, op) in [(VsockConnection.Owed.request, VsockHeader.Op.request), (.response, .response),
                           (.shutdown, .shutdown), (.creditUpdate, .creditUpdate)] where c.owed.contains(owed) {
            c.owed.remove(owed)
            return op
        }
        return nil
    }

    private func write(_ h: VsockHeader, _ ranges: [GuestRange], _ memory: GuestMemory) -> Bool {
        guard (try? memory.write(h.bytes, offset: 0, count: VsockHeader.size, into: ranges)) == VsockHeader.size else {
            VirtioStatistics.add(statistics.errors)
            return false
        }
        return true
    }

    /// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET into the next event buffer, if one is there.
    func deliverEvent(_ transport: VirtioMMIOTransport) {
        guard transportResetPending else { return }
        transport.withQueue(VsockDevice.eventQueue) { q, memory in
            guard let chain = try q.pop(memory: memory) else { return }
            let id = (0 ..< VsockEvent.size).map { UInt8(truncatingIfNeeded: VsockEvent.transportReset >> (8 * $0)) }
            let written = (try? memory.write(id, offset: 0, count: VsockEvent.size,
                                             into: DescriptorChain.ranges(chain.writable) ?? [])) ?? 0
            try q.putUsed(head: chain.head, length: UInt32(written), memory: memory)
            if written == VsockEvent.size {
                transportResetPending = false
                VirtioStatistics.add(counters.transportResets)
            } else {
                VirtioStatistics.add(statistics.errors)
            }
        }
    }
}
