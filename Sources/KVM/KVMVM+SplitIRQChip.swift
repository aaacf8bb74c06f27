import CKVM

/// One entry of a VM's GSI routing table that sends GSI `gsi` as a message-signalled
/// interrupt (`struct kvm_irq_routing_msi`): what an irqfd on that GSI delivers.
public struct MSIRoute: Sendable, Equatable {
    public var gsi: UInt32
    public var addressLow: UInt32
    public var addressHigh: UInt32
    public var data: UInt32

    public init(gsi: UInt32, addressLow: UInt32, addressHigh: UInt32 = 0, data: UInt32) {
        self.gsi = gsi; self.addressLow = addressLow; self.addressHigh = addressHigh; self.data = data
    }
}

extension KVMVM {
    /// `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)`: the local APICs in the kernel, the IOAPIC
    /// and PIC in userspace (api.rst 7.8). GSIs below `ioapicPins` are the IOAPIC's:
    /// KVM scans their MSI routes for level-triggered vectors and reports the guest's EOI
    /// of those with `KVM_EXIT_IOAPIC_EOI`. Before any vCPU is created.
    ///
    /// Unlike `KVM_CREATE_IRQCHIP`, this registers no in-kernel I/O devices, so closing
    /// the VM takes no extra SRCU grace periods (README, "The KVM on these machines").
    public func enableSplitIRQChip(ioapicPins: UInt32) throws {
        var cap = kvm_enable_cap()
        cap.cap = CKVM_CAP_SPLIT_IRQCHIP
        cap.args.0 = UInt64(ioapicPins)
        try ioctlValue(fd.raw, CKVM_ENABLE_CAP, &cap, "KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)")
    }

    /// `KVM_SET_GSI_ROUTING`: replaces the whole routing table with `routes` (api.rst
    /// 4.52). A GSI without a route drops what is signalled on it. Each call waits for
    /// the irq SRCU readers, so a caller sets routes only when they change.
    public func setGSIRouting(_ routes: [MSIRoute]) throws {
        let headerSize = MemoryLayout<kvm_irq_routing>.size
        let entrySize = MemoryLayout<kvm_irq_routing_entry>.stride
        var buffer = [UInt8](repeating: 0, count: headerSize + routes.count * entrySize)
        let rc = buffer.withUnsafeMutableBytes { raw -> Int32 in
            // SAFETY: the buffer holds the header and `routes.count` entries, laid out as
            // struct kvm_irq_routing with its flexible array; stores are unaligned-safe.
            raw.storeBytes(of: UInt32(routes.count), toByteOffset: 0, as: UInt32.self)
            for (i, route) in routes.enumerated() {
                var entry = kvm_irq_routing_entry()
                entry.gsi = route.gsi
                entry.type = CKVM_IRQ_ROUTING_MSI
                entry.u.msi.address_lo = route.addressLow
                entry.u.msi.address_hi = route.addressHigh
                entry.u.msi.data = route.data
                let start = headerSize + i * entrySize
                // SAFETY: entry i lies inside the buffer (sized above).
                withUnsafeBytes(of: &entry) { UnsafeMutableRawBufferPointer(rebasing: raw[start ..< start + entrySize]).copyMemory(from: $0) }
            }
            return ckvm_ioctl(fd.raw, CKVM_SET_GSI_ROUTING, raw.baseAddress)
        }
        guard rc >= 0 else { throw KVMError.last("KVM_SET_GSI_ROUTING") }
    }
}
