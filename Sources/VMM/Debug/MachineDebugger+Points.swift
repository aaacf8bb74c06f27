import GuestMemory
import KVM

/// Breakpoints and watchpoints: `int3`s planted in guest memory, the four debug
/// registers, and write watchpoints emulated by single-stepping where the host's KVM
/// delivers no data breakpoint.
extension MachineDebugger {
    /// Most watchpoints emulated at once, and the most bytes each may cover: every one is
    /// compared after every instruction of every vCPU.
    static let maxEmulatedWatchpoints = 32, maxEmulatedWatchBytes = 4096

    /// Places a breakpoint or watchpoint. Addresses are virtual, translated with the
    /// paging of vCPU `vcpu` (a stopped one). Inserting one that exists already is not an
    /// error. Throws `MachineError.unsupported` for what the host or x86 cannot do.
    public func insert(_ point: DebugPoint, vcpu: Int) throws {
        switch point {
        case .software(let address):
            let paging = try paging(of: vcpu)
            try state.withLock { s in
                guard s.planted[address] == nil else { return }
                let physical = try translate(address, paging, .write)
                // A second virtual alias of a planted byte keeps the first one's original.
                let original = try s.planted.values.first { $0.physical == physical }?.original
                    ?? memory.read(at: GuestAddress(physical), count: 1)[0]
                try memory.write([0xCC], at: GuestAddress(physical))
                s.planted[address] = PlantedBreakpoint(physical: physical, original: original)
            }
        case .hardware(let address):
            try state.withLock { s in
                guard s.support.executionBreakpoints else {
                    throw MachineError.unsupported("this KVM does not deliver execution breakpoints")
                }
                guard !s.slots.contains(where: { $0?.point == point }) else { return }
                try HardwareSlot.allocate([HardwareSlot(point: point, linear: address, type: 0, length: 1)], in: &s.slots)
            }
        case .watch(let kind, let address, let length):
            guard length > 0 else { throw MachineError.invalidState("a watchpoint needs a length") }
            let paging = try paging(of: vcpu)
            try state.withLock { s in
                guard !s.slots.contains(where: { $0?.point == point }), !s.emulated.contains(where: { $0.point == point })
                else { return }
                if s.support.dataBreakpoints {
                    // x86 debug registers watch writes, or reads and writes; not reads alone.
                    guard kind != .read else { throw MachineError.unsupported("x86 has no read-only watchpoints") }
                    guard let chunks = HardwareSlot.alignedChunks(address, length, atMost: 4) else {
                        throw MachineError.invalidState("\(length) bytes at 0x\(String(address, radix: 16)) need more than the 4 debug registers")
                    }
                    let type: UInt64 = kind == .write ? 1 : 3
                    try HardwareSlot.allocate(chunks.map { HardwareSlot(point: point, linear: $0.0, type: type, length: $0.1) },
                                              in: &s.slots)
                    return
                }
                guard kind == .write else {
                    throw MachineError.unsupported("this KVM delivers no data breakpoints, and only writes can be emulated")
                }
                guard s.emulated.count < Self.maxEmulatedWatchpoints, length <= Self.maxEmulatedWatchBytes else {
                    throw MachineError.invalidState("at most \(Self.maxEmulatedWatchpoints) emulated watchpoints of \(Self.maxEmulatedWatchBytes) bytes")
                }
                let pieces = try memory.translateRange(address, count: length, paging: paging, access: .debugger(.read))
                s.emulated.append(EmulatedWatch(point: point, address: address, pieces: pieces, memory: memory))
            }
        }
    }

    /// Removes a breakpoint or watchpoint; removing one that is not there is not an error.
    public func remove(_ point: DebugPoint) {
        state.withLock { s in
            switch point {
            case .software(let address):
                guard let bp = s.planted.removeValue(forKey: address) else { return }
                restore(bp, in: s)
            case .hardware, .watch:
                for i in s.slots.indices where s.slots[i]?.point == point { s.slots[i] = nil }
                s.emulated.removeAll { $0.point == point }
            }
        }
    }

    /// Puts a planted byte back unless another alias still needs the `int3`, or the guest
    /// (or a reboot's image load) has written over it since.
    func restore(_ bp: PlantedBreakpoint, in s: State) {
        guard !s.planted.values.contains(where: { $0.physical == bp.physical }),
              (try? memory.read(at: GuestAddress(bp.physical), count: 1)) == [0xCC] else { return }
        try? memory.write([bp.original], at: GuestAddress(bp.physical))
    }

    private func translate(_ address: UInt64, _ paging: PagingMode, _ kind: MemoryAccess.Kind) throws -> UInt64 {
        do { return try memory.translate(address, paging: paging, access: .debugger(kind)).physical.raw } catch {
            throw GuestMemory.VirtualAccessError.fault(error)
        }
    }

    // MARK: - Memory by virtual address

    /// Reads up to `count` bytes at virtual `address` with the paging of vCPU `vcpu`, as
    /// a debugger does: no access rights checked, no A/D bits set, planted `int3`s shown
    /// as the bytes they replaced. Stops at the first page that does not map (so the
    /// answer may be short); throws when not even the first byte does.
    public func readMemory(at address: UInt64, count: Int, vcpu: Int) throws -> [UInt8] {
        let paging = try paging(of: vcpu)
        let planted = state.withLock { Array($0.planted.values) }
        var bytes: [UInt8] = []
        var linear = address
        while bytes.count < count {
            // Within one 4-KiB linear page the physical bytes are contiguous, whatever the page size.
            let chunk = min(count - bytes.count, 4096 - Int(linear & 0xFFF))
            var piece: [UInt8]
            let physical: UInt64
            do {
                physical = try memory.translate(linear, paging: paging, access: .debugger(.read)).physical.raw
                piece = try memory.read(at: GuestAddress(physical), count: chunk)
            } catch {
                if bytes.isEmpty { throw error }
                break
            }
            for bp in planted where bp.physical >= physical && bp.physical - physical < UInt64(chunk) {
                piece[Int(bp.physical - physical)] = bp.original
            }
            bytes += piece
            linear = linear &+ UInt64(chunk)
        }
        return bytes
    }

    /// Writes `bytes` at virtual `address` (every page translated first, rights not
    /// checked). Over a planted `int3` the write changes the byte it replaced and the
    /// `int3` stays.
    public func writeMemory(_ bytes: [UInt8], at address: UInt64, vcpu: Int) throws {
        let paging = try paging(of: vcpu)
        try state.withLock { s in
            let pieces = try memory.translateRange(address, count: bytes.count, paging: paging, access: .debugger(.write))
            var data = bytes
            var originals: [(UInt64, UInt8)] = []
            var offset = 0
            for piece in pieces {
                for (key, bp) in s.planted where bp.physical >= piece.start.raw && bp.physical - piece.start.raw < piece.length {
                    let i = offset + Int(bp.physical - piece.start.raw)
                    originals.append((key, data[i]))
                    data[i] = 0xCC
                }
                offset += Int(piece.length)
            }
            try memory.writeVirtual(data, at: address, paging: paging, access: .debugger(.write))
            for (key, original) in originals { s.planted[key]?.original = original }
        }
    }
}

/// One debug register's use: which point it serves and what DR7 says about it.
struct HardwareSlot: Equatable {
    let point: DebugPoint
    /// The linear address in DRn (aligned to `length` for data breakpoints).
    let linear: UInt64
    /// DR7 R/Wn: 0 execute, 1 write, 3 read or write.
    let type: UInt64
    /// 1, 2, 4 or 8 bytes.
    let length: Int

    var reason: DebugStop.Reason {
        switch point {
        case .hardware(let address): return .hardwareBreakpoint(address: address)
        case .watch(let kind, let address, _): return .watchpoint(kind, address: address)
        case .software(let address): return .softwareBreakpoint(address: address)
        }
    }

    /// DR7 LENn (SDM vol. 3B 18.2.4): 00 one byte, 01 two, 11 four, 10 eight.
    var lengthCode: UInt64 {
        switch length {
        case 2: return 0b01
        case 4: return 0b11
        case 8: return 0b10
        default: return 0b00
        }
    }

    /// `[address, address + length)` as naturally aligned pieces of 8, 4, 2 or 1 bytes
    /// (what debug registers can watch), or nil when that takes more than `atMost`.
    static func alignedChunks(_ address: UInt64, _ length: Int, atMost: Int) -> [(UInt64, Int)]? {
        var chunks: [(UInt64, Int)] = []
        var at = address, left = UInt64(max(length, 0))
        while left > 0 {
            guard chunks.count < atMost else { return nil }
            var size: UInt64 = 8
            while size > 1 && (at % size != 0 || size > left) { size /= 2 }
            chunks.append((at, Int(size)))
            at = at &+ size
            left -= size
        }
        return chunks
    }

    /// Places `wanted` in free slots, all or none.
    static func allocate(_ wanted: [HardwareSlot], in slots: inout [HardwareSlot?]) throws {
        let free = slots.indices.filter { slots[$0] == nil }
        guard wanted.count <= free.count else {
            throw MachineError.invalidState("not enough free debug registers (4 in all, \(free.count) free)")
        }
        for (slot, entry) in zip(free, wanted) { slots[slot] = entry }
    }

    /// DR0-DR3 and DR7 for the slots in use.
    static func debugRegisters(_ slots: [HardwareSlot?]) -> GuestDebugRegisters {
        var registers = GuestDebugRegisters()
        for (i, slot) in slots.enumerated() {
            guard let slot else { continue }
            let n = UInt64(i)
            registers[i] = slot.linear
            registers.dr7 |= (1 << (2 * n)) | (slot.type << (16 + 4 * n)) | (slot.lengthCode << (18 + 4 * n))
        }
        if registers.dr7 != 0 { registers.dr7 |= 1 << 10 }  // bit 10 reads as 1
        return registers
    }
}

/// A write watchpoint emulated by single-stepping: the watched bytes (by guest-physical
/// address, translated when it was set) compared after every instruction.
struct EmulatedWatch {
    let point: DebugPoint
    let address: UInt64
    let pieces: [GuestRange]
    private var last: [UInt8]

    init(point: DebugPoint, address: UInt64, pieces: [GuestRange], memory: GuestMemory) {
        self.point = point
        self.address = address
        self.pieces = pieces
        last = Self.read(pieces, memory)
    }

    private static func read(_ pieces: [GuestRange], _ memory: GuestMemory) -> [UInt8] {
        pieces.flatMap { (try? memory.read(at: $0.start, count: Int($0.length))) ?? [] }
    }

    /// Takes the current bytes as the reference (the client may have written them).
    mutating func refresh(_ memory: GuestMemory) { last = Self.read(pieces, memory) }

    /// Whether the bytes changed since the last look (and takes the new ones).
    mutating func changed(_ memory: GuestMemory) -> Bool {
        let now = Self.read(pieces, memory)
        guard now != last else { return false }
        last = now
        return true
    }
}
