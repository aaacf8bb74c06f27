import CSys
import KVM
import WorkerProtocol
#if canImport(Glibc)
import Glibc
#endif

/// vmmd's side of a worker's vsock broker link (`VsockBrokerMessage`): one thread per
/// worker, with the VM owner's file-system identity, that connects to `<socket>_P`
/// when the worker's guest opens a connection to host port P and hands the connected
/// socket over. It never reads or writes the connection's bytes. It ends when the
/// worker closes its end (the worker exited).
enum VsockBrokerServer {
    /// A socketpair for the link: (the daemon's end, the worker's end), close-on-exec.
    static func pair() throws -> (daemon: Int32, worker: Int32) {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw ServiceError.system("socketpair", errno)
        }
        return (fds[0], fds[1])
    }

    /// Serves the daemon's end `fd` (and closes it at the end) for a VM whose vsock
    /// listener is at `socket`, owned by `caller`.
    static func serve(fd: Int32, socket: String, as caller: Caller) {
        do {
            try HostThread(name: "vsock-broker") {
                defer { close(fd) }
                guard CallerFiles.assumeIdentity(of: caller) == nil else { return }
                let link = FramedSocket(fd: fd)
                while let (payload, stray) = try? link.receive() {
                    for f in stray { close(f) }
                    guard case .connect(let id, let port)? = try? VsockBrokerMessage.decode(payload) else { return }
                    let connected = csys_connect_unix_nonblocking("\(socket)_\(port)")
                    let reply = VsockBrokerMessage.connected(id: id, errno: connected >= 0 ? 0 : -connected).encoded()
                    if connected >= 0 {
                        defer { close(connected) }   // the worker has its own copy now
                        guard (try? link.send(reply, descriptors: [connected])) != nil else { return }
                    } else {
                        guard link.send(reply) else { return }
                    }
                }
            }.detach()
        } catch {
            close(fd)
        }
    }
}
