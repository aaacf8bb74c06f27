import GuestMemory
import KVM

/// One finisher per instruction: the CPU's behaviour from the SDM's "Operation" and
/// "Flags Affected" sections, faults included. Each either completes the instruction
/// (registers changed in `ctx`, RIP advanced) or throws the `GuestFault` it raises or a
/// `Refusal` naming what it will not guess at.
extension EmulationAssist {
    func execute(_ kind: AssistedInstruction, _ insn: DecodedInstruction, _ ctx: inout AssistContext) throws {
        switch kind {
        case .int3:
            // #BP is a trap: the frame's RIP is the next instruction (KVM delivers it
            // through the guest's IDT, RSP0/IST switch, #GP/#DF/triple fault included).
            ctx.advance(past: insn)
            ctx.commit()
            try ctx.vcpu.injectException(vector: 3)
        case .interrupt(let vector):
            ctx.advance(past: insn)
            ctx.commit()
            try ctx.vcpu.injectSoftwareInterrupt(vector: vector)
        case .clac, .stac:
            // #UD outside CPL 0 (the guest was shown SMAP, or it would not use them).
            guard ctx.cpl == 0 else { throw GuestFault.invalidOpcode }
            ctx.setFlags(AssistContext.alignmentCheck, kind == .stac)
            ctx.advance(past: insn)
        case .popcnt:
            try popcnt(insn, &ctx)
        case .rdtscp:
            // #GP when CR4.TSD restricts time-stamp reads to CPL 0.
            guard ctx.sregs.cr4 & (1 << 2) == 0 || ctx.cpl == 0 else { throw GuestFault.generalProtection }
            let values = try ctx.vcpu.msrs([0x10, 0xC000_0103])  // IA32_TIME_STAMP_COUNTER, IA32_TSC_AUX
            ctx.setRegister(0, size: 32, values[0] & 0xFFFF_FFFF)
            ctx.setRegister(2, size: 32, values[0] >> 32)
            ctx.setRegister(1, size: 32, values[1] & 0xFFFF_FFFF)
            ctx.advance(past: insn)
        case .fwait:
            // #NM when CR0.MP and CR0.TS are both set; #MF when an unmasked x87
            // exception is pending (FSW.ES); otherwise nothing.
            if ctx.sregs.cr0 & 0xA == 0xA { throw GuestFault.deviceNotAvailable }
            if try ctx.vcpu.fpu().fsw & 0x80 != 0 { throw GuestFault.mathFault }
            ctx.advance(past: insn)
        case .rdrand, .rdseed:
            // No entropy source: CF = 0 and a zero result, which the SDM allows ("no
            // random number available") and every caller must handle.
            guard let modrm = insn.modrm, modrm.mod == 3 else { throw GuestFault.invalidOpcode }
            ctx.setRegister(modrm.rm, size: insn.operandSize, 0)
            ctx.setArithmeticFlags(0)
            ctx.advance(past: insn)
        case .verr, .verw:
            try verifySegment(insn, write: kind == .verw, &ctx)
        case .lsl:
            try loadSegmentLimit(insn, &ctx)
        case .cmpxchg16b:
            try cmpxchg16b(insn, &ctx)
        case .xgetbv:
            guard ctx.sregs.cr4 & (1 << 18) != 0 else { throw GuestFault.invalidOpcode }  // CR4.OSXSAVE
            guard ctx.regs.rcx & 0xFFFF_FFFF == 0, let xcr0 = try ctx.vcpu.extendedControlRegister(0) else {
                throw GuestFault.generalProtection  // only XCR0 is offered
            }
            ctx.setRegister(0, size: 32, xcr0 & 0xFFFF_FFFF)
            ctx.setRegister(2, size: 32, xcr0 >> 32)
            ctx.advance(past: insn)
        case .ldmxcsr, .stmxcsr:
            try mxcsrInstruction(load: kind == .ldmxcsr, insn, &ctx)
        case .nop:
            ctx.advance(past: insn)
        case .cld:
            ctx.setFlags(1 << 10, false)
            ctx.advance(past: insn)
        case .hypercall:
            finishHypercall(&ctx, length: insn.length)
        case .refused(let what):
            throw Refusal("\(what) is not finished by the emulation assist")
        }
    }

    /// A KVM hypercall this VMM does not offer: `-KVM_ENOSYS` (-1000) in RAX, or
    /// `-KVM_EPERM` (-1) from outside CPL 0, as KVM answers an unknown call.
    func finishHypercall(_ ctx: inout AssistContext, length: Int) {
        ctx.setRegister(0, size: 64, ctx.cpl == 0 ? UInt64(bitPattern: -1000) : UInt64(bitPattern: -1))
        ctx.setRIP(ctx.regs.rip &+ UInt64(length))
    }

    // MARK: - Memory operands

    /// Reads `size` bytes of the instruction's memory operand, as an explicit data access
    /// at the current privilege level.
    func readOperand(_ insn: DecodedInstruction, size: Int, _ ctx: AssistContext) throws -> UInt64 {
        guard let memory = insn.memory else { throw GuestFault.invalidOpcode }
        let linear = try operandAddress(memory, insn, size: UInt64(size), ctx)
        do {
            let bytes = try self.memory.readVirtual(at: linear, count: size, paging: ctx.paging, access: ctx.dataAccess(.read))
            return bytes.reversed().reduce(0) { ($0 << 8) | UInt64($1) }
        } catch {
            throw try guestFault(error)
        }
    }

    /// Writes `bytes` to the instruction's memory operand, as an explicit data access at
    /// the current privilege level (every page checked before the first byte is written).
    func writeOperand(_ insn: DecodedInstruction, _ bytes: [UInt8], _ ctx: AssistContext) throws {
        guard let memory = insn.memory else { throw GuestFault.invalidOpcode }
        let linear = try operandAddress(memory, insn, size: UInt64(bytes.count), ctx)
        do {
            try self.memory.writeVirtual(bytes, at: linear, paging: ctx.paging, access: ctx.dataAccess(.write))
        } catch {
            throw try guestFault(error)
        }
    }

    func operandAddress(_ memory: DecodedInstruction.Memory, _ insn: DecodedInstruction, size: UInt64,
                        _ ctx: AssistContext) throws -> UInt64 {
        do { return try ctx.linearAddress(memory, of: insn, size: size) } catch {
            switch error {
            case .generalProtection: throw GuestFault.generalProtection
            case .stackFault: throw GuestFault.stackFault
            case .unsupported(let what): throw Refusal("its memory operand is in \(what)")
            }
        }
    }

    /// The guest-visible fault for a failed virtual access, or a refusal when the page
    /// is not RAM (MMIO, nothing) or its tables lie outside RAM.
    func guestFault(_ error: GuestMemory.VirtualAccessError) throws -> GuestFault {
        switch error {
        case .fault(let fault) where fault.isPageFault: return .pageFault(fault)
        case .fault(let fault) where fault.reason == .nonCanonical: return .generalProtection
        case .fault(let fault): throw Refusal(fault.description)
        case .physical(_, let why): throw Refusal("its memory operand is not guest RAM: \(why)")
        }
    }

    // MARK: - popcnt

    private func popcnt(_ insn: DecodedInstruction, _ ctx: inout AssistContext) throws {
        guard let modrm = insn.modrm else { throw GuestFault.invalidOpcode }
        let size = insn.operandSize
        let mask: UInt64 = size == 64 ? .max : (1 << UInt64(size)) - 1
        let source = modrm.mod == 3 ? ctx.register(modrm.rm) & mask : try readOperand(insn, size: size / 8, ctx) & mask
        ctx.setRegister(modrm.reg, size: size, UInt64(source.nonzeroBitCount))
        // ZF = (source == 0); CF, OF, SF, AF, PF cleared.
        ctx.setArithmeticFlags(source == 0 ? AssistContext.zero : 0)
        ctx.advance(past: insn)
    }

    // MARK: - cmpxchg16b

    /// `lock cmpxchg16b m128`: the host's own `lock cmpxchg16b` on the page the guest's
    /// address maps to, so it stays atomic against the other vCPUs. A misaligned operand
    /// raises #GP(0); the access is a write whatever the outcome (the CPU always writes).
    private func cmpxchg16b(_ insn: DecodedInstruction, _ ctx: inout AssistContext) throws {
        guard let memory = insn.memory else { throw GuestFault.invalidOpcode }
        let linear = try operandAddress(memory, insn, size: 16, ctx)
        guard linear & 15 == 0 else { throw GuestFault.generalProtection }
        let translation: PageTranslation
        do { translation = try self.memory.translate(linear, paging: ctx.paging, access: ctx.dataAccess(.write)) } catch {
            throw try guestFault(.fault(error))
        }
        let expected = GuestMemory.Pair(low: ctx.regs.rax, high: ctx.regs.rdx)
        let desired = GuestMemory.Pair(low: ctx.regs.rbx, high: ctx.regs.rcx)
        let result: GuestMemory.Exchange<GuestMemory.Pair>
        do { result = try self.memory.compareExchange(at: translation.physical, expected: expected, desired: desired) } catch {
            throw Refusal("its operand at physical \(translation.physical) is not guest RAM: \(error)")
        }
        if !result.exchanged {
            ctx.setRegister(0, size: 64, result.previous.low)
            ctx.setRegister(2, size: 64, result.previous.high)
        }
        // Only ZF is defined; the other arithmetic flags are left as they were.
        ctx.setFlags(AssistContext.zero, result.exchanged)
        ctx.advance(past: insn)
    }

    // MARK: - verr / verw

    /// Sets ZF when the selector names a segment readable (verr) or writable (verw) at
    /// the current privilege level (SDM "VERR/VERW"). The descriptor read is an implicit
    /// supervisor access; P is not checked. (The MDS buffer clearing that `verw` also does
    /// on affected CPUs is microarchitectural and not reproduced.)
    private func verifySegment(_ insn: DecodedInstruction, write: Bool, _ ctx: inout AssistContext) throws {
        guard ctx.protectedMode, !ctx.virtual8086, let modrm = insn.modrm else { throw GuestFault.invalidOpcode }
        let selector = modrm.mod == 3 ? ctx.register(modrm.rm) & 0xFFFF : try readOperand(insn, size: 2, ctx)
        var ok = false
        if let descriptor = try segmentDescriptor(selector, ctx) {
            let isCodeOrData = descriptor & (1 << 44) != 0
            let type = (descriptor >> 40) & 0xF
            let dpl = Int((descriptor >> 45) & 3)
            let code = type & 8 != 0
            let usable = write ? (!code && type & 2 != 0) : (!code || type & 2 != 0)
            let conformingCode = code && type & 4 != 0
            let privileged = dpl >= ctx.cpl && dpl >= Int(selector & 3)
            ok = isCodeOrData && usable && (privileged || (!write && conformingCode))
        }
        ctx.setFlags(AssistContext.zero, ok)
        ctx.advance(past: insn)
    }

    /// The 8-byte descriptor `selector` names in the GDT or LDT, read as an implicit
    /// supervisor access; nil for a null selector, an unusable LDT or an index past the
    /// table's limit (what makes VERR/VERW/LSL clear ZF rather than fault).
    private func segmentDescriptor(_ selector: UInt64, _ ctx: AssistContext) throws -> UInt64? {
        guard selector & ~3 != 0 else { return nil }
        let table = selector & 4 != 0 ? (ctx.sregs.ldt.base, UInt64(ctx.sregs.ldt.limit), ctx.sregs.ldt.unusable == 0)
                                      : (ctx.sregs.gdt.base, UInt64(ctx.sregs.gdt.limit), true)
        let offset = selector & ~7
        guard table.2, offset + 7 <= table.1 else { return nil }
        do {
            return try memory.readVirtualInteger(UInt64.self, at: table.0 &+ offset, paging: ctx.paging, access: MemoryAccess(.read))
        } catch {
            throw try guestFault(error)
        }
    }

    // MARK: - lsl

    /// LSL r, r/m16 (SDM "LSL—Load Segment Limit"): for a selector visible at the current
    /// privilege level and its RPL — a code or data segment (conforming code at any DPL),
    /// an LDT or a TSS (in IA-32e mode the 64-bit TSS types only) — the limit in bytes
    /// (scaled by G) goes to the destination and ZF is set; otherwise ZF is cleared and
    /// the destination keeps its value. Linux reads its per-CPU GDT entry so (vgetcpu,
    /// the NMI backtrace of a restored guest). The upper half of a 16-byte system
    /// descriptor (type 0 in IA-32e mode, which Intel's table lists and AMD's does not)
    /// is refused, as AMD does. #UD in real and virtual-8086 mode.
    private func loadSegmentLimit(_ insn: DecodedInstruction, _ ctx: inout AssistContext) throws {
        guard ctx.protectedMode, !ctx.virtual8086, let modrm = insn.modrm else { throw GuestFault.invalidOpcode }
        let selector = modrm.mod == 3 ? ctx.register(modrm.rm) & 0xFFFF : try readOperand(insn, size: 2, ctx)
        var limit: UInt64?
        if let d = try segmentDescriptor(selector, ctx) {
            let system = d & (1 << 44) == 0
            let type = (d >> 40) & 0xF
            let dpl = Int((d >> 45) & 3)
            let ia32e = ctx.sregs.efer & (1 << 10) != 0
            let systemTypes: Set<UInt64> = ia32e ? [0x2, 0x9, 0xB] : [0x1, 0x2, 0x3, 0x9, 0xB]
            let conformingCode = !system && type & 0xC == 0xC
            let visible = conformingCode || (dpl >= ctx.cpl && dpl >= Int(selector & 3))
            if visible && (!system || systemTypes.contains(type)) {
                let raw = (d & 0xFFFF) | ((d >> 32) & 0xF_0000)
                limit = d & (1 << 55) != 0 ? raw << 12 | 0xFFF : raw
            }
        }
        if let limit {
            let size = insn.operandSize
            ctx.setRegister(modrm.reg, size: size, size == 16 ? limit & 0xFFFF : limit)
        }
        ctx.setFlags(AssistContext.zero, limit != nil)
        ctx.advance(past: insn)
    }
}
