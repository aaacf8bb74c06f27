import Boot
import KVM
import Testing
@testable import VMM

/// The assist on real KVM: `Guests/assist.S` checks each instruction from inside. On a
/// host that emulates CPL 0 they are finished by the assist (the counts prove it); on
/// hardware KVM they run natively and the same guest must pass.
@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct EmulationAssistTests {
    static func count(_ machine: Machine, _ name: String) -> UInt64 {
        machine.statistics().assisted.first { $0.name == name }?.count ?? 0
    }

    @Test func everyAssistedInstructionBehavesAsOnTheCPU() throws {
        let (reason, out, machine) = try runGuest("assist")
        let lines = out.split(separator: "\n")
        #expect(!lines.contains { $0.hasPrefix("FAIL") }, "\(out)")
        for name in ["int3", "int80", "int3-ist", "cx16", "popcnt", "clac", "rdtscp", "fwait", "verw", "lsl", "xgetbv", "mxcsr", "syscall"] {
            #expect(lines.contains("ok \(name)") || lines.contains("skip \(name)"), "no result for \(name) in:\n\(out)")
        }
        #expect(reason == .debugExit(value: 0), "\(reason)")
        guard let host = machine.emulationAssist?.host else { return }  // hardware KVM: all native
        if host.refusesInstructions {
            #expect(Self.count(machine, "int3") == 2 && Self.count(machine, "int_n") == 1)
            #expect(Self.count(machine, "cmpxchg16b") >= 3 && Self.count(machine, "verw") == 2)
            #expect(Self.count(machine, "lsl") == 5, "lsl \(Self.count(machine, "lsl"))")
            if lines.contains("ok popcnt") { #expect(Self.count(machine, "popcnt") == 2) }
            // Three loads (one of a reserved bit, which became the #GP) and two stores.
            #expect(Self.count(machine, "ldmxcsr") == 3 && Self.count(machine, "stmxcsr") == 2,
                    "ldmxcsr \(Self.count(machine, "ldmxcsr")), stmxcsr \(Self.count(machine, "stmxcsr"))")
        }
        if host.syscallBroken {
            // Four repaired syscalls; the user's jmp to LSTAR and the write to the hole are
            // #PFs the guest's handler got unchanged (its first instruction stepped over).
            #expect(Self.count(machine, "syscall_repair") == 4)
            #expect(Self.count(machine, "page_fault_passed") == 2)
            #expect(machine.emulationAssist?.syscallRepair?.plantedSite != nil)
        }
    }

    @Test func withTheAssistOffARefusedInstructionStopsTheVM() throws {
        let (reason, out, machine) = try runGuest("assist") { _ in }
        guard machine.emulationAssist?.host.refusesInstructions == true else { return }
        #expect(reason == .debugExit(value: 0) && out.contains("ok int3"))
        var config = MachineConfig()
        config.memoryMiB = 32
        config.kernel = try TestGuests.image("assist")
        config.debugExit = true
        config.emulationAssist = .off
        let off = try Machine(config: config)
        #expect(off.emulationAssist == nil)
        guard case .internalError(_, let detail) = try off.run() else { Issue.record("expected an internal error"); return }
        #expect(detail.contains("emulation failed"))
    }

    @Test func emptyIDTInt3StillEndsWithItsStatus() throws {
        // KVM delivers the #BP the assist hands it: no gate → #GP → #DF → triple fault, as
        // on hardware KVM. With the assist off this host reports an internal error.
        let (reason, out, _) = try runGuest("int3")
        #expect(out == "int3\n")
        #expect(reason == .tripleFault(vcpu: 0) || reason.exitStatus == ExitStatus.internalError, "\(reason)")
    }

    /// The same guest in a vmmd worker: every call a finisher makes (ldmxcsr's
    /// KVM_GET_XSAVE2/KVM_SET_XSAVE among them) is in the sandbox's table, so the guest
    /// ends with its own status, not the worker with SIGSYS.
    @Test func theAssistGuestPassesInsideAWorkersSandbox() throws {
        let d = try DaemonFixture()
        let body = #"{"name":"assist","kernel":"\#(try TestGuests.path("assist"))","memory_mib":32,"debug_exit":true,"#
            + #""emulation_assist":"auto"}"#
        let created = d.api("POST", "/v1/vms", json: body)
        #expect(created.status == 201, "\(created.body)")
        #expect(d.eventually(30) { d.vm("assist")?["state"] as? String != "running" })
        let exit = d.vm("assist")?["last_exit"] as? [String: Any]
        let console = d.api("GET", "/v1/vms/assist/console").body
        #expect(exit?["kind"] as? String == "debug_exit" && (exit?["message"] as? String ?? "").contains("wrote 0x0 "),
                "\(exit ?? [:])\n\(console)")
        #expect(console.contains("ok mxcsr") || console.contains("skip mxcsr"), "\(console)")
    }

    @Test func theProbeIsCachedAndConsistent() throws {
        let kvm = try KVMSystem()
        let first = HostEmulation.probe(kvm)
        #expect(HostEmulation.probe(kvm) == first)
        #expect(first.probeError == nil, "\(first)")
        // Where vmcall hangs, the guest is not offered the PV features that use it.
        if first.hypercallsHang {
            var config = MachineConfig()
            config.kernel = try TestGuests.image("hello")
            let machine = try Machine(config: config)
            let leaves = try machine.vcpus[0].vcpu.cpuid()
            let features = leaves.first { $0.function == 0x4000_0101 }
            #expect(features.map { $0.eax & CPUIDBuilder.hypercallFeatureBits } == 0)
        }
    }
}

/// A debugger's hook: it sees every refused int3 before the guest does.
final class RecordingClaimant: BreakpointClaimant, @unchecked Sendable {
    // @unchecked: written on the vCPU thread, read after the machine stopped.
    var claimed: [(vcpu: UInt32, rip: UInt64)] = []
    var onClaim: (() -> Void)?
    func claims(vcpu: UInt32, rip: UInt64) -> Bool {
        claimed.append((vcpu, rip))
        onClaim?()
        return true
    }
}

@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct BreakpointClaimantTests {
    @Test func aClaimantTakesTheInt3BeforeTheGuest() throws {
        let claimant = RecordingClaimant()
        let (reason, out, machine) = try runGuest("assist") { machine in
            claimant.onClaim = { [weak machine] in machine?.stop(.killed) }
            machine.emulationAssist?.setBreakpointClaimant(claimant)
        }
        guard machine.emulationAssist?.host.refusesInstructions == true else { return }  // native int3: no exit
        #expect(reason == .killed)
        #expect(claimant.claimed.count == 1 && claimant.claimed.first?.vcpu == 0)
        #expect(!out.contains("ok int3"), "the guest's own handler must not have run")
        #expect(EmulationAssistTests.count(machine, "int3") == 0)
    }
}
