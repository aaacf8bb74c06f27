import CKVM
#if canImport(Glibc)
import Glibc
#endif

extension KVMVCPU {
    /// The size of this VM's XSAVE area: `KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2)` on the VM
    /// (at least 4096, more once a dynamic feature such as AMX is enabled), 4096 (`struct
    /// kvm_xsave`) when KVM has only `KVM_CAP_XSAVE`, nil when it has neither.
    public var xsaveSize: Int? {
        let size = Int(vm.check(Capability(Int32(KVM_CAP_XSAVE2))))
        if size >= 4096 { return size }
        return vm.check(Capability(Int32(KVM_CAP_XSAVE))) > 0 ? 4096 : nil
    }

    /// `KVM_GET_XSAVE2` (or `KVM_GET_XSAVE` without KVM_CAP_XSAVE2): the x87, SSE and
    /// extended state in the XSAVE layout of the host's CPUID leaf 0xD, `xsaveSize` bytes.
    public func xsave() throws -> [UInt8] {
        guard let size = xsaveSize else {
            throw KVMError(operation: "KVM_GET_XSAVE", errno: 0, detail: "this KVM has no KVM_CAP_XSAVE")
        }
        let two = size > 4096 || vm.check(Capability(Int32(KVM_CAP_XSAVE2))) > 0
        let (request, name) = two ? (CKVM_GET_XSAVE2, "KVM_GET_XSAVE2") : (CKVM_GET_XSAVE, "KVM_GET_XSAVE")
        var buffer = [UInt8](repeating: 0, count: size)
        // SAFETY: the buffer holds the `size` bytes KVM writes for this request.
        let rc = buffer.withUnsafeMutableBytes { ckvm_ioctl(fd.raw, request, $0.baseAddress) }
        guard rc >= 0 else { throw KVMError.last(name) }
        return buffer
    }

    /// `KVM_SET_XSAVE` of what `xsave()` returned (this VM's `xsaveSize` bytes).
    public func setXSAVE(_ bytes: [UInt8]) throws {
        guard let size = xsaveSize, bytes.count == size else {
            throw KVMError(operation: "KVM_SET_XSAVE", errno: 0,
                           detail: "the state has \(bytes.count) bytes, this KVM's XSAVE area \(xsaveSize.map(String.init) ?? "none")")
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
