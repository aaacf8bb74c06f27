/// A translation that failed: what the CPU would raise for it.
///
/// Most reasons are a page fault (#PF) with `errorCode` as the CPU pushes it (SDM 4.7):
/// bit 0 P (the entry was present: a rights or reserved-bit fault), bit 1 W/R, bit 2 U/S,
/// bit 3 RSVD, bit 4 I/D. A non-canonical address is a #GP instead, and a page-table read
/// outside guest RAM is no CPU fault at all: the VMM refuses to go on.
public struct PageFault: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Reason: Sendable, Equatable {
        /// An entry on the way had P = 0.
        case notPresent
        /// A present entry had a reserved bit set.
        case reservedBit
        /// A write to a page that is read-only for this access (CR0.WP for supervisor writes).
        case writeToReadOnly
        /// A user-mode access to a supervisor page.
        case userToSupervisor
        /// An instruction fetch from an execute-disable page.
        case executeNoExecute
        /// A supervisor fetch from a user page with CR4.SMEP.
        case supervisorFetchFromUser
        /// A supervisor data access to a user page with CR4.SMAP (and RFLAGS.AC clear).
        case supervisorAccessToUser
        /// A long-mode address that is not canonical: #GP, not #PF.
        case nonCanonical
        /// A page-table entry the walk had to read lies outside guest RAM (past its end,
        /// in the MMIO hole): a hostile or broken table. Not an architectural fault.
        case tableOutsideMemory(physical: UInt64)
    }

    /// The linear address that faulted (what CR2 would hold).
    public let address: UInt64
    public let reason: Reason
    /// The #PF error code (0 for `.nonCanonical` and `.tableOutsideMemory`).
    public let errorCode: UInt32

    public init(address: UInt64, reason: Reason, errorCode: UInt32) {
        self.address = address
        self.reason = reason
        self.errorCode = errorCode
    }

    /// Whether the CPU would raise #PF for it (and so the guest can be handed it).
    public var isPageFault: Bool {
        switch reason {
        case .nonCanonical, .tableOutsideMemory: return false
        default: return true
        }
    }

    public var description: String {
        let hex = "0x" + String(address, radix: 16)
        switch reason {
        case .notPresent: return "page fault at \(hex): not present (error 0x\(String(errorCode, radix: 16)))"
        case .reservedBit: return "page fault at \(hex): reserved bit set (error 0x\(String(errorCode, radix: 16)))"
        case .writeToReadOnly: return "page fault at \(hex): write to a read-only page (error 0x\(String(errorCode, radix: 16)))"
        case .userToSupervisor: return "page fault at \(hex): user access to a supervisor page (error 0x\(String(errorCode, radix: 16)))"
        case .executeNoExecute: return "page fault at \(hex): fetch from a no-execute page (error 0x\(String(errorCode, radix: 16)))"
        case .supervisorFetchFromUser: return "page fault at \(hex): SMEP, supervisor fetch from a user page (error 0x\(String(errorCode, radix: 16)))"
        case .supervisorAccessToUser: return "page fault at \(hex): SMAP, supervisor access to a user page (error 0x\(String(errorCode, radix: 16)))"
        case .nonCanonical: return "general protection: \(hex) is not canonical"
        case .tableOutsideMemory(let p): return "page walk for \(hex) reads a table entry at 0x\(String(p, radix: 16)), outside guest RAM"
        }
    }
}

/// One successful translation.
public struct PageTranslation: Sendable, Equatable {
    /// The guest-physical address of the byte asked for.
    public let physical: GuestAddress
    /// The size of the page that maps it: 4 KiB, 2 or 4 MiB, 1 GiB (or 4 GiB with paging off).
    public let pageSize: UInt64
    /// The page's effective rights, combined over every level of the walk.
    public let writable: Bool
    public let user: Bool
    public let executable: Bool

    /// Bytes from `physical` to the end of its page.
    public var bytesToPageEnd: UInt64 { pageSize - (physical.raw & (pageSize - 1)) }
}
