import ArgumentParser
import Snapshot
#if canImport(Glibc)
import Glibc
#endif

struct FoldSnapshot: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fold-snapshot",
        abstract: "Fold a diff snapshot and the snapshots below it into one full snapshot.",
        discussion: """
        Reads the snapshot in DIR and every parent it names, and writes into OUT (new or empty) \
        one full snapshot with the same state and the memory the chain restores to: the base's \
        pages with each diff's laid over them in order. OUT restores without the chain.
        """)

    @Argument(help: "The snapshot to fold (a diff).") var directory: String
    @Argument(help: "Where the full snapshot goes (a new or empty directory).") var output: String

    func run() throws {
        do {
            let chain = try SnapshotChain.open(directory: absolutePath(directory), using: SnapshotChain.openReadOnly)
            let out = absolutePath(output)
            if mkdir(out, 0o700) != 0 {
                guard errno == EEXIST, rmdir(out) == 0, mkdir(out, 0o700) == 0 else { fail("\(out) is not a new or empty directory") }
            }
            var fds: [Int32] = []
            defer { for fd in fds { close(fd) } }
            for name in [SnapshotFiles.partialState, SnapshotFiles.memory, SnapshotFiles.manifest] {
                let fd = open(out + "/" + name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                guard fd >= 0 else { fail("cannot create \(out)/\(name): \(String(cString: strerror(errno)))") }
                fds.append(fd)
            }
            let bar = ProgressBar("folding")
            let written = try SnapshotFold.fold(chain, state: fds[0], memory: fds[1], manifest: fds[2], progress: { bar.update($0, $1) })
            bar.finish()
            guard rename(out + "/" + SnapshotFiles.partialState, out + "/" + SnapshotFiles.state) == 0 else {
                fail("cannot rename the state file into place: \(String(cString: strerror(errno)))")
            }
            print("folded \(chain.layers.count) snapshots into \(out) (\(ProgressBar.size(written)) of memory)")
        } catch {
            fail("\(error)")
        }
    }
}
