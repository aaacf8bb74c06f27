import Boot
import Devices
import Foundation
import GuestMemory
import Hypercalls
import KVM
import Synchronization
import Testing
import VMM

final class FakeEnvironment: HypercallEnvironment, @unchecked Sendable {
    let vmName = "fake"
    let console = Mutex<[UInt8]>([])
    let events = Mutex<[String]>([])
    func consoleWrite(_ bytes: [UInt8]) { console.withLock { $0 += bytes } }
    func requestPowerOff() { events.withLock { $0.append("poweroff") } }
    func requestReset() { events.withLock { $0.append("reset") } }
    func guestLog(level: Int, message: String, vcpu: UInt32) { events.withLock { $0.append("log \(level) \(message)") } }
}

@Suite struct HypercallRegistryTests {
    let memory: GuestMemory
    let registry = HypercallRegistry()
    let env = FakeEnvironment()

    init() throws {
        memory = try GuestMemory.create(ramSize: 4 << 20)
        try BuiltinHypercalls.register(into: registry, environment: env)
    }

    func call(_ n: HypercallNumber, _ args: [UInt64] = [], ring: Int = 0) -> HypercallOutcome {
        registry.dispatch(HypercallRequest(number: n.rawValue, arguments: args, ring: ring, vcpu: 0), memory: memory)
    }

    @Test func unknownNumbersAreUndefinedOpcodes() {
        #expect(registry.dispatch(HypercallRequest(number: 0x999, arguments: [], ring: 0, vcpu: 0), memory: memory) == .undefinedOpcode)
        #expect(registry.dispatch(HypercallRequest(number: .max, arguments: [], ring: 3, vcpu: 0), memory: memory) == .undefinedOpcode)
    }

    @Test func ringPolicyRefusesAndDoesNothing() {
        #expect(call(.powerOff, ring: 3) == .result(HypercallError.notPermitted.rawValue))
        #expect(call(.reset, ring: 1) == .result(HypercallError.notPermitted.rawValue))
        #expect(env.events.withLock { $0 }.isEmpty)
        #expect(call(.powerOff, ring: 0) == .result(0))
        #expect(env.events.withLock { $0 } == ["poweroff"])
        #expect(call(.abiInfo, ring: 3) == .result(0xFF_0001))
    }

    @Test func buffersAreCheckedAgainstGuestRAM() throws {
        try memory.write(Array("hi".utf8), at: GuestAddress(0x1000))
        #expect(call(.consoleWrite, [0x1000, 2], ring: 3) == .result(2))
        #expect(env.console.withLock { $0 } == Array("hi".utf8))
        let bad = HypercallOutcome.result(HypercallError.badAddress.rawValue)
        #expect(call(.consoleWrite, [(4 << 20) - 1, 2]) == bad)           // across the end of RAM
        #expect(call(.consoleWrite, [UInt64.max, 2]) == bad)              // wraps
        #expect(call(.consoleWrite, [UInt64.max - 1, UInt64.max]) == bad) // wraps from near the top
        #expect(call(.consoleWrite, [0xFEE0_0000, 4]) == bad)             // MMIO hole
        #expect(call(.consoleWrite, [0x1000, 1 << 20]) == .result(HypercallError.invalidArgument.rawValue))
        #expect(call(.time, [UInt64.max - 7, 16]) == bad)
        #expect(call(.vmName, [0x2000, 2]) == .result(HypercallError.bufferTooSmall.rawValue))
        #expect(call(.vmName, [0x2000, 64]) == .result(4))
        #expect(try memory.read(at: GuestAddress(0x2000), count: 4) == Array("fake".utf8))
        #expect(call(.log, [5, 0x1000, 2]) == .result(HypercallError.invalidArgument.rawValue))
        #expect(call(.log, [2, 0x1000, 2]) == .result(0))
        #expect(env.events.withLock { $0 } == ["log 2 hi"])
    }

    @Test func timeWritesRealtimeAndMonotonic() throws {
        #expect(call(.time, [0x3000, 16]) == .result(0))
        let realtime = try memory.readInteger(UInt64.self, at: GuestAddress(0x3000))
        let monotonic = try memory.readInteger(UInt64.self, at: GuestAddress(0x3008))
        #expect(realtime > 1_700_000_000 * 1_000_000_000 && monotonic > 0)
    }

    @Test func userCallsRegisterOnceWithARing() throws {
        try registry.register(0x1000, name: "echo", maximumRing: 3) { ctx in Int64(ctx.request.argument(0) + 1) }
        #expect(throws: HypercallRegistryError.numberTaken(0x1000)) {
            try registry.register(0x1000, name: "again") { _ in 0 }
        }
        #expect(throws: HypercallRegistryError.invalidRing(4)) {
            try registry.register(0x1001, name: "bad", maximumRing: 4) { _ in 0 }
        }
        #expect(registry.dispatch(HypercallRequest(number: 0x1000, arguments: [41], ring: 3, vcpu: 0), memory: memory) == .result(42))
        #expect(registry.callCounts.contains { $0.name == "echo" && $0.count == 1 })
        registry.seal()
        #expect(throws: HypercallRegistryError.sealed) { try registry.register(0x1002, name: "late") { _ in 0 } }
        #expect(registry.dispatch(HypercallRequest(number: 0x1000, arguments: [1], ring: 0, vcpu: 0), memory: memory) == .result(2))
    }

    @Test func kvmLeavesMoveUpAndOursTakeTheirPlace() {
        let kvm = [CPUIDEntry(function: 0x4000_0000, eax: 0x4000_0001, ebx: 0x4B4D_564B),
                   CPUIDEntry(function: 0x4000_0001, eax: 0x1234), CPUIDEntry(function: 1, eax: 0x806F8)]
        let own = [CPUIDEntry(function: 0x4000_0000, eax: 0x4000_0001)]
        let result = CPUIDBuilder.relocatingHypervisorLeaves(kvm, own: own)
        #expect(result.leaf(0x4000_0100)?.eax == 0x4000_0101)
        #expect(result.leaf(0x4000_0100)?.ebx == 0x4B4D_564B)
        #expect(result.leaf(0x4000_0101)?.eax == 0x1234)
        #expect(result.leaf(0x4000_0000) == own[0])
        #expect(result.leaf(1)?.eax == 0x806F8)
    }
}

@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct HypercallGuestTests {
    @Test func everyBuiltinFromRingZero() throws {
        var config = MachineConfig()
        config.memoryMiB = 32
        config.kernel = try TestGuests.image("hypercall")
        config.hypercalls = true
        config.name = "test-vm"
        let out = BufferOutput()
        config.serialOutput = out
        let machine = try Machine(config: config)
        #expect(try machine.run() == .powerOff)
        #expect(out.text == """
            sig=SwiftVMM kvm=KVMKVMKVM
            hc=00000001 ver=00000001 port=00000610
            abi=00FF0001
            via hypercall
            cw=0000000E
            time=00000000 nonzero
            name=test-vm
            log=00000000
            bad=FFFFFFFD FFFFFFFD FFFFFFFD FFFFFFFC FFFFFFFE
            UD

            """)
        let counts = machine.statistics().hypercalls
        #expect(counts.contains { $0.name == "console_write" && $0.count == 4 })
        #expect(counts.contains { $0.name == "power_off" && $0.count == 1 })
    }

    @Test func offByDefaultTheDoorbellIsInert() throws {
        var config = MachineConfig()
        config.memoryMiB = 32
        config.kernel = try TestGuests.image("hypercall")
        let out = BufferOutput()
        config.serialOutput = out
        let machine = try Machine(config: config)
        #expect(try machine.run() == .powerOff)
        #expect(out.text == "sig=SwiftVMM kvm=KVMKVMKVM\nhc=00000000 ver=00000001 port=00000610\ndoorbell inert\n")
        #expect(machine.hypercalls == nil)
        #expect(machine.portIO.unclaimedWrites.load(ordering: .relaxed) == 1)
    }

    @Test func ringThreeCannotPowerOffButMayAsk() throws {
        var config = MachineConfig()
        config.memoryMiB = 32
        config.kernel = try TestGuests.image("hypercall-ring3")
        config.hypercalls = true
        config.debugExit = true
        let out = BufferOutput()
        config.serialOutput = out
        let machine = try Machine(config: config)
        #expect(try machine.run() == .debugExit(value: 0))
        #expect(out.text == "ring3 power_off=FFFFFFFF abi=00FF0001\n")
    }

    @Test func vmmctlFlag() throws {
        let r = try VMMCtl.run(["run", "--kernel", TestGuests.path("hypercall"), "--hypercalls", "--name", "cli-vm", "--memory", "32"])
        #expect(r.status == 0 && r.stdout.contains("name=cli-vm"))
        #expect(r.all.contains("vm=cli-vm") && r.all.contains("hello from the guest log"))
    }
}
