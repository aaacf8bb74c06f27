import GuestMemory
import KVM

/// A throwaway VM for finding out what this host's KVM does (`HostEmulation`,
/// `GuestDebugSupport`): guest memory filled by `build`, each segment in a slot, and
/// one vCPU with KVM's supported CPUID. Gone with the value.
struct ProbeVM {
    let memory: GuestMemory
    let vm: KVMVM
    let vcpu: KVMVCPU

    init(kvm: KVMSystem, ramSize: UInt64 = 64 << 10, build: (GuestMemory) throws -> Void) throws {
        memory = try GuestMemory.create(ramSize: ramSize)
        try build(memory)
        vm = try kvm.createVM()
        for (slot, segment) in memory.segments.enumerated() {
            try vm.setMemoryRegion(slot: UInt32(slot), guestAddress: segment.guestBase.raw, size: segment.size,
                                   hostAddress: segment.hostAddress, flags: [])
        }
        vcpu = try vm.createVCPU(id: 0)
        try vcpu.setCPUID(try kvm.supportedCPUID())
    }
}
