import CSys
import FoundationEssentials
import Synchronization
import KVM
import VMMAPI
#if canImport(Glibc)
import Glibc
#endif

/// A named VM brokered by vmmd for a process that may not open /dev/kvm itself (the
/// vmmctl-device model: FreeBSD's `vm_openf(name, VMMAPI_OPEN_CREATE)`).
///
///     let handle = try VMHandle.open(name: "mine", memoryMiB: 64)
///     let machine = try Machine(config: config, kvm: handle.kvm)   // in this process
///     let reason = try machine.run()
///     handle.close()                                               // or just exit
///
/// vmmd checks policy and quota, records the name under the caller's uid with a
/// `connection` lifetime, and hands back a /dev/kvm descriptor over its handle socket.
/// The VM is created, mapped and run here, by this process (KVM binds a VM to its
/// creator's address space). The name is held until `close()` or the process exits.
///
/// What the daemon can and cannot enforce once the descriptor is here: see the README's
/// security section. In short, it owns the name, the quota accounting and the record's
/// lifetime, but not what the process does with /dev/kvm.
public final class VMHandle: @unchecked Sendable {
    // @unchecked: immutable after open; close() is idempotent behind `closed`.
    public let name: String
    public let ownerUID: UInt32
    /// The brokered /dev/kvm: pass it to `Machine(config:kvm:)`.
    public let kvm: KVMSystem
    private let connection: Int32
    private let closed = Mutex(false)

    /// The default handle socket, next to vmmd's API socket.
    public static let defaultSocket = "/run/vmm/vmmd-handle.sock"

    private init(name: String, ownerUID: UInt32, kvm: KVMSystem, connection: Int32) {
        self.name = name; self.ownerUID = ownerUID; self.kvm = kvm; self.connection = connection
    }

    /// Asks vmmd for the VM `name`. Throws the daemon's `APIError` when it refuses
    /// (name taken, quota, bad request), or a `ClientError` when it cannot be reached.
    public static func open(name: String, memoryMiB: UInt64 = 128, vcpus: Int = 1,
                            socketPath: String = defaultSocket) throws -> VMHandle {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let request = try encoder.encode(HandleRequest(name: name, memoryMiB: memoryMiB, vcpus: vcpus))
        return try open(requestLine: [UInt8](request), socketPath: socketPath)
    }

    /// Sends `requestLine` (a JSON object, without the newline) as it is.
    public static func open(requestLine: [UInt8], socketPath: String = defaultSocket) throws -> VMHandle {
        let fd = csys_connect_unix(socketPath)
        guard fd >= 0 else { throw ClientError.cannotConnect(socketPath, String(cString: strerror(-fd))) }
        var line = requestLine
        line.append(0x0A)
        guard csys_send_with_fds(fd, line, line.count, [], 0) == line.count else {
            Glibc.close(fd)
            throw ClientError.connectionClosed
        }
        var answer: [UInt8] = []
        var received: [Int32] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        var fds = [Int32](repeating: -1, count: 4)
        var nfds: Int32 = 0
        while !answer.contains(0x0A) {
            let n = csys_recv_with_fds(fd, &chunk, chunk.count, &fds, Int32(fds.count), &nfds)
            received += fds.prefix(Int(nfds))
            guard n > 0 else {
                for d in received { Glibc.close(d) }
                Glibc.close(fd)
                throw n == 0 ? ClientError.connectionClosed : ClientError.badResponse(String(cString: strerror(Int32(-n))))
            }
            answer += chunk[0 ..< n]
        }
        let response: HandleResponse
        do {
            response = try JSONDecoder().decode(HandleResponse.self, from: Data(answer.prefix { $0 != 0x0A }))
        } catch {
            for d in received { Glibc.close(d) }
            Glibc.close(fd)
            throw ClientError.badResponse("vmmd's answer is not a handle response: \(error)")
        }
        guard let handle = response.handle, let kvmFD = received.first else {
            for d in received { Glibc.close(d) }
            Glibc.close(fd)
            throw response.error ?? ClientError.badResponse("vmmd sent no descriptor")
        }
        for d in received.dropFirst() { Glibc.close(d) }
        do {
            return VMHandle(name: handle.name, ownerUID: handle.ownerUID, kvm: try KVMSystem(adopting: kvmFD), connection: fd)
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    /// Gives the name back: vmmd forgets the VM (and its quota) at once.
    public func close() {
        guard !closed.withLock({ c in defer { c = true }; return c }) else { return }
        Glibc.close(connection)
    }

    deinit { close() }
}
