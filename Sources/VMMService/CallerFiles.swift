import CSys
import KVM
import Synchronization
import VMMAPI
#if canImport(Glibc)
import Glibc
#endif

/// Opens the files a request names (kernel, initrd, disks) with the caller's permissions, not
/// the daemon's: a root daemon must not boot /etc/shadow as somebody's initrd.
///
/// Linux keeps credentials per thread in the kernel, so a short-lived thread takes the
/// caller's file-system uid, gid and groups (raw setfsuid/setfsgid/setgroups, which
/// glibc does not broadcast to the other threads), opens the files, and ends; the
/// daemon's other threads never change identity. The thread opens with
/// `csys_open_image`, which refuses magic links (/proc/self/fd/N would otherwise reach
/// the daemon's own descriptors, other VMs' guest memory among them), procfs and sysfs
/// files, and memfds.
enum CallerFiles {
    /// Largest image accepted.
    static let maxSize: Int64 = 1 << 30
    /// A path that does not open in this long (a hung network or FUSE mount) is refused.
    static let timeoutSeconds: UInt64 = 10

    /// What to open: an image (read-only, a regular file) or a disk.
    enum Kind: Sendable {
        case image
        /// A disk: a regular file, or a block device the caller owns; read-write unless
        /// `readOnly` (so the caller needs write permission), O_DIRECT with `direct`.
        case disk(readOnly: Bool, direct: Bool)
        /// A vsock device's listening Unix socket, created at the path (which must not
        /// exist, or be a stale socket) with the caller's permissions: the caller owns it.
        case vsockListener
        /// An existing tap the caller owns (its TUNSETOWNER owner or TUNSETGROUP group);
        /// the path is the interface's name.
        case tap
    }

    /// Opens each path read-only for `caller`. The descriptors are close-on-exec and
    /// belong to the caller of this function. Throws `image_rejected` naming the field.
    static func open(_ paths: [(field: String, path: String)], as caller: Caller) async throws(APIError) -> [Int32] {
        try await open(paths.map { ($0.field, $0.path, Kind.image) }, as: caller)
    }

    /// Opens each path as its kind says, for `caller`.
    static func open(_ paths: [(field: String, path: String, kind: Kind)], as caller: Caller) async throws(APIError) -> [Int32] {
        // The body takes the caller's identity itself, after opening taps as the daemon.
        try await perform(as: caller, field: "kernel", assumingIdentity: false, discard: { for fd in $0 { close(fd) } }) {
            openOnThisThread(paths, as: caller)
        }.get()
    }

    /// Runs `body` on a short-lived thread that has `caller`'s file-system identity, and
    /// returns what it returned. A body that takes longer than `timeoutSeconds` (a hung
    /// mount) is given up on: its late result goes to `discard` (to close descriptors),
    /// and the answer is `image_rejected` naming `field`.
    static func perform<T: Sendable>(as caller: Caller, field: String, assumingIdentity: Bool = true,
                                     discard: @escaping @Sendable (T) -> Void,
                                     _ body: @escaping @Sendable () -> Result<T, APIError>) async -> Result<T, APIError> {
        // Resumed once: by the working thread, or by the timeout, whichever comes first.
        let once = OnceResume<T>()
        return await withCheckedContinuation { continuation in
            once.set(continuation)
            do {
                try HostThread(name: "as-caller") {
                    let refusal = assumingIdentity ? assumeIdentity(of: caller) : nil
                    let r = refusal.map { Result<T, APIError>.failure($0) } ?? body()
                    if !once.resume(r), case .success(let late) = r { discard(late) }   // too late: nobody will use it
                }.detach()
            } catch {
                _ = once.resume(.failure(APIError(.internalError, "cannot start a thread to open files: \(error)")))
            }
            Task {
                try await Task.sleep(nanoseconds: timeoutSeconds * 1_000_000_000)
                _ = once.resume(.failure(APIError(.imageRejected, "opening the files took longer than \(timeoutSeconds) s", field: field)))
            }
        }
    }

    /// Removes a vsock listener's socket file as the caller (who owns it), when its VM
    /// goes; a path that is no longer a socket is left alone.
    static func removeSocket(_ path: String, as caller: Caller) {
        _ = try? HostThread(name: "unlink-as-caller") {
            guard assumeIdentity(of: caller) == nil else { return }
            var st = stat()
            if lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFSOCK { unlink(path) }
        }.detach()
    }

    /// Takes `caller`'s file-system identity on this thread (nil when done, or when the
    /// daemon already is the caller).
    static func assumeIdentity(of caller: Caller) -> APIError? {
        guard caller.uid != geteuid() || caller.gid != getegid() else { return nil }
        guard geteuid() == 0 else {
            return APIError(.forbidden, "this daemon does not run as root and cannot act for uid \(caller.uid)")
        }
        let rc = csys_thread_assume_fs_identity(caller.uid, caller.gid, caller.groups, Int32(caller.groups.count))
        guard rc == 0 else { return APIError(.internalError, "cannot take uid \(caller.uid)'s identity: \(String(cString: strerror(-rc)))") }
        return nil
    }

    private static func openOnThisThread(_ paths: [(field: String, path: String, kind: Kind)], as caller: Caller) -> Result<[Int32], APIError> {
        // Taps first, as the daemon: /dev/net/tun is root's, and what decides is the
        // tap's owner, which `CallerTaps` checks against the caller.
        var taps: [Int: Int32] = [:]
        for (i, (field, name, kind)) in paths.enumerated() {
            guard case .tap = kind else { continue }
            switch CallerTaps.open(name: name, for: caller) {
            case .success(let tap): taps[i] = tap
            case .failure(let e):
                for fd in taps.values { close(fd) }
                return .failure(APIError(e.code, "\(field): \(e.message)", field: field))
            }
        }
        var fds: [Int32] = []
        // The disks opened so far, as files: the same image attached twice may only be
        // read-only every time. Compared by what was opened, not by path: a symlink, a
        // bind mount or "/a/./img" names the same file as "/a/img".
        var disksOpened: [(field: String, file: FileIdentity, readOnly: Bool)] = []
        func refuse(_ fd: Int32, _ error: APIError) -> Result<[Int32], APIError> {
            if fd >= 0 { close(fd) }
            for f in fds { close(f) }
            for (i, f) in taps where i >= fds.count { close(f) }   // not handed over yet
            return .failure(error)
        }
        if let refusal = assumeIdentity(of: caller) { return refuse(-1, refusal) }
        for (index, (field, path, kind)) in paths.enumerated() {
            let fd: Int32
            switch kind {
            case .image: fd = csys_open_image(path)
            case .disk(let readOnly, let direct): fd = csys_open_disk(path, readOnly ? 0 : 1, direct ? 1 : 0)
            case .vsockListener:
                let listener = csys_listen_unix_replacing_stale(path, 128)
                guard listener >= 0 else {
                    let why = listener == -EADDRINUSE ? "exists and is not a stale socket" : String(cString: strerror(-listener))
                    return refuse(-1, APIError(.imageRejected, "\(field) \(path): \(why)", field: field))
                }
                fds.append(listener)
                continue
            case .tap:
                if let tap = taps[index] { fds.append(tap) }
                continue
            }
            guard fd >= 0 else {
                let why = -fd == EPERM ? "not something an image may be (a magic link, a procfs or sysfs file, or guest memory)"
                    : String(cString: strerror(-fd))
                return refuse(-1, APIError(.imageRejected, "\(field) \(path): \(why)", field: field))
            }
            var st = stat()
            guard fstat(fd, &st) == 0 else {
                return refuse(fd, APIError(.imageRejected, "\(field) \(path): \(String(cString: strerror(errno)))", field: field))
            }
            let type = st.st_mode & S_IFMT
            switch kind {
            case .image:
                guard type == S_IFREG else {
                    return refuse(fd, APIError(.imageRejected, "\(field) \(path): not a regular file", field: field))
                }
                guard Int64(st.st_size) <= maxSize, st.st_size > 0 else {
                    return refuse(fd, APIError(.imageRejected, "\(field) \(path): \(st.st_size) bytes (must be 1 byte to 1 GiB)", field: field))
                }
            case .vsockListener, .tap:
                break   // handled above
            case .disk:
                // A device node could be anyone's disk: only its owner may attach it.
                guard type == S_IFREG || (type == S_IFBLK && (caller.uid == 0 || st.st_uid == caller.uid)) else {
                    return refuse(fd, APIError(.imageRejected, "\(field) \(path): not a regular file or a block device the caller owns", field: field))
                }
                guard lseek(fd, 0, SEEK_END) >= 512 else {
                    return refuse(fd, APIError(.imageRejected, "\(field) \(path): smaller than one 512-byte sector", field: field))
                }
                guard case .disk(let readOnly, _) = kind else { break }
                let file = FileIdentity(st)
                if let other = disksOpened.first(where: { $0.file == file }), !(readOnly && other.readOnly) {
                    return refuse(fd, APIError(.imageRejected, "\(field) \(path) is the image of \(other.field) too; an image may be attached twice only read-only",
                                               field: field))
                }
                disksOpened.append((field, file, readOnly))
            }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)   // back to blocking for the worker
            fds.append(fd)
        }
        return .success(fds)
    }
}

/// Which file a descriptor is: the inode for a file, the device number for a device node.
struct FileIdentity: Equatable {
    let device: UInt64
    let inode: UInt64

    init(_ st: stat) {
        if (st.st_mode & S_IFMT) == S_IFBLK {
            device = UInt64(st.st_rdev); inode = 0
        } else {
            device = UInt64(st.st_dev); inode = UInt64(st.st_ino)
        }
    }
}

/// A continuation that may be resumed from several places; only the first counts.
final class OnceResume<T: Sendable>: Sendable {
    private let slot = Mutex<CheckedContinuation<Result<T, APIError>, Never>?>(nil)

    func set(_ c: CheckedContinuation<Result<T, APIError>, Never>) { slot.withLock { $0 = c } }

    /// True when this call resumed it.
    func resume(_ value: Result<T, APIError>) -> Bool {
        guard let c = slot.withLock({ s -> CheckedContinuation<Result<T, APIError>, Never>? in defer { s = nil }; return s }) else {
            return false
        }
        c.resume(returning: value)
        return true
    }
}
