import GuestMemory
import Synchronization

/// What a split virtqueue is (2.7 "Split Virtqueues"), as plain values: what the driver
/// configured through the transport and how far the device has got. Everything a
/// snapshot needs to save and restore a queue.
public struct VirtQueueState: Sendable, Equatable {
    /// QueueNumMax: the largest size the device accepts.
    public var maxSize: UInt16
    /// QueueNum: the size the driver chose (a power of two, 1 ... maxSize).
    public var size: UInt16
    /// QueueReady.
    public var ready = false
    /// QueueDesc, QueueDriver (the available ring), QueueDevice (the used ring).
    public var descriptorTable: UInt64 = 0
    public var availableRing: UInt64 = 0
    public var usedRing: UInt64 = 0
    /// The next available-ring entry the device will take (a free-running 16-bit index).
    public var nextAvailable: UInt16 = 0
    /// The next used-ring entry the device will fill.
    public var nextUsed: UInt16 = 0

    public init(maxSize: UInt16) {
        self.maxSize = maxSize
        self.size = maxSize
    }
}

/// A split virtqueue bound to guest memory: hands out descriptor chains the driver made
/// available and returns them on the used ring, with every index and address checked.
///
/// Layout (2.7.6, 2.7.8): available ring = flags u16, idx u16, ring[size] u16,
/// used_event u16; used ring = flags u16, idx u16, ring[size] {id u32, len u32},
/// avail_event u16.
public struct VirtQueue: Sendable {
    public var state: VirtQueueState
    /// VIRTIO_F_EVENT_IDX and VIRTIO_F_INDIRECT_DESC as negotiated.
    public var eventIndex = false
    public var indirect = false

    /// Storage the chains are built in, kept between pops: a device that is done with
    /// its chain before the next pop (a block request) costs no allocation per request.
    private var chainBuffer: [Descriptor] = []

    public init(maxSize: UInt16) { state = VirtQueueState(maxSize: maxSize) }

    static let availableNoInterrupt: UInt16 = 1

    /// Why the driver's configuration cannot be made ready, or nil when it can: a size
    /// that is 0, above the maximum or not a power of two, a misaligned ring, or a ring
    /// that is not entirely in guest RAM (2.7 alignment: table 16, available 2, used 4).
    public func configurationProblem(memory: GuestMemory) -> String? {
        let size = UInt64(state.size)
        guard size > 0, state.size <= state.maxSize, state.size & (state.size - 1) == 0 else {
            return "queue size \(state.size) is not a power of two between 1 and \(state.maxSize)"
        }
        let areas: [(String, UInt64, UInt64, UInt64)] = [
            ("descriptor table", state.descriptorTable, 16 * size, 16),
            ("available ring", state.availableRing, 6 + 2 * size, 2),
            ("used ring", state.usedRing, 6 + 8 * size, 4),
        ]
        for (name, address, length, alignment) in areas {
            guard GuestAddress(address).isAligned(to: alignment) else { return "\(name) at 0x\(String(address, radix: 16)) is not \(alignment)-byte aligned" }
            guard memory.contains(GuestAddress(address), length: length) else {
                return "\(name) at 0x\(String(address, radix: 16)) (\(length) bytes) is not in guest RAM"
            }
        }
        return nil
    }

    /// The next chain the driver made available, or nil when there is none.
    public mutating func pop(memory: GuestMemory) throws -> DescriptorChain? {
        guard let head = try popHead(memory: memory) else { return nil }
        return try chain(head: head, memory: memory)
    }

    /// The chain that starts at `head` (taken with `popHead`), walked with every check.
    public mutating func chain(head: UInt16, memory: GuestMemory) throws -> DescriptorChain {
        try DescriptorChain.walk(head: head, table: GuestAddress(state.descriptorTable), size: state.size,
                                 indirect: indirect, memory: memory, buffer: &chainBuffer)
    }

    /// The three descriptors of the chain at `head` when it is exactly three, read
    /// straight from the table: directly (head → next → next, the last without NEXT), or
    /// through one indirect descriptor whose table holds exactly that chain (what Linux
    /// sends once VIRTIO_F_INDIRECT_DESC is negotiated: it puts every request of more
    /// than one buffer in an indirect table). The shape of Linux's one-segment block
    /// request, which a device can serve without building a `DescriptorChain`. Nil for
    /// any other shape (or a descriptor that cannot be read), which `chain(head:memory:)`
    /// then walks with its full checks and errors.
    public func threeDescriptors(head: UInt16, memory: GuestMemory) -> (Descriptor, Descriptor, Descriptor)? {
        let table = GuestAddress(state.descriptorTable)
        guard head < state.size, let (address, length, flags, _) = try? DescriptorChain.readDescriptor(table, index: head, memory: memory)
        else { return nil }
        if flags & Descriptor.indirect != 0 {
            // 2.7.5.3: an indirect table of `length / 16` entries, chained from entry 0.
            guard indirect, flags & Descriptor.next == 0, length == 3 * UInt32(Descriptor.size) else { return nil }
            return Self.threeDescriptors(table: address, size: 3, first: 0, memory: memory)
        }
        return Self.threeDescriptors(table: table, size: state.size, first: head, memory: memory)
    }

    /// `first` → next → next in the `size` entries at `table`, the last without NEXT and
    /// none INDIRECT. A loop cannot hide in three steps: the third must lack NEXT, so it
    /// is neither of the first two (the values are copies, whatever the guest writes
    /// into the table meanwhile).
    private static func threeDescriptors(table: GuestAddress, size: UInt16, first: UInt16,
                                         memory: GuestMemory) -> (Descriptor, Descriptor, Descriptor)? {
        let link = Descriptor.next | Descriptor.indirect
        guard first < size, let (a0, l0, f0, n0) = try? DescriptorChain.readDescriptor(table, index: first, memory: memory),
              f0 & link == Descriptor.next, n0 < size,
              let (a1, l1, f1, n1) = try? DescriptorChain.readDescriptor(table, index: n0, memory: memory),
              f1 & link == Descriptor.next, n1 < size,
              let (a2, l2, f2, _) = try? DescriptorChain.readDescriptor(table, index: n1, memory: memory),
              f2 & link == 0 else { return nil }
        func descriptor(_ a: GuestAddress, _ l: UInt32, _ f: UInt16) -> Descriptor {
            Descriptor(address: a, length: l, writable: f & Descriptor.write != 0)
        }
        return (descriptor(a0, l0, f0), descriptor(a1, l1, f1), descriptor(a2, l2, f2))
    }

    /// Takes the next head the driver made available off the ring, or nil when there is
    /// none; the caller walks its chain (`chain(head:memory:)`).
    public mutating func popHead(memory: GuestMemory) throws -> UInt16? {
        var available = try read(UInt16.self, state.availableRing, 2, memory)
        if available == state.nextAvailable {
            guard eventIndex else { return nil }
            // The ring is empty: avail_event = "notify me when you make entry nextAvailable
            // available", written only now (2.7.10: the device needs a notification only
            // once it has found nothing), then idx read again, after a full fence: a driver
            // that read the old avail_event and skipped its notify must not leave a buffer
            // here with the device asleep (store-load order).
            try write(state.nextAvailable, state.usedRing, 4 + 8 * UInt64(state.size), memory)
            atomicMemoryFence(ordering: .sequentiallyConsistent)
            available = try read(UInt16.self, state.availableRing, 2, memory)
            guard available != state.nextAvailable else { return nil }
        }
        let pending = available &- state.nextAvailable
        guard pending <= state.size else {
            throw VirtioError.availableIndexJump(from: state.nextAvailable, to: available, size: state.size)
        }
        // The ring entry and the descriptors were written before idx (the driver's
        // write barrier); read them only after idx.
        atomicMemoryFence(ordering: .acquiring)
        let slot = UInt64(state.nextAvailable & (state.size - 1))
        let head = try read(UInt16.self, state.availableRing, 4 + 2 * slot, memory)
        state.nextAvailable &+= 1
        return head
    }

    /// Returns `head` to the driver on the used ring with `length` bytes written.
    /// `publish: false` leaves the used index for `publishUsed` (a device serving a batch
    /// publishes it once, after the last element).
    public mutating func putUsed(head: UInt16, length: UInt32, memory: GuestMemory, publish: Bool = true) throws {
        let slot = UInt64(state.nextUsed & (state.size - 1))
        // id u32 and len u32 of one used element, in one store.
        try write(UInt64(head) | UInt64(length) << 32, state.usedRing, 4 + 8 * slot, memory)
        state.nextUsed &+= 1
        if publish { try publishUsed(memory: memory) }
    }

    /// Makes every element put so far visible to the driver: the used index.
    public func publishUsed(memory: GuestMemory) throws {
        // The elements must be visible before the index that publishes them.
        atomicMemoryFence(ordering: .releasing)
        try write(state.nextUsed, state.usedRing, 2, memory)
    }

    /// Whether the driver wants an interrupt now that the used index went from
    /// `previousUsed` to `nextUsed` (2.7.10: used_event with EVENT_IDX, otherwise the
    /// available ring's NO_INTERRUPT flag).
    public func needsInterrupt(since previousUsed: UInt16, memory: GuestMemory) throws -> Bool {
        guard previousUsed != state.nextUsed else { return false }
        // The used index store must be ordered before the driver's used_event load.
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if eventIndex {
            let usedEvent = try read(UInt16.self, state.availableRing, 4 + 2 * UInt64(state.size), memory)
            // vring_need_event: the event index lies in (previousUsed, nextUsed].
            return state.nextUsed &- usedEvent &- 1 < state.nextUsed &- previousUsed
        }
        return try read(UInt16.self, state.availableRing, 0, memory) & Self.availableNoInterrupt == 0
    }

    private func read<T: FixedWidthInteger>(_ type: T.Type, _ base: UInt64, _ offset: UInt64, _ memory: GuestMemory) throws -> T {
        do { return try memory.readInteger(T.self, at: GuestAddress(base &+ offset)) } catch {
            throw VirtioError.memory("\(error)")
        }
    }

    private func write<T: FixedWidthInteger>(_ value: T, _ base: UInt64, _ offset: UInt64, _ memory: GuestMemory) throws {
        do { try memory.writeInteger(value, at: GuestAddress(base &+ offset)) } catch {
            throw VirtioError.memory("\(error)")
        }
    }
}
