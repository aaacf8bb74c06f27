import KVM

/// A machine's statistics: KVM's own (binary stats fd) and the VMM's counters.
public struct MachineStatistics: Sendable {
    public struct VCPU: Sendable {
        public let id: UInt32
        public let state: VCPURunner.State
        /// KVM's per-vCPU statistics (`KVM_GET_STATS_FD` on the vCPU).
        public let kvm: [Statistic]
        /// Exits the VMM handled, by kind.
        public let exits: [(kind: String, count: UInt64)]
    }

    /// KVM's per-VM statistics.
    public let kvm: [Statistic]
    public let vcpus: [VCPU]
    public let unclaimedPortReads: UInt64
    public let unclaimedPortWrites: UInt64
    public let unclaimedMMIOReads: UInt64
    public let unclaimedMMIOWrites: UInt64
    public let reboots: UInt64
    /// Calls per hypercall (empty when hypercalls are off).
    public let hypercalls: [(name: String, count: UInt64)]
    /// Instructions and repairs the emulation assist finished, by kind (empty when it is
    /// off or had nothing to do).
    public let assisted: [(name: String, count: UInt64)]
    /// Each virtio device's counters (requests, bytes, errors, notifications, ...), by
    /// its layout name (blk0, rng0).
    public var devices: [(name: String, counters: [(name: String, value: UInt64)])] = []
}

extension Machine {
    /// Reads every statistic now. KVM statistics that cannot be read come back empty.
    public func statistics() -> MachineStatistics {
        MachineStatistics(
            kvm: (try? vmStatistics?.read()) ?? [],
            vcpus: vcpus.enumerated().map { i, runner in
                MachineStatistics.VCPU(
                    id: runner.id, state: runner.state,
                    kvm: (try? vcpuStatistics[i]?.read()) ?? [],
                    exits: runner.counters.snapshot.map { ($0.kind.name, $0.count) })
            },
            unclaimedPortReads: portIO.unclaimedReads.load(ordering: .relaxed),
            unclaimedPortWrites: portIO.unclaimedWrites.load(ordering: .relaxed),
            unclaimedMMIOReads: mmio.unclaimedReads.load(ordering: .relaxed),
            unclaimedMMIOWrites: mmio.unclaimedWrites.load(ordering: .relaxed),
            reboots: reboots.load(ordering: .relaxed),
            hypercalls: hypercalls?.callCounts ?? [],
            assisted: emulationAssist?.counters.snapshot ?? [],
            devices: virtioDevices.map { ($0.slot.name, $0.transport.device.counters) })
    }
}
