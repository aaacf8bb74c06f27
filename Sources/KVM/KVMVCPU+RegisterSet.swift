import CKVM

/// A segment register, for `VCPURegister`.
public enum SegmentRegister: Sendable, Hashable, CaseIterable {
    case cs, ds, es, fs, gs, ss, tr, ldt
}

/// One architectural register as a 64-bit value: the unit of the batch API
/// (libvmmapi's `vm_get_register_set`/`vm_set_register_set`).
public enum VCPURegister: Sendable, Hashable {
    case rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp
    case r8, r9, r10, r11, r12, r13, r14, r15
    case rip, rflags
    case cr0, cr2, cr3, cr4, cr8, efer, apicBase
    case segmentSelector(SegmentRegister), segmentBase(SegmentRegister), segmentLimit(SegmentRegister)
    case gdtBase, gdtLimit, idtBase, idtLimit

    /// The general-purpose registers, in `kvm_regs` order.
    public static let generalPurpose: [VCPURegister] = [
        .rax, .rbx, .rcx, .rdx, .rsi, .rdi, .rsp, .rbp,
        .r8, .r9, .r10, .r11, .r12, .r13, .r14, .r15, .rip, .rflags,
    ]

    var inSpecialRegisters: Bool {
        switch self {
        case .rax, .rbx, .rcx, .rdx, .rsi, .rdi, .rsp, .rbp, .r8, .r9, .r10, .r11,
             .r12, .r13, .r14, .r15, .rip, .rflags: return false
        default: return true
        }
    }
}

extension KVMVCPU {
    /// Reads several registers with at most one `KVM_GET_REGS` and one `KVM_GET_SREGS`.
    public func registers(_ list: [VCPURegister]) throws -> [UInt64] {
        let regs = list.contains { !$0.inSpecialRegisters } ? try registers() : Registers()
        let sregs = list.contains { $0.inSpecialRegisters } ? try specialRegisters() : SpecialRegisters()
        return list.map { Self.value(of: $0, regs, sregs) }
    }

    /// Writes several registers with one read-modify-write of `kvm_regs` and/or `kvm_sregs`.
    public func setRegisters(_ values: [(VCPURegister, UInt64)]) throws {
        let general = values.filter { !$0.0.inSpecialRegisters }
        let special = values.filter { $0.0.inSpecialRegisters }
        if !general.isEmpty {
            var regs = try registers()
            var unused = SpecialRegisters()
            for (reg, value) in general { Self.assign(reg, value, &regs, &unused) }
            try setRegisters(regs)
        }
        if !special.isEmpty {
            var sregs = try specialRegisters()
            var unused = Registers()
            for (reg, value) in special { Self.assign(reg, value, &unused, &sregs) }
            try setSpecialRegisters(sregs)
        }
    }

    /// `reg` out of already-fetched `kvm_regs`/`kvm_sregs` (no ioctl).
    public static func value(of reg: VCPURegister, _ r: Registers, _ s: SpecialRegisters) -> UInt64 {
        switch reg {
        case .rax: return r.rax
        case .rbx: return r.rbx
        case .rcx: return r.rcx
        case .rdx: return r.rdx
        case .rsi: return r.rsi
        case .rdi: return r.rdi
        case .rsp: return r.rsp
        case .rbp: return r.rbp
        case .r8: return r.r8
        case .r9: return r.r9
        case .r10: return r.r10
        case .r11: return r.r11
        case .r12: return r.r12
        case .r13: return r.r13
        case .r14: return r.r14
        case .r15: return r.r15
        case .rip: return r.rip
        case .rflags: return r.rflags
        case .cr0: return s.cr0
        case .cr2: return s.cr2
        case .cr3: return s.cr3
        case .cr4: return s.cr4
        case .cr8: return s.cr8
        case .efer: return s.efer
        case .apicBase: return s.apic_base
        case .segmentSelector(let seg): return UInt64(segment(seg, s).selector)
        case .segmentBase(let seg): return segment(seg, s).base
        case .segmentLimit(let seg): return UInt64(segment(seg, s).limit)
        case .gdtBase: return s.gdt.base
        case .gdtLimit: return UInt64(s.gdt.limit)
        case .idtBase: return s.idt.base
        case .idtLimit: return UInt64(s.idt.limit)
        }
    }

    /// Sets `reg` in `kvm_regs`/`kvm_sregs` held by the caller (no ioctl).
    public static func assign(_ reg: VCPURegister, _ v: UInt64, _ r: inout Registers, _ s: inout SpecialRegisters) {
        switch reg {
        case .rax: r.rax = v
        case .rbx: r.rbx = v
        case .rcx: r.rcx = v
        case .rdx: r.rdx = v
        case .rsi: r.rsi = v
        case .rdi: r.rdi = v
        case .rsp: r.rsp = v
        case .rbp: r.rbp = v
        case .r8: r.r8 = v
        case .r9: r.r9 = v
        case .r10: r.r10 = v
        case .r11: r.r11 = v
        case .r12: r.r12 = v
        case .r13: r.r13 = v
        case .r14: r.r14 = v
        case .r15: r.r15 = v
        case .rip: r.rip = v
        case .rflags: r.rflags = v
        case .cr0: s.cr0 = v
        case .cr2: s.cr2 = v
        case .cr3: s.cr3 = v
        case .cr4: s.cr4 = v
        case .cr8: s.cr8 = v
        case .efer: s.efer = v
        case .apicBase: s.apic_base = v
        case .segmentSelector(let seg): withSegment(seg, &s) { $0.selector = UInt16(truncatingIfNeeded: v) }
        case .segmentBase(let seg): withSegment(seg, &s) { $0.base = v }
        case .segmentLimit(let seg): withSegment(seg, &s) { $0.limit = UInt32(truncatingIfNeeded: v) }
        case .gdtBase: s.gdt.base = v
        case .gdtLimit: s.gdt.limit = UInt16(truncatingIfNeeded: v)
        case .idtBase: s.idt.base = v
        case .idtLimit: s.idt.limit = UInt16(truncatingIfNeeded: v)
        }
    }

    static func segment(_ seg: SegmentRegister, _ s: SpecialRegisters) -> Segment {
        switch seg {
        case .cs: return s.cs
        case .ds: return s.ds
        case .es: return s.es
        case .fs: return s.fs
        case .gs: return s.gs
        case .ss: return s.ss
        case .tr: return s.tr
        case .ldt: return s.ldt
        }
    }

    static func withSegment(_ seg: SegmentRegister, _ s: inout SpecialRegisters, _ body: (inout Segment) -> Void) {
        switch seg {
        case .cs: body(&s.cs)
        case .ds: body(&s.ds)
        case .es: body(&s.es)
        case .fs: body(&s.fs)
        case .gs: body(&s.gs)
        case .ss: body(&s.ss)
        case .tr: body(&s.tr)
        case .ldt: body(&s.ldt)
        }
    }
}
