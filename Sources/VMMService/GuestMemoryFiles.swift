import CSys
import GuestMemory
import WorkerProtocol
#if canImport(Glibc)
import Glibc
#endif

/// The memfds behind one VM's guest memory. The daemon creates and owns them but never
/// maps them: the worker maps them, and they outlive any one worker, so a worker that
/// restarts (after a crash, or a reboot done by a new worker) finds the same memory.
final class GuestMemoryFiles: @unchecked Sendable {
    // @unchecked: immutable after init; close() runs once, from the owner.
    let segments: [WorkerSetup.Segment]
    let descriptors: [Int32]
    private var closed = false

    /// Sealed memfds for `memoryMiB` of RAM, laid out as `GuestMemory.ramLayout` does.
    init(vmName: String, memoryMiB: UInt64) throws {
        var segments: [WorkerSetup.Segment] = []
        var fds: [Int32] = []
        for (i, range) in GuestMemory.ramLayout(size: memoryMiB << 20).enumerated() {
            let name = i == 0 ? "ram-low" : "ram-high"
            let fd = csys_guest_memfd("vmm:\(vmName):\(name)", range.length)
            guard fd >= 0 else {
                for f in fds { Glibc.close(f) }
                throw ServiceError.system("memfd_create(\(name))", -fd)
            }
            segments.append(WorkerSetup.Segment(name: name, guestBase: range.start.raw, size: range.length))
            fds.append(fd)
        }
        self.segments = segments
        self.descriptors = fds
    }

    /// No guest memory of the daemon's: a VM restored copy-on-write maps its snapshot's
    /// memory file in the worker.
    private init() {
        segments = []
        descriptors = []
    }

    static func none() -> GuestMemoryFiles { GuestMemoryFiles() }

    /// The inode numbers, to show that a restarted worker got the same memory.
    var inodes: [UInt64] {
        descriptors.map { fd in
            var st = stat()
            return fstat(fd, &st) == 0 ? UInt64(st.st_ino) : 0
        }
    }

    func close() {
        guard !closed else { return }
        closed = true
        for fd in descriptors { Glibc.close(fd) }
    }

    deinit { close() }
}
