import Debug
import KVM
import Synchronization
import VMM
import WorkerProtocol
#if canImport(Glibc)
import Glibc
#endif

/// The worker's end of `vmmctl gdb`: a GDB session over this machine whose bytes travel
/// in `debugData` messages on the daemon link (the daemon relays them without parsing).
/// One session at a time; it ends when the client goes, detaches or kills, or the guest
/// ends, and the daemon is told (`debugClosed`) so that it closes the client's connection.
final class WorkerDebugger: Sendable {
    let machine: Machine
    let link: FramedSocket
    private let session = Mutex<GDBSession?>(nil)

    init(machine: Machine, link: FramedSocket) {
        self.machine = machine
        self.link = link
    }

    func attach() {
        // The daemon allows one client; a session it lost track of gives way.
        if let stale = session.withLock({ s -> GDBSession? in defer { s = nil }; return s }) {
            stale.disconnected()
            stale.waitUntilFinished()
        }
        let link = self.link
        let new = GDBSession(target: MachineTarget(machine: machine),
                             output: { link.send(WorkerMessage.debugData($0).encoded()) },
                             log: { line in Self.log(line) })
        do {
            try new.start()
        } catch {
            Self.log("gdb: cannot attach: \(error)")
            link.send(WorkerMessage.debugClosed.encoded())
            return
        }
        session.withLock { $0 = new }
        do {
            try HostThread(name: "gdb-end") { [self] in
                new.waitUntilFinished()
                let current = session.withLock { s -> Bool in
                    guard s === new else { return false }
                    s = nil
                    return true
                }
                if current { link.send(WorkerMessage.debugClosed.encoded()) }
            }.detach()
        } catch {
            new.disconnected()
        }
    }

    func received(_ bytes: [UInt8]) { session.withLock { $0 }?.received(bytes) }

    func detach() { session.withLock { $0 }?.disconnected() }

    func machineEnded(_ reason: StopReason) { session.withLock { $0 }?.machineEnded(reason) }

    private static func log(_ line: String) {
        let text = "vmm-worker[\(getpid())]: \(line)\n"
        _ = text.withCString { write(STDERR_FILENO, $0, strlen($0)) }
    }
}
