import CKVM
#if canImport(Glibc)
import Glibc
#endif

extension KVMVCPU {
    /// How this VM's XSAVE area is read: its size — `KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2)` on
    /// the VM (at least 4096, more once a dynamic feature such as AMX is enabled), or 4096
    /// (`struct kvm_xsave`) when KVM has only `KVM_CAP_XSAVE` — and whether KVM_GET_XSAVE2
    /// exists. Nil when KVM has neither (KVM_GET_FPU then).
    public struct XSAVELayout: Sendable, Equatable {
        public let size: Int
        public let hasXSAVE2: Bool
    }

    public var xsaveLayout: XSAVELayout? {
        let size = Int(vm.check(Capability(Int32(KVM_CAP_XSAVE2))))
        if size >= 4096 { return XSAVELayout(size: size, hasXSAVE2: true) }
        return vm.check(Capability(Int32(KVM_CAP_XSAVE))) > 0 ? XSAVELayout(size: 4096, hasXSAVE2: false) : nil
    }

    /// `KVM_GET_XSAVE2` (or `KVM_GET_XSAVE` without it): the x87, SSE and extended state
    /// in the XSAVE layout of the host's CPUID leaf 0xD, `layout.size` bytes.
    public func xsave(_ layout: XSAVELayout) throws -> [UInt8] {
        let (request, name) = layout.hasXSAVE2 ? (CKVM_GET_XSAVE2, "KVM_GET_XSAVE2") : (CKVM_GET_XSAVE, "KVM_GET_XSAVE")
        var buffer = [UInt8](repeating: 0, count: max(layout.size, 4096))
        // SAFETY: the buffer holds the `size` bytes KVM writes for this request.
        let rc = buffer.withUnsafeMutableBytes { ckvm_ioctl(fd.raw, request, $0.baseAddress) }
        guard rc >= 0 else { throw KVMError.last(name) }
        return buffer
    }

    /// `KVM_SET_XSAVE` of what `xsave(_:)` returned, which must be this VM's size.
    public func setXSAVE(_ bytes: [UInt8], _ layout: XSAVELayout) throws {
        guard bytes.count == layout.size, bytes.count >= 4096 else {
            throw KVMError(operation: "KVM_SET_XSAVE", errno: 0,
                           detail: "the state has \(bytes.count) bytes, this KVM's XSAVE area \(layout.size)")
        }
        var copy = bytes
        // SAFETY: the buffer holds the `size` bytes KVM reads for this request.
        let rc = copy.withUnsafeMutableBytes { ckvm_ioctl(fd.raw, CKVM_SET_XSAVE, $0.baseAddress) }
        guard rc >= 0 else { throw KVMError.last("KVM_SET_XSAVE") }
    }

    /// `KVM_GET_TSC_KHZ`: the guest's TSC frequency in kHz.
    public func tscKHz() throws -> UInt32 {
        UInt32(try ioctlInt(fd.raw, CKVM_GET_TSC_KHZ, 0, "KVM_GET_TSC_KHZ"))
    }
}
