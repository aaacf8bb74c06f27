import Snapshot
#if canImport(Glibc)
import Glibc
#endif

/// Creating a snapshot directory from this process (`vmmctl run`, library users): a
/// daemon does the same with its caller's permissions.
enum SnapshotDirectory {
    /// The open files of a snapshot being written, closed together.
    struct OpenFiles {
        let set: SnapshotFileSet
        func close() { for fd in [set.state, set.memory, set.manifest] where fd >= 0 { _ = Glibc.close(fd) } }
    }

    /// Creates `path` (mode 0700) unless it exists as an empty directory, and the files of
    /// a snapshot in it (mode 0600: guest memory is the guest's secrets).
    static func create(_ path: String) throws(SnapshotError) -> OpenFiles {
        if mkdir(path, 0o700) != 0 {
            guard errno == EEXIST else { throw .system(operation: "mkdir(\(path))", errno: errno) }
            // rmdir(2) removes only an empty directory: the check and the new one in one step.
            guard rmdir(path) == 0, mkdir(path, 0o700) == 0 else {
                throw .invalidState("\(path) is not an empty directory: a snapshot is written into a new or empty one")
            }
        }
        var fds: [Int32] = []
        for name in [SnapshotFiles.partialState, SnapshotFiles.memory, SnapshotFiles.manifest] {
            let fd = open(path + "/" + name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                let e = errno
                for f in fds { Glibc.close(f) }
                throw .system(operation: "open(\(path)/\(name))", errno: e)
            }
            fds.append(fd)
        }
        return OpenFiles(set: SnapshotFileSet(state: fds[0], memory: fds[1], manifest: fds[2]))
    }

    /// Renames the partial state file into place and makes the rename durable.
    static func commit(_ path: String) throws(SnapshotError) {
        guard rename(path + "/" + SnapshotFiles.partialState, path + "/" + SnapshotFiles.state) == 0 else {
            throw .system(operation: "rename(\(path)/\(SnapshotFiles.partialState))", errno: errno)
        }
        let dir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dir >= 0 { _ = fsync(dir); Glibc.close(dir) }
    }
}
