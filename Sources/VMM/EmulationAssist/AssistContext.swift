import GuestMemory
import KVM

/// A vCPU's architectural state while the assist finishes one instruction: read once
/// (`KVM_GET_REGS` + `KVM_GET_SREGS`), changed in place, and written back through the
/// sync-register area (`kvm_dirty_regs`), so the next `KVM_RUN` loads it without a
/// `KVM_SET_REGS`/`KVM_SET_SREGS` round trip. Nothing here is read on any other exit.
struct AssistContext {
    let vcpu: KVMVCPU
    let memory: GuestMemory
    var regs: Registers
    var sregs: SpecialRegisters
    private(set) var regsDirty = false
    private(set) var sregsDirty = false

    init(vcpu: KVMVCPU, memory: GuestMemory) throws {
        self.vcpu = vcpu
        self.memory = memory
        regs = try vcpu.registers()
        sregs = try vcpu.specialRegisters()
    }

    /// Hands the changed register sets to KVM for the next entry.
    func commit() {
        if regsDirty { vcpu.setSyncedRegisters(regs) }
        if sregsDirty { vcpu.setSyncedSpecialRegisters(sregs) }
    }

    mutating func markSpecialRegistersDirty() { sregsDirty = true }

    // MARK: - Mode

    /// The current privilege level, as KVM reports it: SS.DPL.
    var cpl: Int { Int(sregs.ss.dpl & 3) }

    var protectedMode: Bool { sregs.cr0 & 1 != 0 }

    /// RFLAGS.VM: virtual-8086 mode (protected mode running 8086 code).
    var virtual8086: Bool { regs.rflags & (1 << 17) != 0 }

    var codeSize: DecodedInstruction.CodeSize {
        if !protectedMode { return .bits16 }
        if sregs.efer & (1 << 10) != 0 && sregs.cs.l != 0 { return .bits64 }
        return sregs.cs.db != 0 ? .bits32 : .bits16
    }

    var paging: PagingMode {
        PagingMode(cr0: sregs.cr0, cr3: sregs.cr3, cr4: sregs.cr4, efer: sregs.efer)
    }

    /// RFLAGS bits.
    static let carry: UInt64 = 1 << 0, parity: UInt64 = 1 << 2, adjust: UInt64 = 1 << 4, zero: UInt64 = 1 << 6
    static let sign: UInt64 = 1 << 7, trap: UInt64 = 1 << 8, interrupt: UInt64 = 1 << 9, overflow: UInt64 = 1 << 11
    static let resume: UInt64 = 1 << 16, alignmentCheck: UInt64 = 1 << 18
    static let arithmeticFlags = carry | parity | adjust | zero | sign | overflow

    /// Sets or clears RFLAGS bits.
    mutating func setFlags(_ bits: UInt64, _ on: Bool) {
        regs.rflags = on ? regs.rflags | bits : regs.rflags & ~bits
        regsDirty = true
    }

    /// Replaces the arithmetic flags (CF PF AF ZF SF OF) with `bits`.
    mutating func setArithmeticFlags(_ bits: UInt64) {
        regs.rflags = (regs.rflags & ~Self.arithmeticFlags) | (bits & Self.arithmeticFlags)
        regsDirty = true
    }

    /// Moves RIP past `insn` (a finished instruction also ends an interrupt shadow and RF).
    mutating func advance(past insn: DecodedInstruction) {
        regs.rip = nextRIP(after: insn)
        regs.rflags &= ~Self.resume
        regsDirty = true
    }

    func nextRIP(after insn: DecodedInstruction) -> UInt64 {
        let next = regs.rip &+ UInt64(insn.length)
        return insn.codeSize == .bits64 ? next : next & 0xFFFF_FFFF
    }

    mutating func setRIP(_ rip: UInt64) {
        regs.rip = rip
        regsDirty = true
    }

    mutating func setStackPointer(_ rsp: UInt64) {
        regs.rsp = rsp
        regsDirty = true
    }

    // MARK: - General-purpose registers (0 = RAX ... 15 = R15, the ModRM numbering)

    func register(_ number: Int) -> UInt64 {
        switch number {
        case 0: return regs.rax
        case 1: return regs.rcx
        case 2: return regs.rdx
        case 3: return regs.rbx
        case 4: return regs.rsp
        case 5: return regs.rbp
        case 6: return regs.rsi
        case 7: return regs.rdi
        case 8: return regs.r8
        case 9: return regs.r9
        case 10: return regs.r10
        case 11: return regs.r11
        case 12: return regs.r12
        case 13: return regs.r13
        case 14: return regs.r14
        default: return regs.r15
        }
    }

    /// Writes `size` bits of register `number` with the architectural rule: a 32-bit
    /// write zero-extends to 64 bits, a 16-bit write keeps the upper bits.
    mutating func setRegister(_ number: Int, size: Int, _ value: UInt64) {
        let merged: UInt64
        switch size {
        case 64: merged = value
        case 32: merged = value & 0xFFFF_FFFF
        default: merged = (register(number) & ~0xFFFF) | (value & 0xFFFF)
        }
        switch number {
        case 0: regs.rax = merged
        case 1: regs.rcx = merged
        case 2: regs.rdx = merged
        case 3: regs.rbx = merged
        case 4: regs.rsp = merged
        case 5: regs.rbp = merged
        case 6: regs.rsi = merged
        case 7: regs.rdi = merged
        case 8: regs.r8 = merged
        case 9: regs.r9 = merged
        case 10: regs.r10 = merged
        case 11: regs.r11 = merged
        case 12: regs.r12 = merged
        case 13: regs.r13 = merged
        case 14: regs.r14 = merged
        default: regs.r15 = merged
        }
        regsDirty = true
    }

    // MARK: - Segments and memory operands

    func segment(_ name: SegmentRegisterName) -> Segment {
        switch name {
        case .es: return sregs.es
        case .cs: return sregs.cs
        case .ss: return sregs.ss
        case .ds: return sregs.ds
        case .fs: return sregs.fs
        case .gs: return sregs.gs
        }
    }

    /// Why a memory operand cannot be formed: the fault the CPU raises, or a case the
    /// assist does not model exactly.
    enum OperandError: Error {
        case generalProtection
        case stackFault
        case unsupported(String)
    }

    /// The linear address of `memory` for an access of `size` bytes: the effective address
    /// truncated to the address size, plus the segment base (in 64-bit mode only FS and GS
    /// have one), with the canonical check of 64-bit mode and the limit check of the others.
    func linearAddress(_ memory: DecodedInstruction.Memory, of insn: DecodedInstruction, size: UInt64) throws(OperandError) -> UInt64 {
        var offset = UInt64(bitPattern: memory.displacement)
        if memory.ripRelative { offset = offset &+ nextRIP(after: insn) }
        if let base = memory.base { offset = offset &+ register(base) }
        if let index = memory.index { offset = offset &+ register(index) &* memory.scale }
        switch memory.addressSize {
        case .bits16: offset &= 0xFFFF
        case .bits32: offset &= 0xFFFF_FFFF
        case .bits64: break
        }
        let segment = segment(memory.segment)
        if insn.codeSize == .bits64 {
            let linear = memory.segment == .fs || memory.segment == .gs ? offset &+ segment.base : offset
            guard paging.isCanonical(linear), paging.isCanonical(linear &+ size &- 1) else {
                throw memory.segment == .ss ? .stackFault : .generalProtection
            }
            return linear
        }
        // Legacy modes: an unusable or null segment, or a limit violation, faults. The
        // limit check models expand-up data segments; expand-down ones are refused.
        guard segment.unusable == 0 || !protectedMode else { throw memory.segment == .ss ? .stackFault : .generalProtection }
        if protectedMode && segment.s != 0 && segment.type & 0xC == 0x4 {
            throw .unsupported("an expand-down data segment")
        }
        let last = offset &+ size &- 1
        guard last >= offset, last <= UInt64(segment.limit) else { throw memory.segment == .ss ? .stackFault : .generalProtection }
        return (segment.base &+ offset) & 0xFFFF_FFFF
    }

    /// The page-walk access of an explicit data access at the current privilege level.
    func dataAccess(_ kind: MemoryAccess.Kind) -> MemoryAccess {
        MemoryAccess(kind, user: cpl == 3, alignmentCheckFlag: regs.rflags & Self.alignmentCheck != 0)
    }
}
