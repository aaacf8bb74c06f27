import KVM
import Snapshot

/// One vCPU's architectural state as KVM exposes it (api.rst 4.x), in section `vcpu.N`:
/// registers, special registers, FPU/SSE/AVX state (XSAVE, or KVM_GET_FPU where KVM
/// has no XSAVE), XCRs, debug registers, the local APIC, pending events, the MP state,
/// every MSR of KVM_GET_MSR_INDEX_LIST that reads back, CPUID and the TSC frequency.
struct VCPUState: Sendable {
    static let version: UInt16 = 1
    /// IA32_TSC and IA32_TSC_DEADLINE (SDM Vol. 4).
    static let msrTSC: UInt32 = 0x10
    static let msrTSCDeadline: UInt32 = 0x6E0

    enum FloatingPoint: Sendable {
        case xsave([UInt8])
        case fpu(FPUState)
    }

    var apicID: UInt32
    /// nil without an in-kernel irqchip (no LAPIC, no MP state).
    var mpState: MPState?
    var lapic: LAPICState?
    var registers: Registers
    var specialRegisters: SpecialRegisters
    var floatingPoint: FloatingPoint
    var xcrs: XCRs?
    var debugRegisters: DebugRegisters
    var events: VCPUEvents
    var msrs: [(index: UInt32, value: UInt64)]
    var cpuid: [CPUIDEntry]
    var tscKHz: UInt32

    static func section(_ index: Int) -> String { "vcpu.\(index)" }

    /// Reads the state of a paused vCPU. KVM_GET_MP_STATE comes first: it makes the local
    /// APIC accept pending INIT/SIPI events, which changes what the other calls return.
    static func capture(_ vcpu: KVMVCPU, hasIRQChip: Bool, msrIndices: [UInt32],
                        xsave: KVMVCPU.XSAVELayout?) throws(SnapshotError) -> VCPUState {
        let part = "vCPU \(vcpu.id)"
        return try kvm(part) {
            let mp = hasIRQChip ? try vcpu.mpState() : nil
            let regs = try vcpu.registers()
            let sregs = try vcpu.specialRegisters()
            let fp: FloatingPoint = try xsave.map { .xsave(try vcpu.xsave($0)) } ?? .fpu(try vcpu.fpu())
            let xcrs = xsave != nil ? try vcpu.xcrs() : nil
            let dregs = try vcpu.debugRegisters()
            let lapic = hasIRQChip ? try vcpu.lapic() : nil
            let msrs = try vcpu.readableMSRs(msrIndices)
            let events = try vcpu.events()
            return VCPUState(apicID: vcpu.id, mpState: mp, lapic: lapic, registers: regs, specialRegisters: sregs,
                             floatingPoint: fp, xcrs: xcrs, debugRegisters: dregs, events: events, msrs: msrs,
                             cpuid: try vcpu.cpuid(), tscKHz: (try? vcpu.tscKHz()) ?? 0)
        }
    }

    /// Puts the state into a new vCPU whose CPUID is already `cpuid`, in the order KVM
    /// needs: registers, special registers (the APIC base among them) before the local
    /// APIC; MSRs (the TSC first) before the LAPIC and IA32_TSC_DEADLINE after it, since
    /// KVM_SET_LAPIC resets the APIC timer; the MP state before the LAPIC; the events
    /// last, after the registers they refer to. `advance` moves the TSC (and a pending
    /// TSC deadline) forward by that many nanoseconds of guest time.
    func apply(to vcpu: KVMVCPU, advance nanoseconds: UInt64, xsave: KVMVCPU.XSAVELayout?) throws(SnapshotError) {
        guard vcpu.id == apicID else { throw .mismatch("vCPU \(vcpu.id) gets the state of vCPU \(apicID)") }
        let ticks = nanoseconds == 0 ? 0 : nanoseconds.multipliedFullWidth(by: UInt64(tscKHz)).low / 1_000_000
        let adjusted = msrs.map { m -> (index: UInt32, value: UInt64) in
            guard ticks > 0, m.index == Self.msrTSC || (m.index == Self.msrTSCDeadline && m.value != 0) else { return m }
            return (m.index, m.value &+ ticks)
        }
        try Self.kvm("vCPU \(apicID)") {
            try vcpu.setRegisters(registers)
            try vcpu.setSpecialRegisters(specialRegisters)
            switch floatingPoint {
            case .xsave(let bytes):
                guard let xsave else { throw SnapshotError.mismatch("the snapshot has XSAVE state; this KVM has no XSAVE") }
                try vcpu.setXSAVE(bytes, xsave)
            case .fpu(let fpu): try vcpu.setFPU(fpu)
            }
            if let xcrs { try vcpu.setXCRs(xcrs) }
            try vcpu.setDebugRegisters(debugRegisters)
            try vcpu.setMSRs(adjusted.filter { $0.index != Self.msrTSCDeadline })
            if let mpState { try vcpu.setMPState(mpState) }
            if let lapic { try vcpu.setLAPIC(lapic) }
            try vcpu.setMSRs(adjusted.filter { $0.index == Self.msrTSCDeadline })
            var e = events
            // Also the NMI pending flag and the SIPI vector, which KVM sets only when asked.
            e.flags |= VCPUEvents.alsoNMIPendingAndSIPI
            try vcpu.setEvents(e)
        }
    }

    private static func kvm<T>(_ part: String, _ body: () throws -> T) throws(SnapshotError) -> T {
        do { return try body() } catch let error as SnapshotError { throw error } catch { throw .kvm(part: part, "\(error)") }
    }

    // MARK: - Section

    func section(index: Int) -> SnapshotSection {
        var e = SnapshotEncoder()
        e.u32(apicID)
        e.bool(mpState != nil); e.u32(mpState?.rawValue ?? 0)
        e.bool(lapic != nil); e.raw(lapic?.stateBytes ?? [UInt8](repeating: 0, count: LAPICState.stateSize))
        e.raw(registers.stateBytes)
        e.raw(specialRegisters.stateBytes)
        switch floatingPoint {
        case .xsave(let bytes): e.u8(1); e.data(bytes)
        case .fpu(let fpu): e.u8(2); e.data(fpu.stateBytes)
        }
        e.bool(xcrs != nil); e.raw(xcrs?.stateBytes ?? [UInt8](repeating: 0, count: XCRs.stateSize))
        e.raw(debugRegisters.stateBytes)
        e.raw(events.stateBytes)
        e.count(msrs.count)
        for m in msrs { e.u32(m.index); e.u64(m.value) }
        e.count(cpuid.count)
        for c in cpuid { for v in [c.function, c.index, c.flags, c.eax, c.ebx, c.ecx, c.edx] { e.u32(v) } }
        e.u32(tscKHz)
        return SnapshotSection(name: Self.section(index), version: Self.version, payload: e.bytes)
    }

    static let maxMSRs = 4096
    static let maxCPUIDEntries = 1024
    static let maxXSAVE = 1 << 20

    init(_ section: SnapshotSection) throws(SnapshotError) {
        var d = try section.decoder(supporting: [Self.version])
        apicID = try d.u32()
        let hasMP = try d.bool(), mp = try d.u32()
        if hasMP {
            guard let state = MPState(rawValue: mp) else { throw d.malformed("MP state \(mp)") }
            mpState = state
        } else {
            mpState = nil
        }
        let hasLAPIC = try d.bool()
        let lapicBytes = try d.raw(LAPICState.stateSize, "LAPIC")
        lapic = hasLAPIC ? LAPICState(stateBytes: lapicBytes) : nil
        func plain<T: KVMPlainState>(_ type: T.Type, _ what: String) throws(SnapshotError) -> T {
            let bytes = try d.raw(T.stateSize, what)
            guard let value = T(stateBytes: bytes) else { throw d.malformed(what) }
            return value
        }
        registers = try plain(Registers.self, "registers")
        specialRegisters = try plain(SpecialRegisters.self, "special registers")
        switch try d.u8() {
        case 1:
            let bytes = try d.data(maxLength: Self.maxXSAVE, "XSAVE area")
            guard bytes.count >= 4096 else { throw d.malformed("an XSAVE area of \(bytes.count) bytes") }
            floatingPoint = .xsave(bytes)
        case 2:
            let bytes = try d.data(maxLength: FPUState.stateSize, "FPU state")
            guard let fpu = FPUState(stateBytes: bytes) else { throw d.malformed("FPU state of \(bytes.count) bytes") }
            floatingPoint = .fpu(fpu)
        case let kind:
            throw d.malformed("floating-point state of kind \(kind)")
        }
        let hasXCRs = try d.bool()
        let x = try plain(XCRs.self, "XCRs")
        xcrs = hasXCRs ? x : nil
        debugRegisters = try plain(DebugRegisters.self, "debug registers")
        events = try plain(VCPUEvents.self, "events")
        let nMSRs = try d.count(max: Self.maxMSRs, elementSize: 12, "MSRs")
        var msrs: [(index: UInt32, value: UInt64)] = []
        for _ in 0 ..< nMSRs { msrs.append((try d.u32(), try d.u64())) }
        self.msrs = msrs
        let nCPUID = try d.count(max: Self.maxCPUIDEntries, elementSize: 28, "CPUID entries")
        var cpuid: [CPUIDEntry] = []
        for _ in 0 ..< nCPUID {
            cpuid.append(CPUIDEntry(function: try d.u32(), index: try d.u32(), flags: try d.u32(),
                                    eax: try d.u32(), ebx: try d.u32(), ecx: try d.u32(), edx: try d.u32()))
        }
        self.cpuid = cpuid
        tscKHz = try d.u32()
        try d.finish()
    }

    init(apicID: UInt32, mpState: MPState?, lapic: LAPICState?, registers: Registers, specialRegisters: SpecialRegisters,
         floatingPoint: FloatingPoint, xcrs: XCRs?, debugRegisters: DebugRegisters, events: VCPUEvents,
         msrs: [(index: UInt32, value: UInt64)], cpuid: [CPUIDEntry], tscKHz: UInt32) {
        self.apicID = apicID; self.mpState = mpState; self.lapic = lapic; self.registers = registers
        self.specialRegisters = specialRegisters; self.floatingPoint = floatingPoint; self.xcrs = xcrs
        self.debugRegisters = debugRegisters; self.events = events; self.msrs = msrs; self.cpuid = cpuid; self.tscKHz = tscKHz
    }
}
