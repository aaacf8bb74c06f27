import Foundation
import Snapshot
import Testing
import VMM

/// Snapshots across processes: taken in one, restored by `vmmctl run --restore` in another.
@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct SnapshotCLITests {
    /// Snapshotted in the middle here, restored in a new process: the count goes on with
    /// no gap and no repeat; and again after a diff taken on top of a restore.
    @Test func countContinuesInANewProcess() throws {
        let scratch = try SnapshotScratch()
        let guest = try RunningGuest("count", cmdline: "2000")
        try guest.machine.start()
        #expect(guest.waitFor("\n250\n"))
        let (beforeA, _) = try guest.pauseAndSnapshot(to: scratch.path("a"))
        guest.stop()
        let restored = try VMMCtl.run(["run", "--restore", scratch.path("a")])
        #expect(restored.status == 0, "\(restored.all)")
        #expect(beforeA + restored.stdout == countOutput(to: 2000))

        let second = try RunningGuest(restoring: scratch.path("a"))
        try second.machine.start()
        #expect(second.waitFor("\n900\n"))
        second.machine.pause()
        _ = try second.machine.snapshot(to: scratch.path("b"), options: SnapshotOptions(kind: .diff, parentPath: "../a"))
        let between = second.output.text
        second.stop()
        let fromDiff = try VMMCtl.run(["run", "--restore", scratch.path("b")])
        #expect(fromDiff.status == 0, "\(fromDiff.all)")
        #expect(beforeA + between + fromDiff.stdout == countOutput(to: 2000))
    }

    /// `--paused`: nothing runs until SIGCONT.
    @Test func restorePausedThenResume() throws {
        let scratch = try SnapshotScratch()
        let guest = try RunningGuest("count", cmdline: "1000")
        try guest.machine.start()
        #expect(guest.waitFor("\n100\n"))
        let (before, _) = try guest.pauseAndSnapshot(to: scratch.path("p"))
        guest.stop()
        let process = try TestProcess(VMMCtl.path, ["run", "--restore", scratch.path("p"), "--paused"], discardStderr: true)
        usleep(800_000)
        #expect(process.text.isEmpty, "a paused restore printed \(process.text.prefix(40))")
        #expect(process.wait(0) == nil)
        kill(process.pid, SIGCONT)
        #expect(process.wait(30) == 0)
        #expect(before + process.text == countOutput(to: 1000))
    }

    /// `vmmctl run --snapshot-to DIR`: SIGUSR2 writes a snapshot of the running guest,
    /// which then goes on (or ends, with --stop-after-snapshot); the snapshot restores
    /// here and continues from where it was taken.
    @Test func snapshotOnSignalFromARunningVMMCtl() throws {
        let scratch = try SnapshotScratch()
        let process = try TestProcess(VMMCtl.path, ["run", "--kernel", TestGuests.path("count"), "--cmdline", "3000", "--memory", "32",
                                                    "--snapshot-to", scratch.path("sig"), "--stop-after-snapshot"], discardStderr: true)
        let deadline = Date().addingTimeInterval(20)
        while !process.text.contains("\n300\n"), Date() < deadline { usleep(2000) }
        kill(process.pid, SIGUSR2)
        #expect(process.wait(30) == 12)
        let before = process.text
        let restored = try RunningGuest(restoring: scratch.path("sig"))
        try restored.machine.start()
        #expect(try restored.finish() == .powerOff)
        #expect(before + restored.output.text == countOutput(to: 3000))
        let manifest = try String(contentsOfFile: scratch.path("sig/manifest.json"), encoding: .utf8)
        #expect(manifest.contains("\"kind\": \"full\"") && manifest.contains("\"memory_mib\": 32"))
    }
}
