import Testing
import WorkerProtocol

/// The setup message a worker builds its machine from: what the daemon sends is what
/// the worker reads, the host's probe answers included, and a cut-off message is refused.
struct WorkerSetupTests {
    static func setup(facts: HostFacts?) -> WorkerSetup {
        var s = WorkerSetup(name: "vm", memoryMiB: 64, cpus: 2, commandLine: "console=ttyS0", debugExit: true,
                            hypercalls: false, rebootOnReset: true, hasInitrd: true,
                            memory: [.init(name: "ram", guestBase: 0, size: 64 << 20)], sandboxUID: 65534, sandboxGID: 65534,
                            cpuTemplate: "emulation-safe", emulationAssist: "auto", disks: [.init(readOnly: true, serial: "s")])
        s.hostFacts = facts
        return s
    }

    @Test func hostFactsTravelWithTheSetup() throws {
        var facts = HostFacts()
        facts.refusesInstructions = true; facts.hypercallsHang = true; facts.singleStep = true; facts.softwareBreakpointExits = true
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
