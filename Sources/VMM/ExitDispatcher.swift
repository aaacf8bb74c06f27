import Devices
import GuestMemory
import Hypercalls
import KVM

/// Turns each vCPU exit into device calls or a machine stop. This is the exit path the
/// benchmark measures: a port write is one table lookup and one device call.
final class ExitDispatcher: Sendable {
    let portIO: PortIOBus
    let mmio: MMIOBus
    /// Reaches the machine for stops (built before the machine itself exists).
    let machine: PlatformEventRelay
    let memory: GuestMemory
    /// The hypercall table, nil when hypercalls are off (the doorbell is then an
    /// ordinary unclaimed port).
    let hypercalls: HypercallRegistry?
    /// The doorbell port, or -1 (no port) when hypercalls are off: one compare per exit.
    let doorbell: Int
    /// Reaches the machine's debugger, for `KVM_EXIT_DEBUG` only.
    let debug = DebugExitRelay()

    /// Finishes refused instructions (entered only from emulation failures).
    let assist: EmulationAssist?

    init(portIO: PortIOBus, mmio: MMIOBus, machine: PlatformEventRelay, memory: GuestMemory,
         hypercalls: HypercallRegistry?, assist: EmulationAssist? = nil) {
        self.assist = assist
        self.portIO = portIO
        self.mmio = mmio
        self.machine = machine
        self.memory = memory
        self.hypercalls = hypercalls
        self.doorbell = hypercalls == nil ? -1 : Int(HypercallABI.doorbellPort)
    }

    // KVM_SYSTEM_EVENT_* (api.rst, "KVM_EXIT_SYSTEM_EVENT").
    static let systemEventShutdown: UInt32 = 1, systemEventReset: UInt32 = 2, systemEventCrash: UInt32 = 3

    @inline(__always)
    func handle(_ exit: VCPUExit, on runner: VCPURunner) {
        let vcpu = runner.vcpu
        switch exit {
        case .io(let io):
            runner.counters.bump(.io)
            let bus = portIO
            if Int(io.port) == doorbell, io.direction == .out, let hypercalls {
                return hypercall(hypercalls, on: runner)
            }
            if io.direction == .out {
                for i in 0 ..< io.count { bus.write(port: io.port, size: io.size, value: vcpu.ioValue(io, at: i)) }
            } else {
                for i in 0 ..< io.count { vcpu.setIOValue(io, at: i, bus.read(port: io.port, size: io.size)) }
            }
        case .mmio(let access):
            runner.counters.bump(.mmio)
            if access.isWrite {
                mmio.write(address: access.address, size: access.size, value: access.value)
            } else {
                vcpu.completeMMIORead(mmio.read(address: access.address, size: access.size))
            }
        case .halt:
            runner.counters.bump(.halt)
            // Only reached without an in-kernel LAPIC: no interrupt can ever wake this vCPU.
            machine.stop(.halt(vcpu: runner.id))
        case .shutdown:
            runner.counters.bump(.shutdown)
            machine.stop(.tripleFault(vcpu: runner.id))
        case .systemEvent(let type, let data):
            runner.counters.bump(.systemEvent)
            switch type {
            case Self.systemEventShutdown: machine.stop(.powerOff)
            case Self.systemEventReset: machine.stop(.reset)
            default: machine.stop(.internalError(vcpu: runner.id, detail: "system event \(type) (data 0x\(String(data, radix: 16)))"))
            }
        case .debug(let event):
            runner.counters.bump(.debug)
            debug.target?.handleDebugExit(event, on: runner)  // no debugger: carry on
        case .internalError(let suberror, let data):
            runner.counters.bump(.internalError)
            if suberror == Self.emulationFailure, let assist {
                return assisted(assist.handleEmulationFailure(on: vcpu), on: runner)
            }
            machine.stop(.internalError(vcpu: runner.id, detail: Self.describeInternalError(suberror, data, vcpu)))
        case .failEntry(let reason, let cpu):
            runner.counters.bump(.failEntry)
            machine.stop(.internalError(vcpu: runner.id, detail: "VM entry failed on host CPU \(cpu), hardware reason 0x\(String(reason, radix: 16))"))
        case .exception(let vector, let code):
            runner.counters.bump(.other)
            machine.stop(.internalError(vcpu: runner.id, detail: "unhandled exception \(vector) (error code \(code))"))
        case .irqWindowOpen, .interrupted:
            runner.counters.bump(.other)
        case .unknown(let reason, let hardware):
            runner.counters.bump(.other)
            machine.stop(.internalError(vcpu: runner.id, detail: "unexpected exit reason \(reason) (hardware 0x\(String(hardware, radix: 16)))"))
        }
    }

    /// KVM_INTERNAL_ERROR_EMULATION.
    static let emulationFailure: UInt32 = 1

    private func assisted(_ outcome: EmulationAssist.Outcome, on runner: VCPURunner) {
        switch outcome {
        case .resume:
            // An instruction the VMM finished is a step too (KVM never saw it run).
            debug.target?.finishedInstruction(on: runner)
        case .claimed: break
        case .stop(let detail): machine.stop(.internalError(vcpu: runner.id, detail: detail))
        }
    }

    func failed(_ error: Error, on runner: VCPURunner) {
        machine.stop(.vmmError("vCPU \(runner.id): \(error)"))
    }

    static func describeInternalError(_ suberror: UInt32, _ payload: InternalErrorData, _ vcpu: KVMVCPU) -> String {
        let data = payload.words
        let what: String
        switch suberror {
        case 1: what = "instruction emulation failed"
        case 2: what = "exception while delivering an exception"
        case 3: what = "event delivery failed"
        case 4: what = "unexpected exit reason"
        default: what = "suberror \(suberror)"
        }
        let rip = (try? vcpu.registers([.rip, .segmentBase(.cs)])).map { " at rip 0x\(String($0[0], radix: 16))" } ?? ""
        let extra = data.isEmpty ? "" : " [" + data.map { "0x" + String($0, radix: 16) }.joined(separator: " ") + "]"
        return what + rip + extra
    }
}
