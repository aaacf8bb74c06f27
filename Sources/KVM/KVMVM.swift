import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// The VM handle: the descriptor `KVM_CREATE_VM` returned ("VM ioctls", api.rst 4).
///
/// KVM binds a VM to the address space (mm) of the process that created it; using this
/// descriptor from another process fails with EIO, so a VM never crosses a process.
public final class KVMVM: @unchecked Sendable {
    // @unchecked: immutable fd; VM ioctls serialise inside KVM.
    let fd: OwnedFD
    /// The system handle this VM came from (kept alive for the VM's lifetime).
    public let system: KVMSystem

    init(fd: OwnedFD, system: KVMSystem) {
        self.fd = fd
        self.system = system
    }

    /// Flags for a memory slot (`kvm_userspace_memory_region.flags`).
    public struct MemoryFlags: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// `KVM_MEM_LOG_DIRTY_PAGES`: track writes for `dirtyLog(slot:)`.
        public static let logDirtyPages = MemoryFlags(rawValue: UInt32(KVM_MEM_LOG_DIRTY_PAGES))
        /// `KVM_MEM_READONLY`: guest writes exit to userspace as MMIO.
        public static let readOnly = MemoryFlags(rawValue: UInt32(KVM_MEM_READONLY))
    }

    /// `KVM_SET_USER_MEMORY_REGION`: maps `size` bytes of this process at `hostAddress`
    /// into guest physical memory at `guestAddress` in `slot`.
    public func setMemoryRegion(slot: UInt32, guestAddress: UInt64, size: UInt64,
                                hostAddress: UInt, flags: MemoryFlags = []) throws {
        var region = kvm_userspace_memory_region(
            slot: slot, flags: flags.rawValue, guest_phys_addr: guestAddress,
            memory_size: size, userspace_addr: UInt64(hostAddress))
        try ioctlValue(fd.raw, CKVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION")
    }

    /// Removes `slot` (`KVM_SET_USER_MEMORY_REGION` with size 0).
    public func removeMemoryRegion(slot: UInt32) throws {
        var region = kvm_userspace_memory_region(slot: slot, flags: 0, guest_phys_addr: 0,
                                                 memory_size: 0, userspace_addr: 0)
        try ioctlValue(fd.raw, CKVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION")
    }

    /// `KVM_GET_DIRTY_LOG`: one bit per page of `slot`, set for pages written since the last call.
    public func dirtyLog(slot: UInt32, pages: Int) throws -> [UInt64] {
        var bitmap = [UInt64](repeating: 0, count: (pages + 63) / 64)
        let rc = bitmap.withUnsafeMutableBytes { raw -> Int32 in
            var log = kvm_dirty_log()
            log.slot = slot
            // SAFETY: the bitmap holds one bit per page of the slot, rounded up to 64 bits.
            log.dirty_bitmap = raw.baseAddress
            return withUnsafeMutablePointer(to: &log) { ckvm_ioctl(fd.raw, CKVM_GET_DIRTY_LOG, $0) }
        }
        guard rc >= 0 else { throw KVMError.last("KVM_GET_DIRTY_LOG") }
        return bitmap
    }

    /// `KVM_SET_TSS_ADDR`: three pages of guest-physical space Intel VMX needs below 4 GiB.
    public func setTSSAddress(_ address: UInt32) throws {
        _ = try ioctlInt(fd.raw, CKVM_SET_TSS_ADDR, UInt(address), "KVM_SET_TSS_ADDR")
    }

    /// `KVM_SET_IDENTITY_MAP_ADDR`: one page for the real-mode identity page table (VMX).
    public func setIdentityMapAddress(_ address: UInt64) throws {
        var value = address
        try ioctlValue(fd.raw, CKVM_SET_IDENTITY_MAP_ADDR, &value, "KVM_SET_IDENTITY_MAP_ADDR")
    }

    /// `KVM_CREATE_IRQCHIP`: in-kernel PIC pair, IOAPIC and per-vCPU local APICs.
    public func createIRQChip() throws {
        _ = try ioctlInt(fd.raw, CKVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP")
    }

    /// `KVM_CREATE_PIT2`: in-kernel i8254 PIT on ports 0x40-0x43 (and 0x61 speaker gate).
    public func createPIT() throws {
        var config = kvm_pit_config()
        config.flags = UInt32(KVM_PIT_SPEAKER_DUMMY)
        try ioctlValue(fd.raw, CKVM_CREATE_PIT2, &config, "KVM_CREATE_PIT2")
    }

    /// `KVM_IRQ_LINE`: drives global system interrupt `gsi` to `level` (IOAPIC pin and,
    /// for GSIs 0-15, the matching PIC input).
    public func setIRQLine(_ gsi: UInt32, level: Bool) throws {
        var line = kvm_irq_level()
        line.irq = gsi
        line.level = level ? 1 : 0
        try ioctlValue(fd.raw, CKVM_IRQ_LINE, &line, "KVM_IRQ_LINE")
    }

    /// `KVM_SIGNAL_MSI`: injects a message-signalled interrupt. Returns false when the
    /// guest had masked or blocked it (the ioctl returns 0).
    @discardableResult
    public func signalMSI(addressLow: UInt32, addressHigh: UInt32, data: UInt32) throws -> Bool {
        var msi = kvm_msi()
        msi.address_lo = addressLow
        msi.address_hi = addressHigh
        msi.data = data
        // SAFETY: kvm_msi is a fixed-size struct, passed by pointer.
        let rc = withUnsafeMutablePointer(to: &msi) { ckvm_ioctl(fd.raw, CKVM_SIGNAL_MSI, $0) }
        guard rc >= 0 else { throw KVMError.last("KVM_SIGNAL_MSI") }
        return rc > 0
    }

    /// `KVM_CREATE_VCPU` with `id` (the initial APIC ID), and maps its `kvm_run` area.
    public func createVCPU(id: UInt32) throws -> KVMVCPU {
        let mmapSize = try system.vcpuMmapSize()
        let raw = try ioctlInt(fd.raw, CKVM_CREATE_VCPU, UInt(id), "KVM_CREATE_VCPU")
        return try KVMVCPU(fd: OwnedFD(raw), id: id, mmapSize: mmapSize, vm: self)
    }

    /// `KVM_CHECK_EXTENSION` on the VM fd (some answers are per VM).
    public func check(_ capability: Capability) -> Int32 {
        max(0, ckvm_ioctl_int(fd.raw, CKVM_CHECK_EXTENSION, UInt(capability.rawValue)))
    }

    /// `KVM_GET_STATS_FD` on the VM.
    public func openStatistics() throws -> StatisticsFile {
        StatisticsFile(fd: OwnedFD(try ioctlInt(fd.raw, CKVM_GET_STATS_FD, 0, "KVM_GET_STATS_FD")))
    }
}
