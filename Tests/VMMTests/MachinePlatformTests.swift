import Boot
import Devices
import Foundation
import GuestMemory
import KVM
import Testing
import VMM

/// A PVH guest of a few raw instructions (assembled by hand), halting at the end.
func rawGuest(_ code: [UInt8]) -> [UInt8] {
    ELFWriter(loadAddress: 0x100000, code: code + [0xFA, 0xF4]).bytes()
}

@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct MachinePlatformTests {
    func machine(_ change: (inout MachineConfig) throws -> Void) throws -> Machine {
        var config = MachineConfig()
        config.memoryMiB = 16
        config.kernel = rawGuest([])
        try change(&config)
        return try Machine(config: config)
    }

    @Test func topologyGivesAPICIDsCPUIDAndMADTEntries() throws {
        let m = try machine {
            $0.cpus = 6
            $0.topology = try CPUTopology(sockets: 2, coresPerSocket: 3, threadsPerCore: 1)
        }
        let ids: [UInt32] = m.vcpus.map { $0.id }
        #expect(ids == [0, 1, 2, 4, 5, 6])
        for runner in m.vcpus {
            let leaf1 = try #require(try runner.vcpu.cpuid().leaf(1))
            #expect(leaf1.ebx >> 24 == runner.id)
            #expect((leaf1.ebx >> 16) & 0xFF == 4)       // 3 cores need 2 APIC ID bits
        }
        // The MADT in guest memory lists the same APIC IDs.
        var platform = ACPITables.Platform(apicIDs: ids)
        platform.legacyInterruptControllers = MachineConfig().irqchip == .kernel   // as the default irqchip has them
        let tables = try ACPITables(platform: platform)
        let madt = try #require(tables.placed.first { $0.signature == "APIC" })
        #expect(try m.memory.read(at: GuestAddress(madt.address), count: madt.bytes.count) == madt.bytes)
        let fourthAPICID: UInt8 = madt.bytes.le(44 + 3 * 8 + 3)
        #expect(fourthAPICID == 4)   // the fourth local APIC
    }

    /// The MADT describes the interrupt controllers the machine has: with the split
    /// irqchip only the IOAPIC (no PCAT_COMPAT, no IRQ 0 override for a PIT that is not
    /// there), with KVM's irqchip its PIC and PIT as well.
    @Test(arguments: [IRQChipMode.split, .kernel])
    func madtMatchesTheIRQChip(_ mode: IRQChipMode) throws {
        let m = try machine { $0.irqchip = mode }
        let tables = try ACPITables(platform: ACPITables.Platform(apicIDs: [0]))
        let at = try #require(tables.placed.first { $0.signature == "APIC" }).address
        let length: UInt32 = try m.memory.readInteger(at: GuestAddress(at + 4))
        let madt = try m.memory.read(at: GuestAddress(at), count: Int(length))
        let flags: UInt32 = madt.le(40)
        var entryTypes: [UInt8] = []
        var offset = 44
        while offset + 2 <= madt.count, madt[offset + 1] > 0 {
            entryTypes.append(madt[offset])
            offset += Int(madt[offset + 1])
        }
        #expect(flags == (mode == .kernel ? 1 : 0))
        #expect(entryTypes == (mode == .kernel ? [0, 1, 2, 4] : [0, 1, 4]))   // LAPIC, IOAPIC, [override], NMI
        #expect((m.ioapic != nil) == (mode == .split))
    }

    @Test func topologyMustMatchTheCPUCount() {
        #expect(throws: MachineError.self) {
            try machine { $0.cpus = 3; $0.topology = try CPUTopology(sockets: 1, coresPerSocket: 2, threadsPerCore: 1) }
        }
    }

    @Test func acpiTablesAreInMemoryAndInTheStartInfo() throws {
        let m = try machine { _ in }
        #expect(try m.memory.read(at: GuestAddress(0xE0000), count: 8) == Array("RSD PTR ".utf8))
        #expect(try m.memory.readInteger(UInt64.self, at: GuestAddress(BootLayout.bootInfo.raw + 32)) == 0xE0000)
        let off = try machine { $0.acpi = false }
        #expect(try off.memory.read(at: GuestAddress(0xE0000), count: 8) == [UInt8](repeating: 0, count: 8))
        #expect(try off.memory.readInteger(UInt64.self, at: GuestAddress(BootLayout.bootInfo.raw + 32)) == 0)
    }

    @Test(.timeLimit(.minutes(1))) func acpiResetRegisterRebootsOrStops() throws {
        // mov dx, 0x602 (the FADT's RESET_REG); mov al, 1 (RESET_VALUE); out dx, al
        let reset = rawGuest([0x66, 0xBA, 0x02, 0x06, 0xB0, 0x01, 0xEE])
        let stop = try machine { $0.kernel = reset; $0.rebootOnReset = false }
        let reason = try stop.run()
        #expect(reason == .reset && reason.exitStatus == ExitStatus.reset)

        // With rebooting on, the guest resets forever; its owner can still stop it.
        let again = try machine { $0.kernel = reset }
        try again.start()
        DispatchQueue.global().async {
            let deadline = Date().addingTimeInterval(10)
            while again.reboots.load(ordering: .relaxed) < 2, Date() < deadline { usleep(1000) }
            again.kill()
        }
        #expect(try again.waitForStop() == .killed)
        #expect(again.reboots.load(ordering: .relaxed) >= 2)
    }

    @Test func templateReadBackAndLinuxParameters() throws {
        let m = try machine { $0.cpuTemplate = .emulationSafe; $0.commandLine = "console=ttyS0" }
        // Whatever this KVM could not hide is reported, and cx16 always can be.
        let readback = try m.vcpus[0].vcpu.cpuid()
        #expect(m.featuresTemplateCouldNotHide == CPUTemplate.emulationSafe.featuresStillVisible(in: readback))
        #expect(!m.featuresTemplateCouldNotHide.contains(.cx16))
        #expect(try #require(readback.leaf(1)).ecx & (1 << 13) == 0)
        // Not a Linux kernel: the command line stays as given.
        #expect(m.commandLine == "console=ttyS0")
    }
}

@Suite struct LinuxDetectionTests {
    @Test func linuxKernelsAreRecognised() {
        #expect(BootImageFormat.isLinux(FakeBzImage().bytes()))
        #expect(!BootImageFormat.isLinux(ELFWriter(loadAddress: 0x100000, code: [0xF4]).bytes()))
        #expect(!BootImageFormat.isLinux([1, 2, 3]))
    }

    /// Issue 11 (c): a PVH vmlinux without CONFIG_XEN has no Xen guest-OS note, only
    /// notes owned by "Linux" (LINUX_ELFNOTE_BUILD_SALT, type 0x100).
    @Test func aVmlinuxIsRecognisedByItsLinuxNotes() {
        var vmlinux = ELFWriter(loadAddress: 0x100000, code: [0xF4])
        vmlinux.extraNotes = ELFWriter.note(owner: "Linux", type: 0x100, descriptor: [0, 0, 0, 0])
        #expect(BootImageFormat.isLinux(vmlinux.bytes()))
        var other = ELFWriter(loadAddress: 0x100000, code: [0xF4])
        other.extraNotes = ELFWriter.note(owner: "GNU", type: 3, descriptor: [1, 2, 3, 4])
        #expect(!BootImageFormat.isLinux(other.bytes()))
    }

    @Test func templateAddsItsLinuxParameterOnlyForKeptFeatures() {
        #expect(CPUTemplate.emulationSafe.linuxParameters(for: [.xsave, .avx]) == ["noxsave"])
        #expect(CPUTemplate.emulationSafe.linuxParameters(for: [.cx16]) == [])
        #expect(CPUTemplate.host.linuxParameters(for: [.xsave]) == [])
        // ERMS/FSRM (leaf 7) and SSSE3 (leaf 1), which PVM passes through: one clearcpuid
        // for all three (Linux takes a single clearcpuid=).
        #expect(CPUTemplate.emulationSafe.linuxParameters(for: [.xsave, .erms, .fsrm]) == ["noxsave", "clearcpuid=erms,fsrm,ssse3"])
        #expect(CPUTemplate.emulationSafe.linuxParameters(for: [.ssse3]) == ["clearcpuid=erms,fsrm,ssse3"])
    }
}

@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct FirmwareStateTests {
    @Test func everyVCPUStartsWithTheFirmwareMSRs() throws {
        var config = MachineConfig()
        config.memoryMiB = 16
        config.cpus = 2
        config.kernel = rawGuest([])
        let m = try Machine(config: config)
        for runner in m.vcpus {
            #expect(try runner.vcpu.msrs([FirmwareMSRs.miscEnable, FirmwareMSRs.mtrrDefaultType]) == [1, 0x806])
        }
    }
}
