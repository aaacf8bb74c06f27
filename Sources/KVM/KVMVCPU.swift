import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// The vCPU handle: the descriptor `KVM_CREATE_VCPU` returned, and its mapped `kvm_run`.
///
/// A vCPU's ioctls must come from one thread at a time; `KVM_RUN` in particular is
/// meant to be issued by the thread that owns the vCPU. Only `requestImmediateExit`
/// may be called from other threads (it writes one byte of the shared run area).
public final class KVMVCPU: @unchecked Sendable {
    // @unchecked: the fd and mapping are immutable; the run area is written by other
    // threads only through `requestImmediateExit`, a single-byte store KVM reads at entry.
    let fd: OwnedFD
    /// The vCPU id given to `KVM_CREATE_VCPU` (its initial APIC ID).
    public let id: UInt32
    /// The VM this vCPU belongs to.
    public let vm: KVMVM
    let run: UnsafeMutableRawPointer
    let runSize: Int

    init(fd: OwnedFD, id: UInt32, mmapSize: Int, vm: KVMVM) throws {
        // SAFETY: maps the vCPU's kvm_run area (mmapSize from KVM_GET_VCPU_MMAP_SIZE) shared.
        let mapped = mmap(nil, mmapSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd.raw, 0)
        guard let mapped, mapped != MAP_FAILED else { throw KVMError.last("mmap(kvm_run)") }
        self.fd = fd
        self.id = id
        self.vm = vm
        self.run = mapped
        self.runSize = mmapSize
    }

    deinit {
        // SAFETY: unmaps exactly the region mapped in init; no other reference escapes.
        munmap(run, runSize)
    }

    /// `KVM_RUN`: enters the guest until it exits, and decodes why.
    ///
    /// EINTR (a kick, or `immediate_exit`) is not an error: it returns `.interrupted`.
    public func runOnce() throws -> VCPUExit {
        if ckvm_ioctl_int(fd.raw, CKVM_RUN, 0) < 0 {
            let err = errno
            if err == EINTR || err == EAGAIN { return .interrupted }
            throw KVMError(operation: "KVM_RUN", errno: err)
        }
        return decodeExit()
    }

    /// Asks the next or current `KVM_RUN` to return promptly (`kvm_run.immediate_exit`).
    /// Pair it with a signal to the vCPU thread to interrupt a run already under way.
    public func requestImmediateExit(_ on: Bool) {
        // SAFETY: immediate_exit is a u8 inside the mapped run area.
        run.storeBytes(of: on ? 1 : 0, toByteOffset: CKVM_RUN_IMMEDIATE_EXIT, as: UInt8.self)
    }

    /// `kvm_run.if_flag` of the last exit: whether the guest had interrupts enabled.
    public var interruptsEnabledAtExit: Bool {
        // SAFETY: if_flag is a u8 inside the mapped run area.
        run.load(fromByteOffset: CKVM_RUN_IF_FLAG, as: UInt8.self) != 0
    }

    // MARK: - Exit payloads

    @inline(__always)
    private func load<T>(_ offset: Int, _ type: T.Type) -> T {
        // SAFETY: every offset comes from offsetof(struct kvm_run, ...) and lies in the mapping.
        run.loadUnaligned(fromByteOffset: offset, as: type)
    }

    private func decodeExit() -> VCPUExit {
        let reason = load(CKVM_RUN_EXIT_REASON, UInt32.self)
        switch Int32(reason) {
        case KVM_EXIT_IO:
            let size = Int(load(CKVM_RUN_IO_SIZE, UInt8.self))
            let count = Int(load(CKVM_RUN_IO_COUNT, UInt32.self))
            let offset = load(CKVM_RUN_IO_DATA_OFFSET, UInt64.self)
            // KVM places the data inside the run area; refuse anything that is not, so
            // that `ioValue`/`setIOValue` can never touch memory outside the mapping.
            guard size == 1 || size == 2 || size == 4, count >= 1,
                  offset < UInt64(runSize), count <= (runSize - Int(offset)) / size else {
                return .unknown(reason: reason, hardwareReason: offset)
            }
            let direction: PortIO.Direction = load(CKVM_RUN_IO_DIRECTION, UInt8.self) == 0 ? .in : .out
            return .io(PortIO(direction: direction, size: size, port: load(CKVM_RUN_IO_PORT, UInt16.self),
                              count: count, dataOffset: Int(offset)))
        case KVM_EXIT_MMIO:
            let size = Int(min(load(CKVM_RUN_MMIO_LEN, UInt32.self), 8))
            return .mmio(MMIOAccess(address: load(CKVM_RUN_MMIO_PHYS_ADDR, UInt64.self), size: size,
                                    isWrite: load(CKVM_RUN_MMIO_IS_WRITE, UInt8.self) != 0,
                                    value: load(CKVM_RUN_MMIO_DATA, UInt64.self) & Self.mask(size)))
        case KVM_EXIT_HLT:
            return .halt
        case KVM_EXIT_SHUTDOWN:
            return .shutdown
        case KVM_EXIT_SYSTEM_EVENT:
            let ndata = load(CKVM_RUN_SYSTEM_EVENT_NDATA, UInt32.self)
            return .systemEvent(type: load(CKVM_RUN_SYSTEM_EVENT_TYPE, UInt32.self),
                                data: ndata > 0 ? load(CKVM_RUN_SYSTEM_EVENT_DATA, UInt64.self) : 0)
        case KVM_EXIT_DEBUG:
            return .debug(DebugEvent(exception: load(CKVM_RUN_DEBUG_EXCEPTION, UInt32.self),
                                     pc: load(CKVM_RUN_DEBUG_PC, UInt64.self),
                                     dr6: load(CKVM_RUN_DEBUG_DR6, UInt64.self),
                                     dr7: load(CKVM_RUN_DEBUG_DR7, UInt64.self)))
        case KVM_EXIT_INTERNAL_ERROR:
            let ndata = min(Int(load(CKVM_RUN_INTERNAL_NDATA, UInt32.self)), 4)
            let data = (0 ..< ndata).map { load(CKVM_RUN_INTERNAL_DATA + $0 * 8, UInt64.self) }
            return .internalError(suberror: load(CKVM_RUN_INTERNAL_SUBERROR, UInt32.self), data: InternalErrorData(data))
        case KVM_EXIT_FAIL_ENTRY:
            return .failEntry(reason: load(CKVM_RUN_FAIL_ENTRY_REASON, UInt64.self),
                              cpu: load(CKVM_RUN_FAIL_ENTRY_CPU, UInt32.self))
        case KVM_EXIT_EXCEPTION:
            return .exception(vector: load(CKVM_RUN_EX_EXCEPTION, UInt32.self),
                              errorCode: load(CKVM_RUN_EX_ERROR_CODE, UInt32.self))
        case KVM_EXIT_IOAPIC_EOI:
            return .ioapicEOI(vector: load(CKVM_RUN_EOI_VECTOR, UInt8.self))
        case KVM_EXIT_IRQ_WINDOW_OPEN:
            return .irqWindowOpen
        case KVM_EXIT_INTR:
            return .interrupted
        default:
            return .unknown(reason: reason, hardwareReason: load(CKVM_RUN_HW_EXIT_REASON, UInt64.self))
        }
    }

    @inline(__always)
    static func mask(_ size: Int) -> UInt64 {
        size >= 8 ? .max : (1 << (UInt64(size) * 8)) - 1
    }

    /// Element `index` of an `out` exit's data, zero-extended.
    @inline(__always)
    public func ioValue(_ io: PortIO, at index: Int = 0) -> UInt64 {
        let offset = io.dataOffset + index * io.size
        switch io.size {
        case 1: return UInt64(load(offset, UInt8.self))
        case 2: return UInt64(load(offset, UInt16.self))
        default: return UInt64(load(offset, UInt32.self))
        }
    }

    /// Stores element `index` of an `in` exit's answer (the low `io.size` bytes of `value`).
    @inline(__always)
    public func setIOValue(_ io: PortIO, at index: Int = 0, _ value: UInt64) {
        let offset = io.dataOffset + index * io.size
        // SAFETY: decodeExit checked dataOffset + count * size against the mapping size.
        switch io.size {
        case 1: run.storeBytes(of: UInt8(truncatingIfNeeded: value), toByteOffset: offset, as: UInt8.self)
        case 2: run.storeBytes(of: UInt16(truncatingIfNeeded: value), toByteOffset: offset, as: UInt16.self)
        default: run.storeBytes(of: UInt32(truncatingIfNeeded: value), toByteOffset: offset, as: UInt32.self)
        }
    }

    /// Answers an MMIO read: the low `size` bytes of `value` go to `kvm_run.mmio.data`.
    @inline(__always)
    public func completeMMIORead(_ value: UInt64) {
        // SAFETY: mmio.data is 8 bytes inside the mapped run area.
        run.storeBytes(of: value, toByteOffset: CKVM_RUN_MMIO_DATA, as: UInt64.self)
    }
}
