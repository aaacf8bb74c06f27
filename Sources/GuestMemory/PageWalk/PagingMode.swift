/// How a vCPU translates linear addresses, taken from its control registers (Intel SDM
/// vol. 3A 4.1, "Paging modes and control bits"): everything a page walk needs to know,
/// and nothing of the rest of the vCPU, so the walk is a pure function of memory.
public struct PagingMode: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        /// CR0.PG = 0: linear addresses are physical (truncated to 32 bits).
        case off
        /// 32-bit paging: CR0.PG = 1, CR4.PAE = 0 (two levels of 32-bit entries).
        case bits32 = "32-bit"
        /// PAE paging: CR4.PAE = 1, EFER.LMA = 0 (four PDPTEs, then two levels).
        case pae = "PAE"
        /// 4-level paging: EFER.LMA = 1, CR4.LA57 = 0.
        case level4 = "4-level"
        /// 5-level paging: EFER.LMA = 1, CR4.LA57 = 1.
        case level5 = "5-level"
    }

    public var kind: Kind
    /// CR3: the root table's physical address is taken from it per mode.
    public var cr3: UInt64
    /// CR0.WP: supervisor writes honour read-only pages.
    public var writeProtect: Bool
    /// EFER.NXE: bit 63 of an entry is execute-disable (reserved when clear).
    public var noExecute: Bool
    /// CR4.PSE: 4-MiB pages in 32-bit paging (PAE and long mode always have large pages).
    public var pageSizeExtensions: Bool
    /// CR4.SMEP: supervisor fetches from user pages fault.
    public var smep: Bool
    /// CR4.SMAP: supervisor data accesses to user pages fault unless RFLAGS.AC allows it.
    public var smap: Bool
    /// MAXPHYADDR (CPUID 0x80000008 EAX[7:0]): entry bits at and above it are reserved.
    public var physicalAddressBits: Int
    /// CPUID 0x80000001 EDX[26]: whether a PDPTE may map a 1-GiB page.
    public var gigabytePages: Bool

    /// CR0.PG (bit 31), CR0.WP (16), CR4.PSE (4), CR4.PAE (5), CR4.SMEP (20), CR4.SMAP (21),
    /// CR4.LA57 (12), EFER.NXE (11), EFER.LMA (10).
    public init(cr0: UInt64, cr3: UInt64, cr4: UInt64, efer: UInt64,
                physicalAddressBits: Int = 52, gigabytePages: Bool = true) {
        if cr0 & (1 << 31) == 0 {
            kind = .off
        } else if cr4 & (1 << 5) == 0 {
            kind = .bits32
        } else if efer & (1 << 10) == 0 {
            kind = .pae
        } else {
            kind = cr4 & (1 << 12) != 0 ? .level5 : .level4
        }
        self.cr3 = cr3
        writeProtect = cr0 & (1 << 16) != 0
        noExecute = efer & (1 << 11) != 0
        pageSizeExtensions = cr4 & (1 << 4) != 0
        smep = cr4 & (1 << 20) != 0
        smap = cr4 & (1 << 21) != 0
        self.physicalAddressBits = min(max(physicalAddressBits, 32), 52)
        self.gigabytePages = gigabytePages
    }

    /// Whether linear addresses are 64 bits wide (and must be canonical).
    public var isLongMode: Bool { kind == .level4 || kind == .level5 }

    /// The linear address width: 57 or 48 bits in long mode, else 32.
    public var linearAddressBits: Int {
        switch kind {
        case .level5: return 57
        case .level4: return 48
        default: return 32
        }
    }

    /// Whether `address` is canonical for this mode (bits above the width copy the top bit).
    public func isCanonical(_ address: UInt64) -> Bool {
        guard isLongMode else { return true }
        let shift = UInt64(64 - linearAddressBits)
        return UInt64(bitPattern: (Int64(bitPattern: address << shift)) >> shift) == address
    }

    public var description: String {
        "\(kind.rawValue) paging, CR3 0x\(String(cr3, radix: 16))"
            + (writeProtect ? ", WP" : "") + (noExecute ? ", NXE" : "")
            + (smep ? ", SMEP" : "") + (smap ? ", SMAP" : "")
    }
}

/// What an access is, as the page walk checks it (SDM 4.6, "Access rights").
public struct MemoryAccess: Sendable, Equatable {
    public enum Kind: Sendable { case read, write, execute }

    public var kind: Kind
    /// A user-mode access (CPL 3, not an implicit supervisor access such as a descriptor
    /// table read); sets the U/S bit of a #PF error code.
    public var user: Bool
    /// RFLAGS.AC for an explicit supervisor data access: when set, SMAP lets it reach user pages.
    public var alignmentCheckFlag: Bool
    /// False for a debugger: presence and reserved bits are checked, rights are not.
    public var checksRights: Bool
    /// Whether a successful access sets the accessed bits, and the dirty bit for a
    /// write, as the CPU would (a debugger's peek leaves no trace).
    public var setsAccessedDirty: Bool

    public init(_ kind: Kind, user: Bool = false, alignmentCheckFlag: Bool = false,
                checksRights: Bool = true, setsAccessedDirty: Bool = true) {
        self.kind = kind
        self.user = user
        self.alignmentCheckFlag = alignmentCheckFlag
        self.checksRights = checksRights
        self.setsAccessedDirty = setsAccessedDirty
    }

    /// A debugger's access: any mapped page, whatever its rights, and no A/D bits touched.
    public static func debugger(_ kind: Kind) -> MemoryAccess {
        MemoryAccess(kind, checksRights: false, setsAccessedDirty: false)
    }
}
