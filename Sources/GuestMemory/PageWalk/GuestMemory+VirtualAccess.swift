/// Copy-in and copy-out of guest-virtual ranges (libvmmapi's `vm_copyin`/`vm_copyout`):
/// a range may cross pages that map anywhere; every page is translated first, so a fault
/// on a later page leaves memory untouched, as a faulting instruction would.
extension GuestMemory {
    /// Why a virtual access failed.
    public enum VirtualAccessError: Error, Sendable, Equatable, CustomStringConvertible {
        /// The translation failed: what the CPU would raise.
        case fault(PageFault)
        /// The page translated, but its physical address is not guest RAM (the MMIO hole,
        /// past the end of RAM) or is read-only (a ROM).
        case physical(virtual: UInt64, GuestMemoryError)

        public var description: String {
            switch self {
            case .fault(let fault): return fault.description
            case .physical(let virtual, let error): return "virtual address 0x\(String(virtual, radix: 16)): \(error)"
            }
        }
    }

    /// The physical pieces of `[address, address + count)`, in order.
    public func translateRange(_ address: UInt64, count: Int, paging: PagingMode,
                               access: MemoryAccess) throws(VirtualAccessError) -> [GuestRange] {
        var pieces: [GuestRange] = []
        var done = 0
        while done < count {
            // Linear addresses wrap at the mode's width, as the CPU's do.
            let linear = address &+ UInt64(done)
            let translation: PageTranslation
            do { translation = try translate(linear, paging: paging, access: access) } catch { throw .fault(error) }
            let length = min(UInt64(count - done), translation.bytesToPageEnd)
            guard let piece = GuestRange(start: translation.physical, length: length) else {
                throw .physical(virtual: linear, .overflow(address: translation.physical.raw, length: length))
            }
            pieces.append(piece)
            done += Int(length)
        }
        return pieces
    }

    /// Reads `count` bytes at guest-virtual `address`.
    public func readVirtual(at address: UInt64, count: Int, paging: PagingMode,
                            access: MemoryAccess = MemoryAccess(.read)) throws(VirtualAccessError) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(max(count, 0))
        var virtual = address
        for piece in try translateRange(address, count: count, paging: paging, access: access) {
            do { bytes += try read(at: piece.start, count: Int(piece.length)) } catch {
                throw .physical(virtual: virtual, error as? GuestMemoryError ?? .unmapped(address: piece.start.raw, length: piece.length))
            }
            virtual = virtual &+ piece.length
        }
        return bytes
    }

    /// Writes `bytes` at guest-virtual `address`. Every page is translated (and checked
    /// to be RAM) before the first byte is written.
    public func writeVirtual(_ bytes: [UInt8], at address: UInt64, paging: PagingMode,
                             access: MemoryAccess = MemoryAccess(.write)) throws(VirtualAccessError) {
        let pieces = try translateRange(address, count: bytes.count, paging: paging, access: access)
        var virtual = address
        for piece in pieces {
            do {
                let (segment, _) = try resolve(piece.start, length: piece.length)
                if segment.readOnly { throw GuestMemoryError.readOnly(address: piece.start.raw, segment: segment.name) }
            } catch {
                throw .physical(virtual: virtual, error as? GuestMemoryError ?? .unmapped(address: piece.start.raw, length: piece.length))
            }
            virtual = virtual &+ piece.length
        }
        var offset = 0
        for piece in pieces {
            let end = offset + Int(piece.length)
            // Proved writable RAM above; a failure here would be a bug, reported all the same.
            do { try write(Array(bytes[offset ..< end]), at: piece.start) } catch {
                throw .physical(virtual: address &+ UInt64(offset), error as? GuestMemoryError ?? .unmapped(address: piece.start.raw, length: piece.length))
            }
            offset = end
        }
    }

    /// Reads a little-endian integer at guest-virtual `address` (it may cross a page).
    public func readVirtualInteger<T: FixedWidthInteger>(_ type: T.Type = T.self, at address: UInt64, paging: PagingMode,
                                                         access: MemoryAccess = MemoryAccess(.read)) throws(VirtualAccessError) -> T {
        let bytes = try readVirtual(at: address, count: MemoryLayout<T>.size, paging: paging, access: access)
        return bytes.reversed().reduce(T.zero) { ($0 << 8) | T($1) }
    }
}
