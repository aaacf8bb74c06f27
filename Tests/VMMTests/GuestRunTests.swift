import Boot
import Devices
import Foundation
import GuestMemory
import Testing
import VMM

/// Runs `guest` on a Machine and returns why it stopped and what it printed.
func runGuest(_ guest: String, memoryMiB: UInt64 = 32, cpus: Int = 1, debugExit: Bool = true,
              reboot: Bool = true, irqchip: Bool = true, cmdline: String = "",
              configure: (Machine) throws -> Void = { _ in },
              config adjust: (inout MachineConfig) throws -> Void = { _ in }) throws -> (StopReason, String, Machine) {
    var config = MachineConfig()
    config.memoryMiB = memoryMiB
    config.cpus = cpus
    config.kernel = try TestGuests.image(guest)
    config.debugExit = debugExit
    config.rebootOnReset = reboot
    config.inKernelIRQChip = irqchip
    config.commandLine = cmdline
    let output = BufferOutput()
    config.serialOutput = output
    try adjust(&config)
    let machine = try Machine(config: config)
    try configure(machine)
    let reason = try machine.run()
    return (reason, output.text, machine)
}

@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct GuestRunTests {
    @Test func serialHelloThenPowerOff() throws {
        let (reason, out, machine) = try runGuest("hello", cmdline: "a b=c")
        #expect(reason == .powerOff && reason.exitStatus == 0)
        #expect(out == "Hello from a swift-vmm guest!\ncmdline: a b=c\n")
        #expect(machine.serial.transmitted.load(ordering: .relaxed) == UInt64(out.utf8.count))
    }

    @Test func debugExitStatus() throws {
        let (reason, out, _) = try runGuest("exit")
        #expect(reason == .debugExit(value: 0x21) && reason.exitStatus == 67)
        #expect(out == "exit guest\n")
        let (reason64, out64, _) = try runGuest("exit64")
        #expect(reason64.exitStatus == 85 && out64 == "exit64 guest\n")
    }

    @Test func debugExitIsOffByDefault() throws {
        // Without the port the write is unclaimed and the guest falls through to `hlt`.
        let (reason, _, machine) = try runGuest("exit", debugExit: false)
        #expect(reason == .halt(vcpu: 0))
        #expect(machine.portIO.unclaimedWrites.load(ordering: .relaxed) >= 1)
    }

    @Test func tripleFaultEndsTheMachine() throws {
        let (reason, out, _) = try runGuest("triple")
        #expect(reason == .tripleFault(vcpu: 0) && reason.exitStatus == ExitStatus.tripleFault)
        #expect(out == "triple\n")
    }

    @Test func int3WithEmptyIDTEndsCleanly() throws {
        // This host's KVM cannot deliver the exception it emulates: an internal error.
        // Hardware KVM triple-faults instead. Either way the machine stops, never hangs.
        let (reason, out, _) = try runGuest("int3")
        #expect(out == "int3\n")
        switch reason {
        case .internalError(let vcpu, let detail):
            #expect(vcpu == 0 && detail.contains("rip 0x"))
            #expect(reason.exitStatus == ExitStatus.internalError)
        case .tripleFault:
            break
        default:
            Issue.record("unexpected stop: \(reason)")
        }
    }

    @Test func resetThroughI8042Reboots() throws {
        let (reason, out, machine) = try runGuest("reset")
        #expect(out == "resetting\nrebooted\n")
        #expect(reason == .powerOff)
        #expect(machine.reboots.load(ordering: .relaxed) == 1)
    }

    @Test func resetWithoutRebootStops() throws {
        let (reason, out, _) = try runGuest("reset", reboot: false)
        #expect(reason == .reset && reason.exitStatus == ExitStatus.reset)
        #expect(out == "resetting\n")
    }

    @Test func haltWithInterruptsOffIsDetected() throws {
        let (reason, out, _) = try runGuest("halt")
        #expect(reason == .halt(vcpu: 0) && out == "halt\n")
        let (userspace, _, _) = try runGuest("halt", irqchip: false)
        #expect(userspace == .halt(vcpu: 0))
    }

    @Test func twoVCPUsBothRun() throws {
        let (reason, out, machine) = try runGuest("smp", cpus: 2)
        #expect(reason == .powerOff)
        #expect(out == "A\nsmp: 2 cpus\n")
        let stats = machine.statistics()
        let ioExits = stats.vcpus.map { v in v.exits.first { $0.kind == "io" }?.count ?? 0 }
        #expect(ioExits.count == 2 && ioExits.allSatisfy { $0 > 0 })
    }

    @Test func hostileGuestCannotHurtTheVMM() throws {
        let (reason, out, machine) = try runGuest("hostile", debugExit: false)
        #expect(reason == .powerOff)
        #expect(out.replacingOccurrences(of: "\0", with: "").hasSuffix("survived\n"))
        let stats = machine.statistics()
        #expect(stats.unclaimedPortReads > 60000 && stats.unclaimedPortWrites > 60000)
        #expect(stats.unclaimedMMIOReads > 1000 && stats.unclaimedMMIOWrites > 1000)
    }

    @Test func pauseResumeAndPerVCPUSuspend() throws {
        var config = MachineConfig()
        config.memoryMiB = 32
        config.kernel = try TestGuests.image("bench")
        config.debugExit = true
        let machine = try Machine(config: config)
        try machine.memory.writeInteger(UInt32(50_000_000), at: GuestAddress(0x9000))
        try machine.start()
        func writes() -> UInt64 { machine.postCode.writes.load(ordering: .relaxed) }
        func waitForProgress() -> Bool {
            let start = writes()
            for _ in 0 ..< 400 where writes() == start { usleep(5000) }
            return writes() > start
        }
        #expect(waitForProgress())
        machine.pause()
        #expect(machine.vcpus[0].state == .paused)
        let frozen = writes()
        usleep(100_000)
        #expect(writes() == frozen)
        machine.resume()
        #expect(waitForProgress())
        try machine.suspendVCPU(0)
        #expect(machine.vcpus[0].state == .paused)
        try machine.resumeVCPU(0)
        #expect(waitForProgress())
        machine.kill()
        #expect(try machine.waitForStop() == .killed)
        #expect(machine.vcpus[0].state == .stopped)
        let stats = machine.statistics()
        #expect(stats.kvm.contains { $0.name == "remote_tlb_flush" })
        // "exits" rather than "io_exits": this host's KVM (PVM) does not count the latter.
        let handled = stats.vcpus[0].exits.first { $0.kind == "io" }?.count ?? 0
        #expect(handled > 0)
        #expect(stats.vcpus[0].kvm.contains { $0.name == "exits" && $0.value >= handled })
    }

    @Test func resetAndRunAgainReusesTheMachine() throws {
        var config = MachineConfig()
        config.memoryMiB = 32
        config.kernel = try TestGuests.image("exit")
        config.debugExit = true
        let out = BufferOutput()
        config.serialOutput = out
        let machine = try Machine(config: config)
        #expect(try machine.run() == .debugExit(value: 0x21))
        #expect(throws: MachineError.self) { try machine.start(); try machine.reset() }
        machine.kill()
        _ = try machine.waitForStop()
        for _ in 0 ..< 3 {
            try machine.reset()
            #expect(try machine.run() == .debugExit(value: 0x21))
        }
        #expect(out.text.components(separatedBy: "exit guest\n").count - 1 >= 4)
        #expect(machine.vcpus[0].state == .stopped)
    }

    @Test func demoGuestRuns() throws {
        var config = MachineConfig()
        config.memoryMiB = 16
        config.kernel = Boot.DemoGuest.image()
        config.commandLine = "x=1"
        let out = BufferOutput()
        config.serialOutput = out
        #expect(try Machine(config: config).run() == .powerOff)
        #expect(out.text == Boot.DemoGuest.greeting + "command line: x=1\n")
    }

    @Test func badConfigIsRefused() {
        var config = MachineConfig()
        config.kernel = Boot.DemoGuest.image()
        config.cpus = 0
        #expect(throws: MachineError.self) { try Machine(config: config) }
        config.cpus = 1
        config.memoryMiB = 1
        #expect(throws: MachineError.self) { try Machine(config: config) }
        config.memoryMiB = 16
        config.kernel = [1, 2, 3]
        #expect(throws: (any Error).self) { try Machine(config: config) }
    }
}
