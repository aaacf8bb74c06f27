import KVM
import VMM
import WorkerProtocol

extension HostFacts {
    /// Runs the VMM's probe VMs here (`HostEmulation.probe`, `GuestDebugSupport.probe`)
    /// and asks KVM_GET_SUPPORTED_CPUID, and returns the answers for the workers; nil
    /// when any of them could not finish, so that each worker asks for itself as before.
    ///
    /// `cache`, when given, holds an earlier vmmd's answers and CPUID for this boot, kernel
    /// and KVM modules (`HostEmulationCache`): where `vmcall` hangs, the emulation probe
    /// keeps a core busy for its whole 200 ms wait, and the guest-debug probe VM costs
    /// ~4 ms of CPU, at every daemon start. `fromCache` says which answers came from it.
    static func probe(_ kvm: KVMSystem, cache: HostEmulationCache?)
        -> (facts: HostFacts, fromCache: (emulation: Bool, debug: Bool))? {
        let known = cache?.load()
        // Every worker takes this answer: a vmcall counts as hanging only after 200 ms (not
        // the 10 ms a worker's own probe allows), so that a probe thread descheduled while
        // system VMs start does not hide the PV features from every guest.
        let emulation = known?.emulation ?? HostEmulation.probe(kvm, hangTimeoutMS: 200)
        let debug = known?.guestDebug ?? GuestDebugSupport.probe(kvm)
        let storedCPUID = known.map(\.supportedCPUID).flatMap { $0.isEmpty ? nil : $0 }
        guard emulation.probeError == nil, debug.probeError == nil,
              let cpuid = storedCPUID ?? (try? kvm.supportedCPUID()) else { return nil }
        return (HostFacts(emulation: emulation.bits, debug: debug.bits, supportedCPUID: cpuid.map(\.words)),
                (known != nil, known?.guestDebug != nil))
    }

    /// Stores these facts in `cache` for the rest of the boot: at once, or, when the probe
    /// found that a vmcall hangs, only if a second probe agrees (`confirmingHang`: not for
    /// an answer that came from the cache). A "hangs" from a probe thread descheduled for
    /// 200 ms would otherwise hide the PV features from every guest until the host
    /// reboots (a daemon restart used to mend it). Run after the facts are handed out:
    /// the second probe waits its 200 ms once per boot.
    func remember(in cache: HostEmulationCache, kvm: KVMSystem, confirmingHang: Bool) {
        let emulation = HostEmulation(bits: self.emulation)
        guard !confirmingHang || !emulation.hypercallsHang
            || HostEmulation.probeAgain(kvm, hangTimeoutMS: 200).bits == self.emulation else { return }
        cache.store(.init(emulation: emulation, supportedCPUID: supportedCPUID.compactMap(CPUIDEntry.init(words:)),
                          guestDebug: GuestDebugSupport(bits: debug)))
    }

    /// vmmd's own probe cache, for the default device only (another device may be
    /// another KVM, which the host key does not name).
    static func daemonCache(device: String) -> HostEmulationCache? {
        device == "/dev/kvm" ? HostEmulationCache.standard(name: "vmmd-host-emulation") : nil
    }
}
