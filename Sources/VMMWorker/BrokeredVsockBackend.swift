import Devices
import KVM
import Synchronization
import WorkerProtocol
#if canImport(Glibc)
import Glibc
#endif

/// The vsock host side of a sandboxed worker, which may open nothing: the listener is
/// the one vmmd created with the owner's permissions, and each connection the guest
/// opens to host port P is made by vmmd (`VsockBrokerMessage`) and handed back.
final class BrokeredVsockBackend: VsockHostBackend, @unchecked Sendable {
    // @unchecked: `reader` is set once in init; the rest is immutable or behind locks.
    let listener: Int32
    let link: FramedSocket
    private let pending = Mutex<[UInt32: @Sendable (Result<Int32, DeviceError>) -> Void]>([:])
    private let nextID = Atomic<UInt32>(0)
    private var reader: HostThread?
    /// Connects in flight at once; more fail at once (the guest sees a reset).
    static let maxPending = 64

    init(listener: Int32, link linkFD: Int32) throws {
        guard listener >= 0, linkFD >= 0 else { throw WorkerError("the vsock descriptors are missing") }
        self.listener = listener
        link = FramedSocket(fd: linkFD)
        reader = try HostThread(name: "vsock-broker") { [self] in readReplies() }
    }

    func connect(port: UInt32, completion: @escaping @Sendable (Result<Int32, DeviceError>) -> Void) {
        let id = nextID.add(1, ordering: .relaxed).newValue
        let admitted = pending.withLock { p -> Bool in
            guard p.count < Self.maxPending else { return false }
            p[id] = completion
            return true
        }
        guard admitted else { return completion(.failure(.invalid("too many vsock connects in flight"))) }
        if !link.send(VsockBrokerMessage.connect(id: id, port: port).encoded()) {
            pending.withLock { $0.removeValue(forKey: id) }?(.failure(.invalid("the vsock broker link is closed")))
        }
    }

    private func readReplies() {
        while let (payload, fds) = try? link.receive() {
            guard case .connected(let id, let e)? = try? VsockBrokerMessage.decode(payload),
                  let completion = pending.withLock({ $0.removeValue(forKey: id) }) else {
                for fd in fds { close(fd) }
                continue
            }
            if e == 0, fds.count == 1 {
                completion(.success(fds[0]))
            } else {
                for fd in fds { close(fd) }
                completion(.failure(.system(operation: "connecting to the host port", errno: e == 0 ? EPROTO : e)))
            }
        }
        // The daemon is gone: nothing will answer.
        let orphans = pending.withLock { p in defer { p = [:] }; return Array(p.values) }
        for completion in orphans { completion(.failure(.invalid("the vsock broker link closed"))) }
    }
}
