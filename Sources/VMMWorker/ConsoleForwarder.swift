import Devices
import Dispatch
import KVM
import Synchronization
import WorkerProtocol

/// COM1's output on its way to the daemon, kept off the vCPU's exit path: a
/// transmitted byte costs the vCPU thread one append under a lock (and a wake-up when
/// the buffer was empty); a thread of its own sends what piled up as one console
/// message. `flush()` sends the rest at once, so a `stopped` report never overtakes the
/// guest's last words.
final class ConsoleForwarder: SerialOutput, @unchecked Sendable {
    // @unchecked: `thread` is written once in init; the rest is behind locks.
    private let link: FramedSocket
    private let pending = Mutex<[UInt8]>([])
    /// Held while a batch is taken and sent, so that batches leave in order.
    private let sending = Mutex(())
    private let wakeup = DispatchSemaphore(value: 0)
    private var thread: HostThread?

    init(link: FramedSocket) throws {
        self.link = link
        thread = try HostThread(name: "console-out") { [self] in
            while true {
                wakeup.wait()
                flush()
            }
        }
    }

    func write(_ byte: UInt8) {
        let wasEmpty = pending.withLock { p -> Bool in
            p.append(byte)
            return p.count == 1
        }
        if wasEmpty { wakeup.signal() }
    }

    /// Sends everything written so far, from the calling thread.
    func flush() {
        sending.withLock { _ in
            let bytes = pending.withLock { p -> [UInt8] in defer { p = [] }; return p }
            if !bytes.isEmpty { link.send(WorkerMessage.console(bytes).encoded()) }
        }
    }
}
