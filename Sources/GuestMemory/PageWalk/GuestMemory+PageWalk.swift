/// Guest-virtual to guest-physical translation: the walk the CPU does (Intel SDM vol. 3A
/// chapter 4; what libvmmapi's `vm_gla2gpa` does), for every paging mode.
///
/// Every table entry is read with a bounds-checked GuestMemory read, so a hostile table
/// (entries past RAM or into the MMIO hole, tables that point at themselves) gives a
/// fault, never a crash: the walk has at most five levels, so a loop cannot make it spin.
extension GuestMemory {
    /// Translates `address` for `access` under `paging`, or throws the fault the CPU
    /// would raise. With `access.setsAccessedDirty` the entries' A bits (and the leaf's D
    /// bit for a write) are set atomically, as the CPU does.
    public func translate(_ address: UInt64, paging: PagingMode, access: MemoryAccess) throws(PageFault) -> PageTranslation {
        // A concurrent change to an entry between the walk and its A/D update restarts
        // the walk, as on a CPU; after a few tries the walk's answer stands.
        var attempt = 0
        while true {
            let walk = try walkTables(address, paging: paging, access: access)
            attempt += 1
            guard access.setsAccessedDirty, !walk.updates.isEmpty else { return walk.translation }
            if setAccessedDirty(walk.updates) || attempt >= 4 { return walk.translation }
        }
    }

    /// One entry the walk read, and the bits it must set in it on success.
    struct EntryUpdate {
        let physical: GuestAddress
        let value: UInt64
        let bits: UInt64
        let wide: Bool  // 8-byte entry (PAE, long mode) or 4-byte (32-bit paging)
    }

    struct Walk {
        let translation: PageTranslation
        let updates: [EntryUpdate]
    }

    private static let present: UInt64 = 1 << 0, writableBit: UInt64 = 1 << 1, userBit: UInt64 = 1 << 2
    private static let accessed: UInt64 = 1 << 5, dirty: UInt64 = 1 << 6, largePage: UInt64 = 1 << 7
    private static let executeDisable: UInt64 = 1 << 63

    private func walkTables(_ address: UInt64, paging: PagingMode, access: MemoryAccess) throws(PageFault) -> Walk {
        switch paging.kind {
        case .off:
            let physical = address & 0xFFFF_FFFF
            return Walk(translation: PageTranslation(physical: GuestAddress(physical), pageSize: 1 << 32,
                                                     writable: true, user: true, executable: true), updates: [])
        case .bits32:
            return try walk32(address & 0xFFFF_FFFF, paging: paging, access: access)
        case .pae, .level4, .level5:
            return try walk64(address, paging: paging, access: access)
        }
    }

    // MARK: - PAE, 4-level and 5-level paging (8-byte entries)

    private func walk64(_ linear: UInt64, paging: PagingMode, access: MemoryAccess) throws(PageFault) -> Walk {
        let fault = FaultBuilder(address: linear, paging: paging, access: access)
        guard paging.isCanonical(linear) else { throw fault.make(.nonCanonical) }
        let address = paging.kind == .pae ? linear & 0xFFFF_FFFF : linear
        let maxPhysical = paging.physicalAddressBits
        // Bits maxPhysical..51 of an entry are reserved; bit 63 too without EFER.NXE.
        let highReserved = ((1 << 52) - 1) & ~((UInt64(1) << UInt64(maxPhysical)) - 1)
            | (paging.noExecute ? 0 : Self.executeDisable)
        let frameMask = ((UInt64(1) << UInt64(maxPhysical)) - 1) & ~0xFFF

        var table: UInt64
        var shifts: [UInt64]
        var updates: [EntryUpdate] = []
        var writable = true, user = true, executeDisabled = false

        if paging.kind == .pae {
            // The four PDPTEs (CR3[31:5]). A CPU caches them when CR3 is loaded; reading
            // them now is what KVM itself does on a guest's walk.
            let pdpte = try readEntry(GuestAddress((paging.cr3 & 0xFFFF_FFE0) + ((address >> 30) & 3) * 8), fault)
            guard pdpte & Self.present != 0 else { throw fault.make(.notPresent) }
            // PDPTE bits 2:1, 8:5 and 63:MAXPHYADDR are reserved (SDM table 4-8).
            guard pdpte & (0x1E6 | highReserved | Self.executeDisable) == 0 else { throw fault.make(.reservedBit) }
            table = pdpte & frameMask
            shifts = [21, 12]
        } else {
            table = paging.cr3 & frameMask
            shifts = paging.kind == .level5 ? [48, 39, 30, 21, 12] : [39, 30, 21, 12]
        }

        for (level, shift) in shifts.enumerated() {
            let slot = GuestAddress(table + ((address >> shift) & 0x1FF) * 8)
            let entry = try readEntry(slot, fault)
            guard entry & Self.present != 0 else { throw fault.make(.notPresent) }
            guard entry & highReserved == 0 else { throw fault.make(.reservedBit) }
            writable = writable && entry & Self.writableBit != 0
            user = user && entry & Self.userBit != 0
            executeDisabled = executeDisabled || (paging.noExecute && entry & Self.executeDisable != 0)

            let isLast = level == shifts.count - 1
            let large = !isLast && entry & Self.largePage != 0
            if large {
                // PS is reserved in PML5Es and PML4Es; a 1-GiB page needs CPU support.
                guard shift == 21 || (shift == 30 && paging.gigabytePages) else { throw fault.make(.reservedBit) }
                let pageSize = UInt64(1) << shift
                // Bits 12 (PAT) up to the page size are the frame's low bits: the ones
                // between 13 and the page size are reserved.
                guard entry & (pageSize - 1) & ~0x1FFF == 0 else { throw fault.make(.reservedBit) }
                updates.append(EntryUpdate(physical: slot, value: entry,
                                           bits: Self.accessed | (access.kind == .write ? Self.dirty : 0), wide: true))
                let base = entry & frameMask & ~(pageSize - 1)
                return try finish(base | (address & (pageSize - 1)), pageSize: pageSize, writable: writable, user: user,
                                  executeDisabled: executeDisabled, updates: updates, fault: fault)
            }
            if isLast {
                updates.append(EntryUpdate(physical: slot, value: entry,
                                           bits: Self.accessed | (access.kind == .write ? Self.dirty : 0), wide: true))
                return try finish((entry & frameMask) | (address & 0xFFF), pageSize: 1 << 12, writable: writable,
                                  user: user, executeDisabled: executeDisabled, updates: updates, fault: fault)
            }
            updates.append(EntryUpdate(physical: slot, value: entry, bits: Self.accessed, wide: true))
            table = entry & frameMask
        }
        throw fault.make(.notPresent)  // not reached: the last level always returns
    }

    // MARK: - 32-bit paging (4-byte entries)

    private func walk32(_ address: UInt64, paging: PagingMode, access: MemoryAccess) throws(PageFault) -> Walk {
        let fault = FaultBuilder(address: address, paging: paging, access: access)
        let pdeSlot = GuestAddress((paging.cr3 & 0xFFFF_F000) + ((address >> 22) & 0x3FF) * 4)
        let pde = try readEntry32(pdeSlot, fault)
        guard pde & Self.present != 0 else { throw fault.make(.notPresent) }
        let writeBits = access.kind == .write ? Self.dirty : 0
        if pde & Self.largePage != 0 && paging.pageSizeExtensions {
            // A 4-MiB page (PSE-36): bits 20:13 are physical address bits 39:32, those at
            // and above MAXPHYADDR reserved, and bit 21 is reserved.
            let highBits = min(paging.physicalAddressBits, 40) - 32
            let highMask: UInt64 = ((1 << UInt64(highBits)) - 1) << 13
            guard pde & (0x1F_E000 & ~highMask) == 0, pde & (1 << 21) == 0 else { throw fault.make(.reservedBit) }
            let base = (pde & 0xFFC0_0000) | (((pde >> 13) & 0xFF) << 32)
            return try finish(base | (address & 0x3F_FFFF), pageSize: 4 << 20, writable: pde & Self.writableBit != 0,
                              user: pde & Self.userBit != 0, executeDisabled: false,
                              updates: [EntryUpdate(physical: pdeSlot, value: pde, bits: Self.accessed | writeBits, wide: false)],
                              fault: fault)
        }
        let pteSlot = GuestAddress((pde & 0xFFFF_F000) + ((address >> 12) & 0x3FF) * 4)
        let pte = try readEntry32(pteSlot, fault)
        guard pte & Self.present != 0 else { throw fault.make(.notPresent) }
        return try finish((pte & 0xFFFF_F000) | (address & 0xFFF), pageSize: 1 << 12,
                          writable: pde & pte & Self.writableBit != 0, user: pde & pte & Self.userBit != 0,
                          executeDisabled: false,
                          updates: [EntryUpdate(physical: pdeSlot, value: pde, bits: Self.accessed, wide: false),
                                    EntryUpdate(physical: pteSlot, value: pte, bits: Self.accessed | writeBits, wide: false)],
                          fault: fault)
    }

    // MARK: - Rights (SDM 4.6)

    private func finish(_ physical: UInt64, pageSize: UInt64, writable: Bool, user: Bool, executeDisabled: Bool,
                        updates: [EntryUpdate], fault: FaultBuilder) throws(PageFault) -> Walk {
        let access = fault.access, paging = fault.paging
        if access.checksRights {
            switch access.kind {
            case .execute:
                if executeDisabled { throw fault.make(.executeNoExecute) }
                if access.user && !user { throw fault.make(.userToSupervisor) }
                if !access.user && user && paging.smep { throw fault.make(.supervisorFetchFromUser) }
            case .read, .write:
                if access.user && !user { throw fault.make(.userToSupervisor) }
                if !access.user && user && paging.smap && !access.alignmentCheckFlag {
                    throw fault.make(.supervisorAccessToUser)
                }
                if access.kind == .write && !writable && (access.user || paging.writeProtect) {
                    throw fault.make(.writeToReadOnly)
                }
            }
        }
        let translation = PageTranslation(physical: GuestAddress(physical), pageSize: pageSize, writable: writable,
                                          user: user, executable: !executeDisabled)
        return Walk(translation: translation, updates: updates)
    }

    // MARK: - Entries

    private func readEntry(_ slot: GuestAddress, _ fault: FaultBuilder) throws(PageFault) -> UInt64 {
        do { return try readInteger(UInt64.self, at: slot) } catch { throw fault.make(.tableOutsideMemory(physical: slot.raw)) }
    }

    private func readEntry32(_ slot: GuestAddress, _ fault: FaultBuilder) throws(PageFault) -> UInt64 {
        do { return UInt64(try readInteger(UInt32.self, at: slot)) } catch { throw fault.make(.tableOutsideMemory(physical: slot.raw)) }
    }

    /// Sets the walk's A/D bits where they are clear; false when an entry changed under
    /// the walk (the caller walks again).
    private func setAccessedDirty(_ updates: [EntryUpdate]) -> Bool {
        for update in updates where update.value & update.bits != update.bits {
            if update.wide {
                guard let result = try? compareExchange(at: update.physical, expected: update.value,
                                                        desired: update.value | update.bits) else { continue }
                if !result.exchanged { return false }
            } else {
                // A 4-byte entry: exchange the aligned 8 bytes that hold it.
                let pair = GuestAddress(update.physical.raw & ~7)
                let shift = (update.physical.raw & 4) * 8
                guard let whole = try? readInteger(UInt64.self, at: pair),
                      (whole >> shift) & 0xFFFF_FFFF == update.value else { return false }
                guard let result = try? compareExchange(at: pair, expected: whole, desired: whole | (update.bits << shift))
                else { continue }
                if !result.exchanged { return false }
            }
        }
        return true
    }
}

/// Builds the fault for one walk: the error code's W, U and I/D bits come from the access.
struct FaultBuilder {
    let address: UInt64
    let paging: PagingMode
    let access: MemoryAccess

    func make(_ reason: PageFault.Reason) -> PageFault {
        var code: UInt32 = 0
        switch reason {
        case .nonCanonical, .tableOutsideMemory: return PageFault(address: address, reason: reason, errorCode: 0)
        case .notPresent: break
        case .reservedBit: code |= 1 | 8
        default: code |= 1
        }
        if access.kind == .write { code |= 2 }
        if access.user { code |= 4 }
        // I/D is reported for fetches when execute-disable or SMEP can apply (SDM 4.7).
        if access.kind == .execute && (paging.smep || (paging.noExecute && paging.kind != .bits32)) { code |= 16 }
        return PageFault(address: address, reason: reason, errorCode: code)
    }
}
