import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// An eventfd(2) counter: what KVM signals for an ioeventfd (`KVM_IOEVENTFD`) and
/// reads for an irqfd (`KVM_IRQFD`), and what a device thread blocks on.
///
/// `signal()` adds 1; `wait()` blocks until the counter is non-zero and returns it,
/// resetting it to 0, so any number of signals before a wait is one wake-up.
public final class EventFD: @unchecked Sendable {
    // @unchecked: the descriptor is immutable and eventfd reads and writes are atomic in the kernel.
    let fd: OwnedFD

    /// `eventfd(0, EFD_CLOEXEC)`, blocking.
    public init() throws {
        let raw = ckvm_eventfd(0, CKVM_EFD_CLOEXEC)
        guard raw >= 0 else { throw KVMError.last("eventfd") }
        fd = OwnedFD(raw)
    }

    /// The descriptor (for a sandbox that must keep it open).
    public var rawDescriptor: Int32 { fd.raw }

    /// Adds 1 to the counter, waking a waiter (or injecting the irqfd's interrupt).
    /// A write to an eventfd fails only when the counter would overflow, which 2^64-2
    /// unread signals cannot reach here; such a failure is dropped (the waiter is awake).
    @inline(__always)
    public func signal() {
        var one: UInt64 = 1
        while write(fd.raw, &one, 8) < 0 && errno == EINTR {}
    }

    /// Blocks until the counter is non-zero; returns it and resets it to 0.
    public func wait() -> UInt64 {
        var value: UInt64 = 0
        while true {
            let n = read(fd.raw, &value, 8)
            if n == 8 { return value }
            if n < 0 && errno == EINTR { continue }
            return 0
        }
    }
}

extension KVMVM {
    /// The bus an ioeventfd watches.
    public enum IOEventBus: Sendable { case mmio, pio }

    /// `KVM_IOEVENTFD`: KVM signals `event` on a guest write of `length` bytes (1, 2,
    /// 4 or 8; 0 = any) at `address`, matching `value` when given, and completes the
    /// write in the kernel: the vCPU never exits to userspace for it. Writes that do
    /// not match still exit as ordinary MMIO or port I/O.
    public func registerIOEventFD(_ event: EventFD, bus: IOEventBus = .mmio, address: UInt64, length: UInt32,
                                  datamatch value: UInt64? = nil) throws {
        var request = ioEventRequest(event, bus: bus, address: address, length: length, datamatch: value)
        try ioctlValue(fd.raw, CKVM_IOEVENTFD, &request, "KVM_IOEVENTFD")
    }

    /// `KVM_IOEVENTFD` with `KVM_IOEVENTFD_FLAG_DEASSIGN`: undoes `registerIOEventFD`.
    public func unregisterIOEventFD(_ event: EventFD, bus: IOEventBus = .mmio, address: UInt64, length: UInt32,
                                    datamatch value: UInt64? = nil) throws {
        var request = ioEventRequest(event, bus: bus, address: address, length: length, datamatch: value)
        request.flags |= UInt32(CKVM_IOEVENTFD_FLAG_DEASSIGN)
        try ioctlValue(fd.raw, CKVM_IOEVENTFD, &request, "KVM_IOEVENTFD")
    }

    private func ioEventRequest(_ event: EventFD, bus: IOEventBus, address: UInt64, length: UInt32,
                                datamatch value: UInt64?) -> kvm_ioeventfd {
        var request = kvm_ioeventfd()
        request.addr = address
        request.len = length
        request.fd = event.fd.raw
        if bus == .pio { request.flags |= UInt32(CKVM_IOEVENTFD_FLAG_PIO) }
        if let value {
            request.flags |= UInt32(CKVM_IOEVENTFD_FLAG_DATAMATCH)
            request.datamatch = value
        }
        return request
    }

    /// `KVM_IRQFD`: a signal on `event` injects GSI `gsi` of the in-kernel irqchip,
    /// as an edge (assert, then deassert) — no ioctl from the signalling thread.
    public func registerIRQFD(_ event: EventFD, gsi: UInt32) throws {
        var request = kvm_irqfd()
        request.fd = UInt32(bitPattern: event.fd.raw)
        request.gsi = gsi
        try ioctlValue(fd.raw, CKVM_IRQFD, &request, "KVM_IRQFD")
    }

    /// `KVM_IRQFD` with `KVM_IRQFD_FLAG_DEASSIGN`.
    public func unregisterIRQFD(_ event: EventFD, gsi: UInt32) throws {
        var request = kvm_irqfd()
        request.fd = UInt32(bitPattern: event.fd.raw)
        request.gsi = gsi
        request.flags = UInt32(CKVM_IRQFD_FLAG_DEASSIGN)
        try ioctlValue(fd.raw, CKVM_IRQFD, &request, "KVM_IRQFD")
    }
}
