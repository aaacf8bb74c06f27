import GuestMemory

/// virtio-blk's request path. Linux's usual request (header, one data buffer, status) is
/// read straight from the descriptor table, without building a `DescriptorChain`. On an
/// O_DIRECT disk the plain reads and writes one notification makes available go to the
/// backend's io_uring together, one io_uring_enter for all of them, and run concurrently
/// in the kernel instead of one pread/pwrite after another: 64 random 4 KiB requests take
/// ~0.25 of the time (vmm-bench's O_DIRECT figures). On a disk served from the page
/// cache each request is its own pread/pwrite, which is cheaper there (see
/// `BlockBackend.ring`). Requests are still answered in the order they were taken, and
/// nothing is in flight once `serve` returns, so a snapshot (which freezes the queues)
/// and a FLUSH after writes see them all done (if waiting for a batch ever fails, its
/// unfinished requests are failed, not redone, and the device stops using the ring).
extension BlockDevice {
    /// A read or write of one guest buffer at a checked byte offset of the image: the
    /// shape Linux sends for a one-segment request (header, data buffer, status byte),
    /// and the only one the ring batches. Every other request goes to `handle`.
    struct Transfer {
        let head: UInt16
        let status: GuestAddress
        let data: GuestRange
        let offset: UInt64
        let write: Bool
        /// What the ring did: bytes transferred, -errno, or `notRun`.
        var result: Int32 = Transfer.notRun
        /// Given to the ring.
        var queued = false
        /// Given to the ring, which failed before it completed: it may still be in flight.
        var lost = false
        static let notRun = Int32.min
    }

    public func serve(_ q: inout VirtQueue, queue: Int, memory: GuestMemory) throws {
        let ring = backend.ring.flatMap { $0.isBroken ? nil : $0 }
        let capacity = ring?.capacity ?? Int(Self.queueSize)
        var batch: [Transfer] = []
        do {
            while let head = try q.popHead(memory: memory) {
                // Linux's usual request is read straight from the descriptor tables; every
                // other shape is walked into a chain with all the checks (and, when it
                // turns out three buffers long after all, still batched).
                var chain: DescriptorChain?
                if let (header, data, status) = q.threeDescriptors(head: head, memory: memory) {
                    if let transfer = transfer(head: head, header, data, status, memory: memory) {
                        try append(transfer, &batch, capacity: capacity, ring: ring, &q, memory: memory)
                        continue
                    }
                } else {
                    let walked = try q.chain(head: head, memory: memory)
                    let d = walked.descriptors
                    if d.count == 3, let transfer = transfer(head: head, d[0], d[1], d[2], memory: memory) {
                        try append(transfer, &batch, capacity: capacity, ring: ring, &q, memory: memory)
                        continue
                    }
                    chain = walked
                }
                // What was taken before is answered first: a FLUSH syncs the writes ahead of it.
                try run(&batch, on: ring, &q, memory: memory)
                let request = try chain ?? q.chain(head: head, memory: memory)
                let written = handle(request, queue: queue, memory: memory)
                try q.putUsed(head: head, length: written, memory: memory, publish: false)
            }
        } catch {
            // The driver broke the ring: the requests already taken are still answered.
            try? run(&batch, on: ring, &q, memory: memory)
            throw error
        }
        try run(&batch, on: ring, &q, memory: memory)
    }

    private func append(_ transfer: Transfer, _ batch: inout [Transfer], capacity: Int, ring: FileRing?,
                        _ q: inout VirtQueue, memory: GuestMemory) throws {
        batch.append(transfer)
        if batch.count == capacity { try run(&batch, on: ring, &q, memory: memory) }
    }

    /// The request of three descriptors at `head` as a `Transfer`, or nil when it is
    /// anything else (including a request that must fail, which `handle` answers with
    /// its error status).
    func transfer(head: UInt16, _ header: Descriptor, _ data: Descriptor, _ status: Descriptor, memory: GuestMemory) -> Transfer? {
        guard !header.writable, UInt64(header.length) == Self.headerSize, status.writable, status.length == 1, data.length > 0,
              let (typeAndReserved, sector) = try? memory.readWordPair(at: header.address) else { return nil }
        let write: Bool
        switch UInt32(truncatingIfNeeded: typeAndReserved) {
        case RequestType.read.rawValue: write = false
        case RequestType.write.rawValue where !readOnly: write = true
        default: return nil
        }
        guard data.writable != write, let range = GuestRange(start: data.address, length: UInt64(data.length)),
              let offset = span(sector, range.length) else { return nil }
        return Transfer(head: head, status: status.address, data: range, offset: offset, write: write)
    }

    /// Runs `batch` (on the ring when there is one and the batch holds more than one
    /// request: a lone request gains nothing from it), answers every request in order and
    /// empties it. The requests on the ring are in flight together, as on any disk:
    /// without VIRTIO_F_IN_ORDER, which this device does not offer, a device may use the
    /// buffers in any order. A request the ring did not finish whole (not queued, a short
    /// transfer, an error, O_DIRECT's EINVAL for an unaligned buffer), and every request
    /// without a ring, is done synchronously, which resumes, falls back or reports the
    /// error as `handle` would.
    private func run(_ batch: inout [Transfer], on ring: FileRing?, _ q: inout VirtQueue, memory: GuestMemory) throws {
        guard !batch.isEmpty else { return }
        defer { batch.removeAll(keepingCapacity: true) }
        if let ring, batch.count > 1 {
            var queued = false
            for i in batch.indices {
                let t = batch[i]
                let ok = t.write ? try? ring.queueWrite(file: 0, offset: t.offset, from: t.data, memory: memory, tag: i)
                                 : try? ring.queueRead(file: 0, offset: t.offset, into: t.data, memory: memory, tag: i)
                batch[i].queued = ok == true
                queued = queued || ok == true
            }
            if queued {
                let waited = (try? ring.submitAndWait()) != nil
                while let c = ring.nextCompletion() {
                    if c.tag >= 0 && c.tag < batch.count { batch[c.tag].result = c.result }
                }
                // A failed wait (the ring is gone): what has no completion may still be in
                // flight, so it is failed, never done again beside it.
                if !waited {
                    for i in batch.indices where batch[i].queued && batch[i].result == Transfer.notRun { batch[i].lost = true }
                }
            }
        }
        for t in batch {
            VirtioStatistics.addSerialized(statistics.requests)
            let length = t.data.length
            var done = t.result >= 0 ? UInt64(t.result) : nil
            if done == length {
                VirtioStatistics.addSerialized(ringRequests)
            } else if !t.lost {
                done = synchronous(t, memory: memory)
            }
            let ok = done == length
            if ok && t.write { VirtioStatistics.addSerialized(statistics.bytesWritten, length) }
            if ok && !t.write { VirtioStatistics.addSerialized(statistics.bytesRead, length) }
            let written = answer(ok ? Self.statusOK : Self.statusIOError, written: ok && !t.write ? length : 0,
                                 statusAt: t.status, memory: memory)
            try q.putUsed(head: t.head, length: written, memory: memory, publish: false)
        }
    }

    private func synchronous(_ t: Transfer, memory: GuestMemory) -> UInt64? {
        t.write ? try? backend.write(from: t.data, at: t.offset, memory: memory)
                : try? backend.read(into: t.data, at: t.offset, memory: memory)
    }
}
