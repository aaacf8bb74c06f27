import Boot
import Foundation
import GuestMemory
import Testing

/// Reads little-endian integers from a table in tests.
extension Array where Element == UInt8 {
    func le<T: FixedWidthInteger>(_ offset: Int, _ type: T.Type = T.self) -> T {
        (0 ..< MemoryLayout<T>.size).reduce(T(0)) { $0 | T(self[offset + $1]) << (8 * $1) }
    }
}

@Suite struct ACPITableTests {
    let tables: ACPITables
    init() throws { tables = try ACPITables(platform: ACPITables.Platform(apicIDs: [0, 1, 2])) }

    func table(_ signature: String) throws -> (address: UInt64, bytes: [UInt8]) {
        let t = try #require(tables.placed.first { $0.signature == signature })
        return (t.address, t.bytes)
    }

    @Test func everyTableHasItsLengthAndAZeroChecksum() throws {
        #expect(tables.placed.map(\.signature) == ["RSDP", "XSDT", "FACP", "APIC", "DSDT"])
        for t in tables.placed.dropFirst() {
            #expect(String(decoding: t.bytes[0 ..< 4], as: UTF8.self) == t.signature)
            #expect(Int(t.bytes.le(4, UInt32.self)) == t.bytes.count, "\(t.signature) length")
            #expect(ACPIChecksum.sum(t.bytes) == 0, "\(t.signature) checksum")
            #expect(t.address % 16 == 0)
        }
        // Tables do not overlap and stay inside the BIOS area.
        for (a, b) in zip(tables.placed, tables.placed.dropFirst()) {
            #expect(a.address + UInt64(a.bytes.count) <= b.address)
        }
        let last = try #require(tables.placed.last)
        #expect(last.address + UInt64(last.bytes.count) <= 0x100000)
    }

    @Test func rootPointerHasBothChecksumsAndPointsAtTheXSDT() throws {
        let (address, rsdp) = try table("RSDP")
        #expect(address == 0xE0000)
        #expect(rsdp.count == 36)
        #expect(Array(rsdp[0 ..< 8]) == Array("RSD PTR ".utf8))
        #expect(ACPIChecksum.sum(rsdp[0 ..< 20]) == 0)
        #expect(ACPIChecksum.sum(rsdp) == 0)
        #expect(rsdp[15] == 2)
        #expect(rsdp.le(20, UInt32.self) == 36)
        #expect(rsdp.le(24, UInt64.self) == (try table("XSDT")).address)
    }

    @Test func xsdtListsTheFADTAndMADT() throws {
        let xsdt = try table("XSDT").bytes
        #expect(xsdt.count == 36 + 16)
        #expect(xsdt.le(36, UInt64.self) == (try table("FACP")).address)
        #expect(xsdt.le(44, UInt64.self) == (try table("APIC")).address)
    }

    @Test func fadtIsHardwareReducedWithSleepAndResetRegisters() throws {
        let fadt = try table("FACP").bytes
        let dsdt = try table("DSDT").address
        #expect(fadt.count == 276 && fadt[8] == 6 && fadt[131] == 5)
        #expect(fadt.le(40, UInt32.self) == UInt32(dsdt))
        #expect(fadt.le(140, UInt64.self) == dsdt)
        let flags = fadt.le(112, UInt32.self)
        #expect(flags & (1 << 20) != 0, "HW_REDUCED_ACPI")
        #expect(flags & (1 << 10) != 0, "RESET_REG_SUP")
        #expect(fadt.le(46, UInt16.self) == 0, "no SCI")
        // GAS: SystemIO, 8 bits, byte access, port.
        #expect(Array(fadt[116 ..< 120]) == [1, 8, 0, 1] && fadt.le(120, UInt64.self) == 0x602)
        #expect(fadt[128] == 1)
        #expect(Array(fadt[244 ..< 248]) == [1, 8, 0, 1] && fadt.le(248, UInt64.self) == 0x600)
        #expect(Array(fadt[256 ..< 260]) == [1, 8, 0, 1] && fadt.le(260, UInt64.self) == 0x601)
        #expect(fadt.le(109, UInt16.self) & 0x2 != 0, "8042 present")
    }

    @Test func madtHasALocalAPICPerCPUTheIOAPICAndTheOverrides() throws {
        let madt = try table("APIC").bytes
        #expect(madt.le(36, UInt32.self) == 0xFEE0_0000 && madt.le(40, UInt32.self) == 1)
        var entries: [(type: UInt8, bytes: ArraySlice<UInt8>)] = []
        var at = 44
        while at < madt.count {
            let length = Int(madt[at + 1])
            try #require(length >= 2 && at + length <= madt.count)
            entries.append((madt[at], madt[at ..< at + length]))
            at += length
        }
        #expect(at == madt.count)
        let lapics = entries.filter { $0.type == 0 }.map { Array($0.bytes) }
        #expect(lapics.map { $0[3] } == [0, 1, 2])           // APIC IDs
        #expect(lapics.map { $0[2] } == [0, 1, 2])           // processor UIDs
        #expect(lapics.allSatisfy { $0.count == 8 && $0.le(4, UInt32.self) == 1 })
        let ioapic = try #require(entries.first { $0.type == 1 }.map { Array($0.bytes) })
        #expect(ioapic.count == 12 && ioapic[2] == 3 && ioapic.le(4, UInt32.self) == 0xFEC0_0000 && ioapic.le(8, UInt32.self) == 0)
        let iso = try #require(entries.first { $0.type == 2 }.map { Array($0.bytes) })
        #expect(iso.count == 10 && iso[2] == 0 && iso[3] == 0 && iso.le(4, UInt32.self) == 2)
        let nmi = try #require(entries.first { $0.type == 4 }.map { Array($0.bytes) })
        #expect(nmi == [4, 6, 0xFF, 0, 0, 1])
    }

    @Test func tablesLandInGuestMemoryWhereAScanFindsThem() throws {
        let memory = try GuestMemory.create(ramSize: 4 << 20)
        let rsdp = try tables.write(into: memory)
        // Linux's and ACPICA's scan: 16-byte steps through 0xE0000-0xFFFFF.
        let area = try memory.read(at: GuestAddress(0xE0000), count: 0x20000)
        let found = stride(from: 0, to: area.count - 8, by: 16).first { Array(area[$0 ..< $0 + 8]) == Array("RSD PTR ".utf8) }
        #expect(found.map { 0xE0000 + UInt64($0) } == rsdp.raw)
        for t in tables.placed {
            #expect(try memory.read(at: GuestAddress(t.address), count: t.bytes.count) == t.bytes)
        }
    }

    @Test func tooManyDevicesDoNotFitTheBIOSArea() {
        var platform = ACPITables.Platform(apicIDs: [0])
        platform.devices = (0 ..< 4000).map { ACPIDevice.virtioMMIO(index: $0 % 256, base: 0xD000_0000, gsi: 5) }
        #expect((try? ACPITables(platform: platform)) == nil)
    }
}

@Suite struct AMLEncoderTests {
    @Test func integersUseTheShortestEncoding() throws {
        #expect(try AML.integer(0).encoded() == [0x00])
        #expect(try AML.integer(1).encoded() == [0x01])
        #expect(try AML.integer(5).encoded() == [0x0A, 5])
        #expect(try AML.integer(0x3F8).encoded() == [0x0B, 0xF8, 0x03])
        #expect(try AML.integer(0x1_0000).encoded() == [0x0C, 0, 0, 1, 0])
        #expect(try AML.integer(0x1_0000_0000).encoded() == [0x0E, 0, 0, 0, 0, 1, 0, 0, 0])
        #expect(try AML.integer(.max).encoded() == [0xFF])
    }

    @Test func packageLengthsCountTheirOwnBytes() {
        #expect(AML.withPackageLength([UInt8](repeating: 0, count: 62)).prefix(1) == [63])
        // 63 body bytes + 1 would be 64: too long for one byte, so two bytes, total 65.
        #expect(AML.withPackageLength([UInt8](repeating: 0, count: 63)).prefix(2) == [0x41, 0x04])
        let big = AML.withPackageLength([UInt8](repeating: 0, count: 4094))   // total 4096: three bytes
        #expect(big.prefix(3) == [0x80 | 0x01, 0x00, 0x01] && big.count == 4097)
    }

    @Test func namesAndEisaIDs() throws {
        #expect(try AMLName("\\_SB").encoded == [0x5C, 0x5F, 0x53, 0x42, 0x5F])
        #expect(try AMLName("_SB.COM1").encoded == [0x2E] + Array("_SB_COM1".utf8))
        #expect(try AMLName("\\A.B.C").encoded == [0x5C, 0x2F, 3] + Array("A___B___C___".utf8))
        for bad in ["", "TOOLONG", "1ABC", "a", "A..B", "\\"] {
            #expect(throws: ACPIError.self, "\(bad)") { try AMLName(bad) }
        }
        #expect(try AML.eisaID("PNP0501") == .integer(0x0105_D041))
        for bad in ["PNP050", "pnp0501", "PNP05G1"] {
            #expect(throws: ACPIError.self, "\(bad)") { try AML.eisaID(bad) }
        }
        #expect(throws: ACPIError.self) { try AML.string("caf\u{E9}").encoded() }
    }

    @Test func resourceDescriptors() throws {
        #expect(try ResourceDescriptor.ioPort(base: 0x3F8, length: 8).encoded() == [0x47, 1, 0xF8, 3, 0xF8, 3, 1, 8])
        #expect(try ResourceDescriptor.irq(4).encoded() == [0x22, 0x10, 0x00])
        #expect(throws: ACPIError.self) { try ResourceDescriptor.irq(16).encoded() }
        #expect(try ResourceDescriptor.memory32Fixed(base: 0xD000_0000, length: 0x200).encoded()
                == [0x86, 9, 0, 1, 0, 0, 0, 0xD0, 0, 2, 0, 0])
        #expect(try ResourceDescriptor.interrupt(gsi: 5, levelTriggered: false, activeLow: false).encoded()
                == [0x89, 6, 0, 0x03, 1, 5, 0, 0, 0])
        #expect(try ResourceDescriptor.template([.irq(4)]) == .buffer([0x22, 0x10, 0, 0x79, 0]))
    }
}

/// Disassembles the generated tables with ACPICA's `iasl` (Debian's acpica-tools, which
/// scripts/install-deps.sh installs): an independent parser for the AML and the layouts.
@Suite(.enabled(if: IASL.path != nil, "iasl (acpica-tools) is not installed; scripts/install-deps.sh installs it"))
struct ACPIDisassemblyTests {
    func disassemble(_ signature: String, platform: ACPITables.Platform) throws -> String {
        let tables = try ACPITables(platform: platform)
        let bytes = try #require(tables.placed.first { $0.signature == signature }).bytes
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("acpi-\(getpid())-\(signature)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("\(signature.lowercased()).dat")
        try Data(bytes).write(to: input)
        let run = runProcess(try #require(IASL.path), ["-d", input.path])
        #expect(run.status == 0, "\(run.output)")
        return try String(contentsOf: dir.appendingPathComponent("\(signature.lowercased()).dsl"), encoding: .utf8)
    }

    @Test func dsdtDisassemblesToCOM1AndS5() throws {
        var platform = ACPITables.Platform(apicIDs: [0, 1])
        platform.devices.append(.virtioMMIO(index: 0, base: 0xD000_0000, gsi: 5))
        let dsl = try disassemble("DSDT", platform: platform)
        for needle in ["Scope (\\_SB)", "Device (COM1)", "Name (_HID, EisaId (\"PNP0501\")", "Name (_UID, One)",
                       "IO (Decode16,", "0x03F8,", "IRQNoFlags ()", "{4}", "Name (\\_S5, Package (0x04)",
                       "Device (VR00)", "Name (_HID, \"LNRO0005\")", "Memory32Fixed (ReadWrite,", "0xD0000000",
                       "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )"] {
            #expect(dsl.contains(needle), "\(needle) missing from:\n\(dsl)")
        }
        #expect(!dsl.contains("Incorrect"), "\(dsl)")
    }

    @Test func fadtAndMADTDisassembleWithCorrectChecksums() throws {
        let fadt = try disassemble("FACP", platform: ACPITables.Platform(apicIDs: [0, 1]))
        for needle in ["Hardware Reduced (V5) : 1", "Reset Register Supported (V2) : 1",
                       "Sleep Control Register : [Generic Address Structure]", "Address : 0000000000000600",
                       "Sleep Status Register : [Generic Address Structure]", "Address : 0000000000000601",
                       "Reset Register : [Generic Address Structure]", "Address : 0000000000000602",
                       "Value to cause reset : 01", "DSDT Address : 00000000000E01F0"] {
            #expect(fadt.contains(needle), "\(needle) missing from:\n\(fadt)")
        }
        let madt = try disassemble("APIC", platform: ACPITables.Platform(apicIDs: [0, 1]))
        for needle in ["[Processor Local APIC]", "Local Apic ID : 01", "[I/O APIC]", "Address : FEC00000",
                       "[Interrupt Source Override]", "Interrupt : 00000002", "[Local APIC NMI]"] {
            #expect(madt.contains(needle), "\(needle) missing from:\n\(madt)")
        }
        for dsl in [fadt, madt] { #expect(!dsl.contains("Incorrect"), "\(dsl)") }
    }
}

enum IASL {
    static let path: String? = ["/usr/bin/iasl", "/usr/local/bin/iasl"].first { FileManager.default.isExecutableFile(atPath: $0) }
}
