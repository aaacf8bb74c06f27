import GuestMemory

/// virtio-blk's batch path: the plain reads one notification makes available (and the
/// writes, on an O_DIRECT disk) go to the backend's io_uring together, one io_uring_enter
/// for all of them, and run concurrently in the kernel instead of one pread/pwrite after
/// another. That is what a disk that is really read needs (vmm-bench's O_DIRECT figure:
/// the ring's 64 4 KiB reads take a fraction of 64 preads); reads the page cache answers
/// cost about the same either way. Requests are still answered in the order they were
/// taken, and nothing is in flight once `serve` returns, so a snapshot (which freezes
/// the queues) and a FLUSH after writes see them all done.
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
        static let notRun = Int32.min
    }

    public func serve(_ q: inout VirtQueue, queue: Int, memory: GuestMemory) throws {
        guard let ring = backend.ring, !ring.isBroken else { return try q.serveEach(self, queue: queue, memory: memory) }
        var batch: [Transfer] = []
        do {
            while let chain = try q.pop(memory: memory) {
                if let transfer = transfer(chain, ringWrites: ring.allowsWrites, memory: memory) {
                    batch.append(transfer)
                    if batch.count == ring.capacity { try run(&batch, on: ring, &q, memory: memory) }
                    continue
                }
                // What was taken before is answered first: a FLUSH syncs the writes ahead of it.
                try run(&batch, on: ring, &q, memory: memory)
                let written = handle(chain, queue: queue, memory: memory)
                try q.putUsed(head: chain.head, length: written, memory: memory, publish: false)
            }
        } catch {
            // The driver broke the ring: the requests already taken are still answered.
            try? run(&batch, on: ring, &q, memory: memory)
            throw error
        }
        try run(&batch, on: ring, &q, memory: memory)
    }

    /// `chain` as a `Transfer`, or nil when it is anything else (including a request
    /// that must fail, which `handle` answers with its error status, and a write when
    /// the ring does not write).
    func transfer(_ chain: DescriptorChain, ringWrites: Bool, memory: GuestMemory) -> Transfer? {
        let d = chain.descriptors
        guard d.count == 3, !d[0].writable, UInt64(d[0].length) == Self.headerSize,
              let (typeAndReserved, sector) = try? memory.readWordPair(at: d[0].address) else { return nil }
        let write: Bool
        switch UInt32(truncatingIfNeeded: typeAndReserved) {
        case RequestType.read.rawValue: write = false
        case RequestType.write.rawValue where ringWrites && !readOnly: write = true
        default: return nil
        }
        guard let data = singleDataBuffer(chain, writable: !write), let offset = span(sector, data.length) else { return nil }
        return Transfer(head: chain.head, status: d[2].address, data: data, offset: offset, write: write)
    }

    /// Runs `batch` (on the ring when it holds more than one request: a lone request
    /// gains nothing from it), answers every request in order and empties it. A request
    /// the ring did not finish whole (not queued, a short transfer, an error, O_DIRECT's
    /// EINVAL for an unaligned buffer) is done again synchronously, which resumes, falls
    /// back or reports the error as `handle` would.
    private func run(_ batch: inout [Transfer], on ring: FileRing, _ q: inout VirtQueue, memory: GuestMemory) throws {
        guard !batch.isEmpty else { return }
        defer { batch.removeAll(keepingCapacity: true) }
        if batch.count > 1 {
            var queued = false
            for (i, t) in batch.enumerated() {
                let ok = t.write ? try? ring.queueWrite(file: 0, offset: t.offset, from: t.data, memory: memory, tag: i)
                                 : try? ring.queueRead(file: 0, offset: t.offset, into: t.data, memory: memory, tag: i)
                queued = queued || ok == true
            }
            if queued {
                _ = try? ring.submitAndWait()
                while let c = ring.nextCompletion() {
                    if c.tag >= 0 && c.tag < batch.count { batch[c.tag].result = c.result }
                }
            }
        }
        for t in batch {
            VirtioStatistics.addSerialized(statistics.requests)
            let length = t.data.length
            var done = t.result >= 0 ? UInt64(t.result) : nil
            if done == length {
                VirtioStatistics.addSerialized(ringRequests)
            } else {
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
