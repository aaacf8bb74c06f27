import GuestMemory
import KVM
import Testing

@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason))
struct KVMHandleTests {
    @Test func systemHandleReportsVersionCapabilitiesCPUIDAndMSRs() throws {
        let kvm = try KVMSystem()
        #expect(try kvm.apiVersion() == 12)
        let caps = kvm.capabilities()
        #expect(caps.contains { $0.0 == .userMemory })
        #expect(caps.contains { $0.0 == .immediateExit })
        #expect(Capability.irqchip.name == "IRQCHIP" && Capability(9999).name == "CAP_9999")
        let cpuid = try kvm.supportedCPUID()
        #expect(cpuid.leaf(0) != nil && cpuid.leaf(1) != nil)
        #expect(try kvm.msrIndexList().contains(0x10))  // IA32_TIME_STAMP_COUNTER
        #expect(try kvm.vcpuMmapSize() >= 4096)
    }

    @Test func badDevicePathNamesTheOperation() {
        #expect {
            try KVMSystem(path: "/nonexistent/kvm")
        } throws: { error in
            "\(error)" == "open(/nonexistent/kvm) failed: No such file or directory"
        }
    }

    @Test func vmErrorsNameTheIoctl() throws {
        let vm = try KVMSystem().createVM()
        #expect {
            // Unaligned guest address: KVM refuses with EINVAL.
            try vm.setMemoryRegion(slot: 0, guestAddress: 0x123, size: 0x1000, hostAddress: 0)
        } throws: { error in
            "\(error)" == "KVM_SET_USER_MEMORY_REGION failed: Invalid argument"
        }
    }

    /// The clock vmm-bench splits a restore with: it counts the time of KVM's ioctls
    /// (other tests' too, so only a lower bound is checked), and a failing ioctl made
    /// through it still reports its own errno.
    @Test func ioctlClockCountsKVMsTimeAndKeepsErrno() throws {
        IoctlClock.start()
        defer { IoctlClock.stop() }
        let vm = try KVMSystem().createVM()
        #expect(IoctlClock.spent.kvm > 0)
        #expect {
            try vm.setMemoryRegion(slot: 0, guestAddress: 0x123, size: 0x1000, hostAddress: 0)
        } throws: { error in
            "\(error)" == "KVM_SET_USER_MEMORY_REGION failed: Invalid argument"
        }
    }

    @Test func batchRegistersAndResetState() throws {
        let vm = try KVMSystem().createVM()
        try vm.createIRQChip()
        let vcpu = try vm.createVCPU(id: 0)
        try vcpu.resetToPowerOnState(isBootstrap: true, cpuSignature: 0x806F8, hasIRQChip: true, xsave: vcpu.xsaveLayout)
        let reset = try vcpu.registers([.rip, .rdx, .cr0, .segmentSelector(.cs), .segmentBase(.cs), .rflags, .apicBase])
        #expect(reset == [0xFFF0, 0x806F8, 0x6000_0010, 0xF000, 0xFFFF_0000, 0x2, 0xFEE0_0900])
        #expect(try vcpu.mpState() == .runnable)
        #expect(try vcpu.debugRegisters().dr7 == 0x400)
        // FCW only: this host's KVM (PVM) does not round-trip MXCSR through KVM_SET_FPU.
        #expect(try vcpu.fpu().fcw == 0x37F)

        try vcpu.setRegisters([(.rax, 1), (.r15, 2), (.rip, 0x1000), (.cr3, 0x5000), (.gdtBase, 0x500), (.gdtLimit, 0x27)])
        #expect(try vcpu.registers([.rax, .r15, .rip, .cr3, .gdtBase, .gdtLimit]) == [1, 2, 0x1000, 0x5000, 0x500, 0x27])

        let ap = try vm.createVCPU(id: 1)
        try ap.resetToPowerOnState(isBootstrap: false, cpuSignature: 0x806F8, hasIRQChip: true, xsave: ap.xsaveLayout)
        #expect(try ap.mpState() == .uninitialized)
        #expect(try ap.registers([.apicBase]) == [0xFEE0_0800])
    }

    /// A vCPU KVM_CREATE_VCPU has just made is already in the state
    /// `resetToPowerOnState` puts it in, in every part a boot keeps (BootEntry.apply sets
    /// the general registers, CS-SS, TR, the GDT, CR0, CR4 and EFER itself): Machine's
    /// first image load relies on it and skips those ioctls. Compared on a BSP and an AP,
    /// with the split irqchip (the default) and KVM's.
    @Test(arguments: [false, true])
    func aCreatedVCPUIsInThePowerOnState(kernelIRQChip: Bool) throws {
        let vm = try KVMSystem().createVM()
        if kernelIRQChip { try vm.createIRQChip() } else { try vm.enableSplitIRQChip(ioapicPins: 24) }
        func seg(_ s: Segment) -> [UInt64] {
            [UInt64(s.selector), s.base, UInt64(s.limit), UInt64(s.type), UInt64(s.present), UInt64(s.s), UInt64(s.dpl)]
        }
        func kept(_ v: KVMVCPU) throws -> [[UInt64]] {
            let s = try v.specialRegisters(), f = try v.fpu(), d = try v.debugRegisters(), e = try v.events()
            return [
                [s.idt.base, UInt64(s.idt.limit)], seg(s.ldt), [s.cr2, s.cr3, s.cr8, s.apic_base],
                [s.interrupt_bitmap.0, s.interrupt_bitmap.1, s.interrupt_bitmap.2, s.interrupt_bitmap.3],
                [UInt64(f.fcw), UInt64(f.fsw), UInt64(f.ftwx), UInt64(f.last_opcode), f.last_ip, f.last_dp],
                [d.db.0, d.db.1, d.db.2, d.db.3, d.dr6, d.dr7],
                [UInt64(e.exception.injected), UInt64(e.exception.pending), UInt64(e.interrupt.injected),
                 UInt64(e.interrupt.shadow), UInt64(e.nmi.injected), UInt64(e.nmi.pending), UInt64(e.nmi.masked)],
                [UInt64(try v.mpState().rawValue)],
            ]
        }
        for (id, bootstrap) in [(UInt32(0), true), (1, false)] {
            let created = try vm.createVCPU(id: id * 2), reset = try vm.createVCPU(id: id * 2 + 1)
            try reset.resetToPowerOnState(isBootstrap: bootstrap, cpuSignature: 0x806F8, hasIRQChip: true, xsave: reset.xsaveLayout)
            var asCreated = try kept(created), afterReset = try kept(reset)
            // The APIC ID is the vCPU's own and the BSP flag follows vCPU 0.
            let bspFlag: UInt64 = 1 << 8
            asCreated[2][3] &= ~bspFlag; afterReset[2][3] &= ~bspFlag
            #expect(asCreated == afterReset, "vCPU \(id * 2) as created vs reset")
            #expect(try created.registers([.apicBase]) == [KVMVCPU.defaultAPICBase | (bootstrap ? bspFlag : 0)])
            if let layout = created.xsaveLayout {
                func mxcsr(_ v: KVMVCPU) throws -> UInt32 {
                    let area = try v.xsave(layout)
                    return (0 ..< 4).reduce(0) { $0 | UInt32(area[24 + $1]) << (8 * UInt32($1)) }
                }
                #expect(try mxcsr(created) == 0x1F80 && mxcsr(reset) == 0x1F80, "MXCSR")
            }
        }
    }

    /// A reset puts MXCSR back to 0x1F80 where the guest had changed it, also on a KVM
    /// that drops MXCSR in KVM_SET_FPU (this host's): a rebooted guest starts with the
    /// power-on value, as on hardware.
    @Test func aResetRestoresMXCSR() throws {
        let vm = try KVMSystem().createVM()
        try vm.createIRQChip()
        let vcpu = try vm.createVCPU(id: 0)
        let layout = try #require(vcpu.xsaveLayout, "this KVM has no KVM_CAP_XSAVE")
        func mxcsr() throws -> UInt32 {
            let area = try vcpu.xsave(layout)
            return (0 ..< 4).reduce(0) { $0 | UInt32(area[24 + $1]) << (8 * UInt32($1)) }
        }
        var area = try vcpu.xsave(layout)
        area[24] = 0xA0; area[25] = 0x1F   // 0x1FA0: the precision-exception flag set
        area[512] |= 2
        try vcpu.setXSAVE(area, layout)
        #expect(try mxcsr() == 0x1FA0)
        try vcpu.resetToPowerOnState(isBootstrap: true, cpuSignature: 0x806F8, hasIRQChip: true, xsave: layout)
        #expect(try mxcsr() == 0x1F80)
        #expect(try vcpu.fpu().fcw == 0x37F)
    }

    /// MXCSR set through KVM_SET_XSAVE reads back through KVM_GET_XSAVE (the emulation
    /// assist's ldmxcsr/stmxcsr rely on it). KVM_SET_FPU is only reported: this host's
    /// KVM (PVM) drops MXCSR there and KVM_GET_FPU reads it as 0, hardware KVM does not.
    @Test func mxcsrRoundTripsThroughTheXSAVEArea() throws {
        let vm = try KVMSystem().createVM()
        let vcpu = try vm.createVCPU(id: 0)
        let layout = try #require(vcpu.xsaveLayout, "this KVM has no KVM_CAP_XSAVE")
        var area = try vcpu.xsave(layout)
        #expect(area.count == layout.size)
        func mxcsr(_ a: [UInt8]) -> UInt32 { (0 ..< 4).reduce(0) { $0 | UInt32(a[24 + $1]) << (8 * UInt32($1)) } }
        for (i, b) in [UInt8(0xA0), 0x1F, 0, 0].enumerated() { area[24 + i] = b }
        area[512] |= 2   // XSTATE_BV: SSE, so KVM takes MXCSR from the buffer
        try vcpu.setXSAVE(area, layout)
        #expect(mxcsr(try vcpu.xsave(layout)) == 0x1FA0)
        var fpu = try vcpu.fpu()
        fpu.mxcsr = 0x1F40
        try vcpu.setFPU(fpu)
        print("KVM_SET_FPU(mxcsr 0x1f40): KVM_GET_FPU reads 0x\(String(try vcpu.fpu().mxcsr, radix: 16)), the XSAVE area 0x\(String(mxcsr(try vcpu.xsave(layout)), radix: 16))")
    }

    @Test func msrsCPUIDAndEventsRoundTrip() throws {
        let kvm = try KVMSystem()
        let vm = try kvm.createVM()
        try vm.createIRQChip()
        let vcpu = try vm.createVCPU(id: 0)
        try vcpu.setCPUID(kvm.supportedCPUID())
        #expect(try vcpu.cpuid().leaf(0) != nil)
        try vcpu.setMSRs([(index: 0x174, value: 0x10)])  // IA32_SYSENTER_CS
        #expect(try vcpu.msrs([0x174]) == [0x10])
        #expect(throws: KVMError.self) { try vcpu.msrs([0xDEAD_BEEF]) }
        try vcpu.injectException(vector: 6)
        #expect(try vcpu.events().exception.injected == 1)
        #expect(try vcpu.events().exception.nr == 6)
        _ = try vcpu.xcrs()
        _ = try vcpu.lapic()
    }

    @Test func statisticsAreParsedWithNames() throws {
        let vm = try KVMSystem().createVM()
        let vcpu = try vm.createVCPU(id: 0)
        let vmStats = try vm.openStatistics().read()
        #expect(vmStats.contains { $0.name == "remote_tlb_flush" })
        let vcpuStats = try vcpu.openStatistics().read()
        let exits = try #require(vcpuStats.first { $0.name == "exits" })
        #expect(exits.kind == .cumulative && exits.unit == .none)
        #expect(vcpuStats.contains { $0.kind == .logHistogram || $0.kind == .linearHistogram })
    }

    @Test func interruptsAndDirtyLogging() throws {
        let vm = try KVMSystem().createVM()
        try vm.createIRQChip()
        try vm.createPIT()
        _ = try vm.createVCPU(id: 0)
        try vm.setIRQLine(4, level: true)
        try vm.setIRQLine(4, level: false)
        _ = try vm.signalMSI(addressLow: 0xFEE0_0000, addressHigh: 0, data: 0x30)
        let segment = try MemorySegment(name: "dirty", guestBase: GuestAddress(0), size: 0x10000)
        try vm.setMemoryRegion(slot: 0, guestAddress: 0, size: segment.size, hostAddress: segment.hostAddress,
                               flags: [.logDirtyPages])
        #expect(try vm.dirtyLog(slot: 0, pages: 16) == [0])  // nothing written by the guest yet
        try vm.removeMemoryRegion(slot: 0)
        #expect(throws: KVMError.self) { try vm.dirtyLog(slot: 0, pages: 16) }
    }
}
