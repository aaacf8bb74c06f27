import KVM
import Testing
import VMM
import WorkerProtocol

/// The setup message a worker builds its machine from: what the daemon sends is what
/// the worker reads, the host's probe answers and supported CPUID included, and a
/// cut-off message is refused.
struct WorkerSetupTests {
    static func setup(facts: HostFacts?) -> WorkerSetup {
        var s = WorkerSetup(name: "vm", memoryMiB: 64, cpus: 2, commandLine: "console=ttyS0", debugExit: true,
                            hypercalls: false, rebootOnReset: true, hasInitrd: true,
                            memory: [.init(name: "ram", guestBase: 0, size: 64 << 20)], sandboxUID: 65534, sandboxGID: 65534,
                            cpuTemplate: "emulation-safe", emulationAssist: "auto", disks: [.init(readOnly: true, serial: "s")])
        s.hostFacts = facts
        s.logLevel = "warning"
        return s
    }

    @Test func hostFactsTravelWithTheSetup() throws {
        let facts = HostFacts(emulation: HostEmulation(refusesInstructions: true, hypercallsHang: true).bits,
                              debug: 0b100001,
                              supportedCPUID: [[0, 0, 0, 0x1F, 0x756E_6547, 0x6C65_746E, 0x4965_6E69], [7, 0, 1, 0, 0x29C6_FBF, 0, 0]])
        for sent in [Self.setup(facts: facts), Self.setup(facts: nil)] {
            let bytes = DaemonMessage.setup(sent).encoded()
            guard case .setup(let received) = try DaemonMessage.decode(bytes) else {
                Issue.record("not decoded as a setup")
                continue
            }
            #expect(received == sent)
            // Every prefix is a truncated message, refused rather than read short.
            for cut in stride(from: 1, to: bytes.count, by: 7) {
                #expect(throws: (any Error).self) { try DaemonMessage.decode(Array(bytes.prefix(cut))) }
            }
        }
    }
}

/// The probes' answers survive their bit-set form exactly.
@Test func probeAnswersRoundTripThroughTheirBits() {
    for bits in UInt32(0) ..< 8 { #expect(HostEmulation(bits: bits).bits == bits) }
    for bits in UInt32(0) ..< 64 { #expect(GuestDebugSupport(bits: bits).bits == bits) }
    let complete = HostEmulation(refusesInstructions: true, syscallBroken: true, hypercallsHang: false)
    #expect(HostEmulation(bits: complete.bits) == complete)
    let entry = CPUIDEntry(function: 7, index: 1, flags: 1, eax: 2, ebx: 3, ecx: 4, edx: 5)
    #expect(CPUIDEntry(words: entry.words) == entry && CPUIDEntry(words: [1, 2]) == nil)
}

/// A worker given the daemon's KVM_GET_SUPPORTED_CPUID answer uses it instead of asking.
@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason))
struct AdoptedCPUIDTests {
    @Test func anAdoptedAnswerIsTheAnswer() throws {
        let kvm = try KVMSystem()
        let marker = [CPUIDEntry(function: 0, eax: 0x1F, ebx: 1, ecx: 2, edx: 3)]
        kvm.adoptSupportedCPUID(marker)
        #expect(try kvm.supportedCPUID() == marker)
        let fresh = try KVMSystem()
        let asked = try fresh.supportedCPUID()
        fresh.adoptSupportedCPUID(marker)   // too late: the first answer stays
        #expect(try fresh.supportedCPUID() == asked && asked.count > 1)
    }
}
