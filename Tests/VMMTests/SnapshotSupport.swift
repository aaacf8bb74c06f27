import Devices
import Foundation
import GuestMemory
import Snapshot
import Testing
import VMM

/// A temporary directory for snapshots, removed with the value. Its name carries the
/// test run's marker, so that a `vmmctl` left running on it is found by the leak check.
final class SnapshotScratch {
    let root: URL
    init() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("\(SpawnedProcesses.testRunMarker)snapshots-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(at: root) }
    /// A path inside it (not created).
    func path(_ name: String) -> String { root.appendingPathComponent(name).path }
}

/// What the count guest prints when it counts to `n` (Guests/count.S).
func countOutput(to n: Int, ap: Bool = false) -> String {
    "count: start\n" + (1 ... n).map { "\($0)\n" }.joined() + "count: memory ok\ncount: fpu ok\n" + (ap ? "count: ap ok\n" : "")
}

/// A machine running a test guest, with its console.
struct RunningGuest {
    let machine: Machine
    let output: BufferOutput

    init(_ guest: String, cmdline: String = "", memoryMiB: UInt64 = 32, cpus: Int = 1, hypercalls: Bool = false,
         trackDirtyPages: Bool = false, name: String = "vm", irqchip: IRQChipMode = .kernel) throws {
        var config = MachineConfig()
        config.irqchip = irqchip
        config.memoryMiB = memoryMiB
        config.cpus = cpus
        config.kernel = try TestGuests.image(guest)
        config.commandLine = cmdline
        config.hypercalls = hypercalls
        config.trackDirtyPages = trackDirtyPages
        config.name = name
        output = BufferOutput()
        config.serialOutput = output
        machine = try Machine(config: config)
    }

    init(restoring directory: String, memory: RestoreOptions.Memory = .copyOnWrite, clock: RestoreOptions.Clock = .continued,
         name: String? = nil) throws {
        var options = RestoreOptions()
        output = BufferOutput()
        options.serialOutput = output
        options.memory = memory
        options.clock = clock
        options.name = name
        machine = try Machine.restore(from: directory, options: options)
    }

    /// Waits until the console shows `text` (false after `seconds`).
    func waitFor(_ text: String, seconds: Double = 30) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while !output.text.contains(text) {
            if Date() > deadline { return false }
            usleep(2000)
        }
        return true
    }

    /// Runs to the end (at most `seconds`, then kills) and returns why it stopped.
    func finish(seconds: Double = 60) throws -> StopReason {
        let machine = self.machine
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { [weak machine] in machine?.kill() }
        return try machine.waitForStop()
    }

    /// Pauses, writes a snapshot and returns the console so far.
    func pauseAndSnapshot(to directory: String, options: SnapshotOptions = SnapshotOptions()) throws -> (String, SnapshotSummary) {
        machine.pause()
        let summary = try machine.snapshot(to: directory, options: options)
        return (output.text, summary)
    }

    func stop() {
        machine.kill()
        _ = try? machine.waitForStop()
    }
}

/// All of guest RAM, read through the machine's memory.
func ramBytes(_ memory: GuestMemory) throws -> [UInt8] {
    try memory.ramRanges.flatMap { try memory.read(at: $0.start, count: Int($0.length)) }
}

/// A file's bytes, holes as zeros.
func fileBytes(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }
