import Devices
import Hypercalls
import KVM
import Logging

extension Machine {
    /// CPUID 0x40000000 (signature, highest leaf) and 0x40000001 (enabled bit, ABI
    /// version, doorbell port), per docs/hypercalls.md.
    static func hypercallLeaves(enabled: Bool) -> [CPUIDEntry] {
        let sig = HypercallABI.signature
        return [
            CPUIDEntry(function: HypercallABI.signatureLeaf, eax: HypercallABI.infoLeaf,
                       ebx: sig.ebx, ecx: sig.ecx, edx: sig.edx),
            CPUIDEntry(function: HypercallABI.infoLeaf, eax: enabled ? HypercallABI.enabledBit : 0,
                       ebx: HypercallABI.version, ecx: UInt32(HypercallABI.doorbellPort), edx: 0),
        ]
    }
}

/// The built-in calls' view of the machine.
final class HypercallHost: HypercallEnvironment, @unchecked Sendable {
    // @unchecked: `machine` is weak and only read; Machine is thread-safe.
    weak var machine: Machine?
    let vmName: String
    let output: any SerialOutput
    let logger: Logger

    init(machine: Machine) {
        self.machine = machine
        vmName = machine.config.name
        output = machine.config.serialOutput
        var logger = machine.config.logger
        logger[metadataKey: "vm"] = "\(machine.config.name)"
        self.logger = logger
    }

    func consoleWrite(_ bytes: [UInt8]) { for b in bytes { output.write(b) } }
    var vmGeneration: (count: UInt64, instanceID: [UInt8]) { machine?.generation ?? (0, [UInt8](repeating: 0, count: 16)) }
    func requestPowerOff() { machine?.stop(.powerOff) }
    func requestReset() { machine?.stop(.reset) }

    func guestLog(level: Int, message: String, vcpu: UInt32) {
        let levels: [Logger.Level] = [.error, .warning, .info, .debug, .trace]
        logger.log(level: levels[min(level, 4)], "\(message)", metadata: ["vcpu": "\(vcpu)", "source": "guest"])
    }
}

extension ExitDispatcher {
    /// The doorbell: call number in RAX, arguments in RBX, RCX, RSI, RDI, result in RAX;
    /// nothing else changes. Registers come from the sync-regs area, so a call costs no
    /// ioctl beyond KVM_RUN (an unknown call's #UD costs one KVM_SET_VCPU_EVENTS).
    @inline(__always)
    func hypercall(_ registry: HypercallRegistry, on runner: VCPURunner) {
        let vcpu = runner.vcpu
        var regs = vcpu.syncedRegisters
        let mask: UInt64 = vcpu.syncedLongMode ? .max : 0xFFFF_FFFF
        let request = HypercallRequest(number: regs.rax & mask, rbx: regs.rbx & mask, rcx: regs.rcx & mask,
                                       rsi: regs.rsi & mask, rdi: regs.rdi & mask,
                                       ring: vcpu.syncedCPL, vcpu: runner.id)
        switch registry.dispatch(request, memory: memory) {
        case .result(let value):
            regs.rax = (regs.rax & ~mask) | (UInt64(bitPattern: value) & mask)
            vcpu.setSyncedRegisters(regs)
        case .undefinedOpcode:
            do { try vcpu.injectException(vector: 6) } catch { failed(error, on: runner) }
        }
    }
}
