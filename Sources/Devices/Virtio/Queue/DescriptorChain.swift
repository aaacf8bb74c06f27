import GuestMemory

/// One buffer of a descriptor chain, as the driver described it (2.7.5 "The Virtqueue
/// Descriptor Table"). The address and length are the guest's: nothing has checked yet
/// that they lie in RAM; every access goes through `GuestMemory`, which does.
public struct Descriptor: Sendable, Equatable {
    public var address: GuestAddress
    public var length: UInt32
    /// VIRTQ_DESC_F_WRITE: the device writes this buffer (otherwise it reads it).
    public var writable: Bool

    public init(address: GuestAddress, length: UInt32, writable: Bool) {
        self.address = address; self.length = length; self.writable = writable
    }

    // Descriptor flags.
    static let next: UInt16 = 1, write: UInt16 = 2, indirect: UInt16 = 4
    /// Bytes per descriptor in the table: addr u64, len u32, flags u16, next u16.
    static let size: UInt64 = 16
}

/// A request: the head index the device returns on the used ring, and its buffers,
/// device-readable ones first (the driver must order them so).
public struct DescriptorChain: Sendable, Equatable {
    public let head: UInt16
    public let descriptors: [Descriptor]

    public init(head: UInt16, descriptors: [Descriptor]) {
        self.head = head
        self.descriptors = descriptors
    }

    /// The device-readable buffers.
    public var readable: ArraySlice<Descriptor> { descriptors.prefix { !$0.writable } }
    /// The device-writable buffers.
    public var writable: ArraySlice<Descriptor> { descriptors.drop { !$0.writable } }

    /// Walks the chain starting at `head` in the table of `size` descriptors at `table`,
    /// following one indirect table when `indirect` was negotiated. Refuses loops (more
    /// descriptors than the table holds), indices out of range, nested or malformed
    /// indirect tables and readable-after-writable orderings.
    /// `buffer` is the queue's reused storage: emptied here, and when the previous
    /// chain made from it is gone, filled without allocating.
    static func walk(head: UInt16, table: GuestAddress, size: UInt16, indirect allowIndirect: Bool,
                     memory: GuestMemory, buffer descriptors: inout [Descriptor]) throws -> DescriptorChain {
        descriptors.removeAll(keepingCapacity: true)
        descriptors.reserveCapacity(4)   // a block request is three; one allocation, not three
        var index = head
        var sawWritable = false
        var visited = 0
        while true {
            guard index < size else { throw VirtioError.descriptorIndex(index, size: size) }
            visited += 1
            guard visited <= Int(size) else { throw VirtioError.chainTooLong(head: head, limit: Int(size)) }
            let (address, length, flags, next) = try readDescriptor(table, index: index, memory: memory)
            if flags & Descriptor.indirect != 0 {
                guard allowIndirect else { throw VirtioError.indirectTable("VIRTIO_F_INDIRECT_DESC was not negotiated") }
                guard flags & Descriptor.next == 0 else { throw VirtioError.indirectTable("INDIRECT together with NEXT") }
                try walkIndirect(head: head, table: address, length: length, limit: Int(size), into: &descriptors,
                                 sawWritable: &sawWritable, memory: memory)
                break
            }
            try append(Descriptor(address: address, length: length, writable: flags & Descriptor.write != 0),
                       head: head, to: &descriptors, sawWritable: &sawWritable)
            guard flags & Descriptor.next != 0 else { break }
            index = next
        }
        return DescriptorChain(head: head, descriptors: descriptors)
    }

    /// The descriptors of an indirect table (2.7.5.3): `length / 16` entries at
    /// `table`, chained through their own `next` fields; no INDIRECT inside.
    private static func walkIndirect(head: UInt16, table: GuestAddress, length: UInt32, limit: Int,
                                     into descriptors: inout [Descriptor], sawWritable: inout Bool,
                                     memory: GuestMemory) throws {
        guard length > 0, UInt64(length) % Descriptor.size == 0 else {
            throw VirtioError.indirectTable("length \(length) is not a non-zero multiple of 16")
        }
        let count = UInt64(length) / Descriptor.size
        guard count <= UInt64(limit) else { throw VirtioError.indirectTable("\(count) entries, more than the queue's \(limit)") }
        guard memory.contains(table, length: UInt64(length)) else {
            throw VirtioError.memory("indirect table \(table) length \(length) is not in RAM")
        }
        var index: UInt16 = 0
        var visited = 0
        while true {
            guard UInt64(index) < count else { throw VirtioError.indirectTable("next index \(index) past \(count) entries") }
            visited += 1
            guard UInt64(visited) <= count else { throw VirtioError.chainTooLong(head: head, limit: Int(count)) }
            let (address, len, flags, next) = try readDescriptor(table, index: index, memory: memory)
            guard flags & Descriptor.indirect == 0 else { throw VirtioError.indirectTable("an indirect descriptor inside one") }
            try append(Descriptor(address: address, length: len, writable: flags & Descriptor.write != 0),
                       head: head, to: &descriptors, sawWritable: &sawWritable)
            guard flags & Descriptor.next != 0 else { return }
            index = next
        }
    }

    private static func append(_ d: Descriptor, head: UInt16, to descriptors: inout [Descriptor], sawWritable: inout Bool) throws {
        if d.writable { sawWritable = true } else if sawWritable { throw VirtioError.readableAfterWritable(head: head) }
        descriptors.append(d)
    }

    static func readDescriptor(_ table: GuestAddress, index: UInt16, memory: GuestMemory) throws
        -> (GuestAddress, UInt32, UInt16, UInt16) {
        // The table was checked to lie in RAM when the queue was made ready (or above,
        // for an indirect one), so index * 16 stays inside it; a failure here is still
        // reported, never trusted.
        guard let at = table.adding(UInt64(index) * Descriptor.size) else {
            throw VirtioError.memory("descriptor \(index) at \(table) wraps")
        }
        do {
            let (address, rest) = try memory.readWordPair(at: at)
            return (GuestAddress(address), UInt32(truncatingIfNeeded: rest), UInt16(truncatingIfNeeded: rest >> 32),
                    UInt16(truncatingIfNeeded: rest >> 48))
        } catch {
            throw VirtioError.memory("descriptor \(index) at \(at): \(error)")
        }
    }
}

extension DescriptorChain {
    /// The guest ranges of `buffers`, skipping their first `dropFirst` bytes and last
    /// `dropLast` bytes (a request header, a status byte). Nil when a buffer's address
    /// plus length wraps or the buffers are shorter than what is dropped.
    public static func ranges(_ buffers: ArraySlice<Descriptor>, dropFirst: UInt64 = 0, dropLast: UInt64 = 0) -> [GuestRange]? {
        let total = buffers.reduce(UInt64(0)) { $0 + UInt64($1.length) }
        guard total >= dropFirst + dropLast else { return nil }
        var skip = dropFirst
        var keep = total - dropFirst - dropLast
        var result: [GuestRange] = []
        result.reserveCapacity(buffers.count)
        for d in buffers where keep > 0 {
            var length = UInt64(d.length)
            var start = d.address
            if skip > 0 {
                let s = min(skip, length)
                skip -= s
                length -= s
                guard let moved = start.adding(s) else { return nil }
                start = moved
            }
            let take = min(length, keep)
            guard take > 0 else { continue }
            guard let range = GuestRange(start: start, length: take) else { return nil }
            result.append(range)
            keep -= take
        }
        return result
    }

    /// Copies the first `count` bytes of `buffers` out of guest memory (a request
    /// header that may be split across descriptors).
    public static func gather(_ count: Int, from buffers: ArraySlice<Descriptor>, memory: GuestMemory) throws -> [UInt8]? {
        guard let ranges = ranges(buffers), ranges.reduce(0, { $0 + $1.length }) >= UInt64(count) else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        for r in ranges where bytes.count < count {
            bytes += try memory.read(at: r.start, count: min(count - bytes.count, Int(r.length)))
        }
        return bytes
    }

    /// The first `count` bytes of `ranges` from byte `from` on.
    public static func slice(_ ranges: [GuestRange], from: Int, count: Int) -> [GuestRange] {
        var skip = UInt64(from), left = UInt64(count)
        var out: [GuestRange] = []
        for r in ranges where left > 0 {
            if skip >= r.length { skip -= r.length; continue }
            let length = min(r.length - skip, left)
            if let start = r.start.adding(skip), let piece = GuestRange(start: start, length: length) { out.append(piece) }
            skip = 0
            left -= length
        }
        return out
    }
}
