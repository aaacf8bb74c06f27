import KVM
#if canImport(Glibc)
import Glibc
#endif

extension Machine {
    /// Feeds whatever arrives on `fd` (stdin, a pty) to COM1's receiver, from a thread
    /// of its own that ends when `fd` reaches end of file. Not for the daemon's workers:
    /// their input comes as messages.
    public func forwardInput(fromDescriptor fd: Int32) {
        let uart = serial
        // Detached: it ends with its input, or with the process.
        try? HostThread(name: "console-in") {
            var buffer = [UInt8](repeating: 0, count: 256)
            while true {
                let n = read(fd, &buffer, buffer.count)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return }
                uart.enqueueInput(Array(buffer[0 ..< n]))
            }
        }.detach()
    }
}
