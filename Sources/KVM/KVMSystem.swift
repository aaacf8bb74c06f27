import CKVM
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The system handle: an open `/dev/kvm`.
///
/// Everything here is a "system ioctl" in KVM's api.rst (section 4): it describes what
/// the host's KVM can do and creates VMs. It can be opened from the path or adopted
/// from a descriptor handed over by a daemon (SCM_RIGHTS).
public final class KVMSystem: @unchecked Sendable {
    // @unchecked: the fd is immutable; KVM's system ioctls are safe from any thread;
    // the CPUID answer is behind a Mutex.
    let fd: OwnedFD
    /// KVM_GET_SUPPORTED_CPUID's answer, once fetched or adopted.
    private let supportedCPUIDAnswer = Mutex<[CPUIDEntry]?>(nil)

    /// The only stable KVM API version (`KVM_GET_API_VERSION` returns 12 since 2.6.22).
    public static let expectedAPIVersion: Int32 = 12

    /// Opens `path` (default `/dev/kvm`) and checks the API version.
    public convenience init(path: String = "/dev/kvm") throws {
        let raw = ckvm_open(path, O_RDWR | O_CLOEXEC)
        guard raw >= 0 else { throw KVMError.last("open(\(path))") }
        try self.init(adopting: raw)
    }

    /// Takes ownership of an already open `/dev/kvm` descriptor.
    public init(adopting raw: Int32) throws {
        fd = OwnedFD(raw)
        let version = try apiVersion()
        guard version == Self.expectedAPIVersion else {
            throw KVMError(operation: "KVM_GET_API_VERSION", errno: 0,
                           detail: "API version \(version), expected \(Self.expectedAPIVersion)")
        }
    }

    /// The raw descriptor, for handing to another process. Still owned by this object.
    public var rawDescriptor: Int32 { fd.raw }

    /// `KVM_GET_API_VERSION`.
    public func apiVersion() throws -> Int32 {
        try ioctlInt(fd.raw, CKVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION")
    }

    /// `KVM_CHECK_EXTENSION`: 0 when absent, otherwise a capability-specific value.
    public func check(_ capability: Capability) -> Int32 {
        max(0, ckvm_ioctl_int(fd.raw, CKVM_CHECK_EXTENSION, UInt(capability.rawValue)))
    }

    /// Every capability this VMM knows by name, with the value KVM reports (absent ones omitted).
    public func capabilities() -> [(Capability, Int32)] {
        Capability.known.compactMap { cap in
            let value = check(cap)
            return value > 0 ? (cap, value) : nil
        }
    }

    /// `KVM_GET_VCPU_MMAP_SIZE`: the size of each vCPU's shared `kvm_run` area.
    public func vcpuMmapSize() throws -> Int {
        Int(try ioctlInt(fd.raw, CKVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE"))
    }

    /// `KVM_GET_SUPPORTED_CPUID`: the CPUID leaves KVM can present to a guest. Asked
    /// once per handle: the kernel executes CPUID for every leaf, which traps on a
    /// virtualised host (~0.35 ms here).
    public func supportedCPUID() throws -> [CPUIDEntry] {
        if let known = supportedCPUIDAnswer.withLock({ $0 }) { return known }
        let entries = try CPUIDEntry.fetch(fd: fd.raw, request: CKVM_GET_SUPPORTED_CPUID, name: "KVM_GET_SUPPORTED_CPUID")
        supportedCPUIDAnswer.withLock { $0 = $0 ?? entries }
        return entries
    }

    /// Takes `entries` as KVM_GET_SUPPORTED_CPUID's answer (what another process got from
    /// the same host's KVM: vmmd hands its own to each worker); no effect once there is one.
    public func adoptSupportedCPUID(_ entries: [CPUIDEntry]) {
        supportedCPUIDAnswer.withLock { $0 = $0 ?? entries }
    }

    /// `KVM_GET_MSR_INDEX_LIST`: the MSRs KVM saves and restores for a guest.
    public func msrIndexList() throws -> [UInt32] {
        try fetchMSRList(request: CKVM_GET_MSR_INDEX_LIST, name: "KVM_GET_MSR_INDEX_LIST")
    }

    /// `KVM_GET_MSR_FEATURE_INDEX_LIST`: the feature MSRs (`KVM_GET_MSRS` on the system fd).
    public func msrFeatureIndexList() throws -> [UInt32] {
        try fetchMSRList(request: CKVM_GET_MSR_FEATURE_INDEX_LIST, name: "KVM_GET_MSR_FEATURE_INDEX_LIST")
    }

    /// `KVM_CREATE_VM` with the default machine type.
    public func createVM() throws -> KVMVM {
        var raw: Int32
        repeat {
            raw = ckvm_ioctl_int(fd.raw, CKVM_CREATE_VM, 0)
        } while raw < 0 && errno == EINTR  // KVM_CREATE_VM may be interrupted while it allocates
        guard raw >= 0 else { throw KVMError.last("KVM_CREATE_VM") }
        return KVMVM(fd: OwnedFD(raw), system: self)
    }

    private func fetchMSRList(request: UInt, name: String) throws -> [UInt32] {
        // The kernel answers E2BIG with the needed count in nmsrs; grow until it fits.
        var capacity = 256
        while true {
            var buffer = [UInt32](repeating: 0, count: capacity + 1)
            buffer[0] = UInt32(capacity)
            // SAFETY: kvm_msr_list is { u32 nmsrs; u32 indices[] }; buffer holds 1 + capacity u32s.
            let rc = buffer.withUnsafeMutableBytes { ckvm_ioctl(fd.raw, request, $0.baseAddress) }
            if rc == 0 { return Array(buffer[1 ..< 1 + Int(min(buffer[0], UInt32(capacity)))]) }
            guard errno == E2BIG, Int(buffer[0]) > capacity, capacity < 65536 else {
                throw KVMError.last(name)
            }
            capacity = Int(buffer[0])
        }
    }
}

/// ioctl with an integer argument returning a non-negative integer, or throwing.
@inline(__always)
func ioctlInt(_ fd: Int32, _ request: UInt, _ arg: UInt, _ name: String) throws -> Int32 {
    let rc = ckvm_ioctl_int(fd, request, arg)
    guard rc >= 0 else { throw KVMError.last(name) }
    return rc
}

/// ioctl with a pointer to `value` (in, out or both).
@inline(__always)
func ioctlValue<T>(_ fd: Int32, _ request: UInt, _ value: inout T, _ name: String) throws {
    // SAFETY: `value` is a fixed-size C struct matching the ioctl's argument layout.
    let rc = withUnsafeMutablePointer(to: &value) { ckvm_ioctl(fd, request, $0) }
    guard rc >= 0 else { throw KVMError.last(name) }
}
