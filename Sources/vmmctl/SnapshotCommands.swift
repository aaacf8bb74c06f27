import ArgumentParser
import FoundationEssentials
import VMMAPI
import VMMClient
#if canImport(Glibc)
import Glibc
#endif

/// `vmmctl create`'s snapshot options.
struct CreateSnapshotOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Build the VM from the snapshot in DIR (its shape is the snapshot's) instead of booting --kernel.", valueName: "DIR"))
    var fromSnapshot: String?
    @Flag(help: "With --from-snapshot: copy the snapshot's memory instead of mapping it copy-on-write.") var restoreCopy = false
    @Option(help: "With --from-snapshot: continue (the guest's clocks go on where they stopped) or advance (by the time since).")
    var clock: String = "continue"
    @Flag(help: "Log the pages that change, so that the VM's snapshots can be diffs.") var trackDirtyPages = false

    var restoreRequest: RestoreRequest? {
        guard let fromSnapshot else { return nil }
        guard let clock = RestoreRequest.Clock(rawValue: clock) else { clientFail("--clock must be continue or advance") }
        return RestoreRequest(path: absolutePath(fromSnapshot), memory: restoreCopy ? .copy : .copyOnWrite, clock: clock)
    }
}

struct SnapshotVM: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Write a snapshot of a running or paused VM in vmmd.",
        discussion: """
        vmmd pauses the VM, its worker writes the snapshot into DIR (created with your permissions; it must \
        not exist or be empty), and the VM runs on unless --paused. With --diff only the pages changed since \
        the VM's last snapshot (or the one it was restored from) are written, and that one is named as the \
        parent. `vmmctl run --restore DIR` or `vmmctl create NAME --from-snapshot DIR` restores it.
        """)

    @OptionGroup var options: ClientOptions
    @Argument(help: "The VM.") var name: String
    @Argument(help: "The snapshot's directory.") var directory: String
    @Flag(help: "Write only the pages changed since the last snapshot.") var diff = false
    @Flag(help: "Leave the VM paused once the snapshot is written.") var paused = false

    func run() async throws {
        let path = absolutePath(directory)
        let connection = try await options.connect()
        let (info, _) = await perform(connection, .GET, vmPath(name, options), as: VMInfo.self)
        let body = encodeJSON(SnapshotRequest(path: path, diff: diff, paused: paused))
        // The worker writes the memory file: its allocated size says how far it got.
        let bar = ProgressBar("snapshot")
        let total = info.memoryMiB << 20
        let watcher = Task {
            while !Task.isCancelled {
                var st = stat()
                if stat(path + "/memory.bin", &st) == 0 { bar.update(min(UInt64(st.st_blocks) * 512, total), total) }
                try? await Task.sleep(nanoseconds: 100_000_000)
            }
        }
        let (snapshot, result) = await perform(connection, .PUT, vmPath(name, options, "/snapshot"), body: body, as: SnapshotInfo.self)
        watcher.cancel()
        bar.finish()
        if options.json { return printJSON(result.body) }
        print("\(snapshot.kind) snapshot \(snapshot.id) of \(name) in \(snapshot.path): \(ProgressBar.size(snapshot.memoryBytes)) of memory, "
              + "\(ProgressBar.size(snapshot.stateBytes)) of state, \(ProgressBar.oneDecimal(snapshot.durationMs)) ms"
              + (snapshot.parent.map { " (parent \($0.path))" } ?? ""))
    }
}
