import CKVM

extension Segment {
    /// A present segment with the given hidden-part attributes (SDM Vol. 3, 3.4.5).
    public static func make(selector: UInt16, base: UInt64, limit: UInt32, type: UInt8,
                            s: Bool = true, dpl: UInt8 = 0, db: Bool = false, l: Bool = false,
                            g: Bool = false) -> Segment {
        var seg = Segment()
        seg.selector = selector
        seg.base = base
        seg.limit = limit
        seg.type = type
        seg.present = 1
        seg.s = s ? 1 : 0
        seg.dpl = dpl
        seg.db = db ? 1 : 0
        seg.l = l ? 1 : 0
        seg.g = g ? 1 : 0
        seg.avl = 0
        seg.unusable = 0
        return seg
    }
}

extension KVMVCPU {
    /// Local APIC base for the BSP: 0xFEE00000, global enable (bit 11), BSP flag (bit 8).
    public static let defaultAPICBase: UInt64 = 0xFEE0_0000 | (1 << 11)
    static let bspFlag: UInt64 = 1 << 8

    /// Puts the vCPU in the x86 power-on reset state (Intel SDM Vol. 3, 10.1.1, table
    /// "IA-32 and Intel 64 Processor States Following Power-up, Reset, or INIT").
    ///
    /// Registers, segments, control registers, FPU/SSE, debug registers and pending
    /// events are reset. With an in-kernel irqchip the local APIC page is reset too and
    /// application processors are left waiting for INIT/SIPI.
    ///
    /// - Parameters:
    ///   - isBootstrap: the BSP starts runnable and has the BSP flag in IA32_APIC_BASE.
    ///   - cpuSignature: CPUID.1:EAX, which the processor leaves in EDX after reset.
    ///   - hasIRQChip: whether `KVM_CREATE_IRQCHIP` was done (LAPIC and MP state exist).
    ///   - xsave: this KVM's XSAVE layout (`xsaveLayout`, asked beforehand: a sandbox may
    ///     forbid the capability check by then), through which MXCSR is reset too; nil
    ///     without KVM_CAP_XSAVE.
    public func resetToPowerOnState(isBootstrap: Bool, cpuSignature: UInt32, hasIRQChip: Bool,
                                    xsave: XSAVELayout?) throws {
        var regs = Registers()
        regs.rip = 0xFFF0
        regs.rflags = 0x2
        regs.rdx = UInt64(cpuSignature)
        try setRegisters(regs)

        var sregs = try specialRegisters()
        // Code: 16-bit, base 0xFFFF0000 so the first fetch is at 0xFFFFFFF0.
        sregs.cs = .make(selector: 0xF000, base: 0xFFFF_0000, limit: 0xFFFF, type: 0xB)
        let data = Segment.make(selector: 0, base: 0, limit: 0xFFFF, type: 0x3)
        sregs.ds = data; sregs.es = data; sregs.fs = data; sregs.gs = data; sregs.ss = data
        sregs.ldt = .make(selector: 0, base: 0, limit: 0xFFFF, type: 0x2, s: false)
        sregs.tr = .make(selector: 0, base: 0, limit: 0xFFFF, type: 0x3, s: false)
        sregs.gdt = kvm_dtable(base: 0, limit: 0xFFFF, padding: (0, 0, 0))
        sregs.idt = kvm_dtable(base: 0, limit: 0xFFFF, padding: (0, 0, 0))
        sregs.cr0 = 0x6000_0010  // CD | NW | ET
        sregs.cr2 = 0; sregs.cr3 = 0; sregs.cr4 = 0; sregs.cr8 = 0
        sregs.efer = 0
        sregs.apic_base = Self.defaultAPICBase | (isBootstrap ? Self.bspFlag : 0)
        sregs.interrupt_bitmap = (0, 0, 0, 0)
        try setSpecialRegisters(sregs)

        var fpu = FPUState()
        fpu.fcw = 0x37F       // FINIT: all exceptions masked, 64-bit precision
        fpu.mxcsr = 0x1F80    // all SIMD exceptions masked
        try setFPU(fpu)
        // Some KVMs (PVM on this project's hosts) drop MXCSR in KVM_SET_FPU, which would
        // leave a rebooted guest the MXCSR it had set: the XSAVE area is reset too. All of
        // it in its init state but MXCSR, which KVM takes from the buffer when XSTATE_BV
        // names SSE (whose XMM registers are then loaded as the zeros they are here).
        if let layout = xsave {
            var area = [UInt8](repeating: 0, count: layout.size)
            area[0] = 0x7F; area[1] = 0x03      // FCW 0x037F
            area[24] = 0x80; area[25] = 0x1F    // MXCSR 0x1F80
            area[512] = 2                       // XSTATE_BV: SSE
            try setXSAVE(area, layout)
        }

        var dregs = DebugRegisters()
        dregs.dr6 = 0xFFFF_0FF0
        dregs.dr7 = 0x400
        try setDebugRegisters(dregs)

        var events = VCPUEvents()
        events.flags = UInt32(KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW)
        try setEvents(events)

        if hasIRQChip {
            try resetLAPIC()
            try setMPState(isBootstrap ? .runnable : .uninitialized)
        }
    }

    /// Resets the local APIC register page to its power-on values (SDM Vol. 3, 12.4.7.1):
    /// every LVT masked, SVR 0xFF (software-disabled), DFR flat, all else zero.
    /// The APIC ID and version registers are kept.
    public func resetLAPIC() throws {
        let current = try lapic()
        var fresh = LAPICState()
        withUnsafeBytes(of: current.regs) { old in
            withUnsafeMutableBytes(of: &fresh.regs) { new in
                func put(_ offset: Int, _ value: UInt32) { new.storeBytes(of: value, toByteOffset: offset, as: UInt32.self) }
                put(0x20, old.load(fromByteOffset: 0x20, as: UInt32.self))  // ID
                put(0x30, old.load(fromByteOffset: 0x30, as: UInt32.self))  // version
                put(0xE0, 0xFFFF_FFFF)                                      // DFR: flat model
                put(0xF0, 0xFF)                                             // SVR: spurious 0xFF, disabled
                for lvt in [0x320, 0x330, 0x340, 0x350, 0x360, 0x370] { put(lvt, 0x1_0000) }  // masked
            }
        }
        try setLAPIC(fresh)
    }
}
