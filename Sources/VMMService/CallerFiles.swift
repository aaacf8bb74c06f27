import CSys
import KVM
import Synchronization
import VMMAPI
#if canImport(Glibc)
import Glibc
#endif

/// Opens the files a request names (kernel, initrd) with the caller's permissions, not
/// the daemon's: a root daemon must not boot /etc/shadow as somebody's initrd.
///
/// Linux keeps credentials per thread in the kernel, so a short-lived thread takes the
/// caller's file-system uid, gid and groups (raw setfsuid/setfsgid/setgroups, which
/// glibc does not broadcast to the other threads), opens the files, and ends; the
/// daemon's other threads never change identity.
enum CallerFiles {
    /// Largest image accepted.
    static let maxSize: Int64 = 1 << 30

    /// Opens each path read-only for `caller`. The descriptors are close-on-exec and
    /// belong to the caller of this function. Throws `image_rejected` naming the field.
    static func open(_ paths: [(field: String, path: String)], as caller: Caller) throws(APIError) -> [Int32] {
        let result = Mutex<Result<[Int32], APIError>>(.success([]))
        let thread: HostThread
        do {
            thread = try HostThread(name: "open-as-caller") {
                let r = openOnThisThread(paths, as: caller)
                result.withLock { $0 = r }
            }
        } catch {
            throw APIError(.internalError, "cannot start a thread to open files: \(error)")
        }
        thread.join()
        return try result.withLock { $0 }.get()
    }

    private static func openOnThisThread(_ paths: [(field: String, path: String)], as caller: Caller) -> Result<[Int32], APIError> {
        if caller.uid != geteuid() || caller.gid != getegid() {
            guard geteuid() == 0 else {
                return .failure(APIError(.forbidden, "this daemon does not run as root and cannot open files for uid \(caller.uid)"))
            }
            let rc = csys_thread_assume_fs_identity(caller.uid, caller.gid, caller.groups, Int32(caller.groups.count))
            guard rc == 0 else {
                return .failure(APIError(.internalError, "cannot take uid \(caller.uid)'s identity: \(String(cString: strerror(-rc)))"))
            }
        }
        var fds: [Int32] = []
        for (field, path) in paths {
            // O_NONBLOCK: a FIFO must not hang the daemon; it is refused below anyway.
            let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)
            guard fd >= 0 else {
                let e = errno
                for f in fds { close(f) }
                return .failure(APIError(.imageRejected, "\(field) \(path): \(String(cString: strerror(e)))", field: field))
            }
            var st = stat()
            guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
                close(fd)
                for f in fds { close(f) }
                return .failure(APIError(.imageRejected, "\(field) \(path): not a regular file", field: field))
            }
            guard Int64(st.st_size) <= maxSize, st.st_size > 0 else {
                close(fd)
                for f in fds { close(f) }
                return .failure(APIError(.imageRejected, "\(field) \(path): \(st.st_size) bytes (must be 1 byte to 1 GiB)", field: field))
            }
            _ = fcntl(fd, F_SETFL, 0)   // back to blocking for the worker's reads
            fds.append(fd)
        }
        return .success(fds)
    }
}
