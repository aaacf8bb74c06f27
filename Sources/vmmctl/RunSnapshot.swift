import ArgumentParser
import Dispatch
import FoundationEssentials
import KVM
import Snapshot
import VMM
#if canImport(Glibc)
import Glibc
#endif

/// `vmmctl run`'s snapshot options: restore instead of booting, and write snapshots of
/// the running guest on SIGUSR2. ArgumentParser's side; `request` is what the command
/// uses, nil when every option has its default.
struct RunSnapshotOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Restore the snapshot in DIR (and the ones it was taken on top of) instead of booting --kernel.", valueName: "DIR"))
    var restore: String?

    @Flag(help: "With --restore: restore paused; SIGCONT (kill -CONT PID) resumes the guest.")
    var paused = false

    @Flag(help: "With --restore: copy the snapshot's memory instead of mapping it copy-on-write (for slow or removable storage).")
    var restoreCopy = false

    @Option(help: "With --restore: continue (the guest's clocks go on where they stopped) or advance (by the wall time since the snapshot).")
    var clock: String = RunSnapshotRequest.defaultClock

    @Option(help: ArgumentHelp("On SIGUSR2 (kill -USR2 PID): pause the guest, write a snapshot into DIR (new or empty), then resume it. A %n in DIR is the snapshot's number (1, 2, ...), so that every signal writes another.", valueName: "DIR"))
    var snapshotTo: String?

    @Flag(help: "With --snapshot-to: write a diff of the snapshot restored (or written) last instead of a full one (a first snapshot with none before it is full).")
    var snapshotDiff = false

    @Flag(help: "With --snapshot-to: end once the snapshot is written (exit status 12) instead of resuming.")
    var stopAfterSnapshot = false

    @Flag(help: "Log the pages that change, so that a later snapshot can be a diff (--snapshot-diff).")
    var trackDirtyPages = false

    /// The options as plain values; nil when none was given a value of its own.
    var request: RunSnapshotRequest? {
        let r = RunSnapshotRequest(restore: restore, paused: paused, restoreCopy: restoreCopy, clock: clock,
                                   snapshotTo: snapshotTo, snapshotDiff: snapshotDiff, stopAfterSnapshot: stopAfterSnapshot,
                                   trackDirtyPages: trackDirtyPages)
        return r == RunSnapshotRequest() ? nil : r
    }
}

/// `RunSnapshotOptions` as plain values, which `RunRequest.fastParse` fills without
/// ArgumentParser: a `vmmctl run --restore` is the command whose start-up time a
/// restore's user sees, and ArgumentParser's parse of `Run` costs it ~1.6 ms of CPU.
struct RunSnapshotRequest: Equatable {
    static let defaultClock = "continue"

    var restore: String?
    var paused = false
    var restoreCopy = false
    var clock = defaultClock
    var snapshotTo: String?
    var snapshotDiff = false
    var stopAfterSnapshot = false
    var trackDirtyPages = false

    /// The restore options, or a clean failure.
    func restoreOptions(name: String?) -> RestoreOptions {
        var options = RestoreOptions()
        options.memory = restoreCopy ? .copy : .copyOnWrite
        switch clock {
        case "continue": options.clock = .continued
        case "advance": options.clock = .advanced
        default: fail("--clock must be continue or advance")
        }
        options.name = name
        return options
    }

    /// Builds the machine restored from `--restore`, with the console settings of `config`.
    func restoredMachine(_ config: MachineConfig, named name: String?, kvm: KVMSystem) throws -> Machine {
        guard let restore else { return try Machine(config: config, kvm: kvm) }
        var options = restoreOptions(name: name)
        // --net and --vsock name the host ends a clone needs of its own.
        if !config.networks.isEmpty { options.networks = config.networks }
        options.vsock = config.vsock
        options.serialOutput = config.serialOutput
        options.logger = config.logger
        let bar = ProgressBar("restoring")
        options.progress = { bar.update($0, $1) }
        defer { bar.finish() }
        return try Machine.restore(from: absolutePath(restore), options: options, kvm: kvm)
    }

    /// On SIGUSR2, snapshots `machine` into `--snapshot-to`; SIGCONT resumes a machine
    /// restored paused. The handlers live as long as the process.
    func installSignalHandlers(_ machine: Machine) {
        if paused {
            signal(SIGCONT, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: SIGCONT, queue: .global())
            source.setEventHandler { machine.resume() }
            source.resume()
            SignalSources.keep(source)
            printError("vmmctl: restored paused; send SIGCONT (kill -CONT \(getpid())) to resume")
        }
        guard let pattern = snapshotTo.map(absolutePath) else { return }
        var parent = restore.map(absolutePath)
        var number = 0
        let diff = snapshotDiff, stop = stopAfterSnapshot
        signal(SIGUSR2, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGUSR2, queue: DispatchQueue(label: "snapshot"))
        source.setEventHandler {
            let wasPaused = machine.vcpus.allSatisfy { $0.state == .paused }
            let started = DispatchTime.now().uptimeNanoseconds
            machine.pause()
            number += 1
            let directory = pattern.replacing("%n", with: String(number))
            var options = SnapshotOptions(kind: diff && parent != nil ? .diff : .full,
                                          parentPath: parent.map { relativePath(from: directory, to: $0) } ?? "")
            let bar = ProgressBar("snapshot")
            options.progress = { bar.update($0, $1) }
            do {
                let summary = try machine.snapshot(to: directory, options: options)
                bar.finish()
                parent = directory
                printError("vmmctl: snapshot \(summary.id) written to \(directory) (\(summary.isDiff ? "diff" : "full"), \(ProgressBar.size(summary.memoryBytesWritten)) of memory, \(ProgressBar.size(UInt64(summary.stateFileSize))) of state, \(ProgressBar.oneDecimal(Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6)) ms from the signal)")
            } catch {
                bar.finish()
                printError("vmmctl: snapshot to \(directory) failed: \(error)")
            }
            if stop { machine.kill() } else if !wasPaused { machine.resume() }
        }
        source.resume()
        SignalSources.keep(source)
    }
}

/// Signal sources must stay referenced to keep firing. Installed once, from the main
/// thread, before the guest runs.
enum SignalSources {
    nonisolated(unsafe) private static var sources: [any DispatchSourceSignal] = []
    static func keep(_ source: any DispatchSourceSignal) { sources.append(source) }
}

/// `path` made absolute against the current directory (a diff records its parent
/// relative to itself, so both must be absolute).
func absolutePath(_ path: String) -> String {
    path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
}
