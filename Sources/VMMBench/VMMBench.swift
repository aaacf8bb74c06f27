// vmm-bench: swift-vmm against a C program on raw KVM (and QEMU where it says so), in
// one run. Every figure is printed with its target and its ratio against the reference
// measured in the same run; nothing here is asserted by the tests.
//
// Build in release mode and run from the package root:
//     swift build -c release && .build/release/vmm-bench [options]
//
// It builds the test guests (Guests/build.sh) and the C reference
// (Benchmarks/ref/kvm_ref.c, also linked in as the KVMRef library) and measures:
//   - exit path: ns per port-I/O exit, a ring-3 guest loop of `out` to port 0x80, through
//     the full swift-vmm path (vCPU runner, exit decode, port bus, POST-code device)
//     against C handling the same exit inline. Target ≤ 1.03 × C.
//   - hypercall: round trip of the `abi_info` hypercall from a ring-3 loop (guest →
//     doorbell exit → registers read, dispatched, RAX written → guest), against C doing
//     the same with the same sync-regs mechanism. Target ≤ 1.05 × C.
//     Both interleaved in this process (C and Swift batches alternate every ~50 ms, so
//     both see the same host conditions) and in separate runs (alternating rounds).
//   - lifecycle: create VM (64 MiB, irqchip, PIT, 1 vCPU) → boot exit.elf → run to its
//     debug-exit → destroy, in process (target ≤ 1.5 × C), and the destroy alone
//     (target ≤ 1 ms) with the split irqchip, and with KVM's in-kernel irqchip beside it.
//   - cold start (ColdStartBench.swift): whole processes, `vmmctl run` against
//     `kvm_ref run` and QEMU microvm in alternating runs; `vmmctl --help`.
//   - virtio (VirtioBench.swift), vsock (VsockBench.swift), snapshots
//     (SnapshotBench.swift), vmmd (DaemonBench.swift).
import ArgumentParser
import Foundation
import KVMRef
import VMM

@main
struct VMMBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmm-bench",
        abstract: "Measure swift-vmm against a C reference on raw KVM (and QEMU), in one run.",
        discussion: """
        Without a mode flag every group runs: exit path, hypercall and lifecycle; cold \
        start; virtio; vsock; vmmd. Run from the package root, after `swift build -c release`.
        """)

    @Option(help: "Alternating rounds of the separate-run figures (medians).")
    var rounds = 5
    @Option(help: "Port-I/O exits (and hypercalls) per separate run.")
    var exits: UInt32 = 100_000
    @Option(help: "VMs per lifecycle run.")
    var vms = 20
    @Option(help: "Interleaved batches of 64 requests in each virtio-blk figure (device model and plain pread/pwrite, one of each per batch).")
    var blockBatches = 400

    @Option(help: "C/Swift pairs of the interleaved figures.")
    var pairs = 40
    @Option(help: "Iterations per interleaved batch.")
    var batch: UInt32 = 5000
    @Option(name: .customLong("daemon-vms"), help: "Managed VMs of the vmmd figure.")
    var daemonVMs = 300
    @Option(help: "Clients at a time in the vmmd figure.")
    var concurrency = 8
    @Option(help: "Idle workers whose PSS the vmmd figure reports.")
    var idleWorkers = 10
    @Option(name: .customLong("idle-vms"), help: "Idle VMs under vmmd while GET /v1/vms is timed (0: skip).")
    var idleVMs = 1000
    @Option(help: "Whole-process runs of each program in the cold-start figures.")
    var coldRuns = 15

    @Flag(help: "Only the vsock figures.")
    var vsockOnly = false
    @Flag(help: "With the vsock figures: the device's and the vCPU's counters too.")
    var vsockStats = false
    @Flag(help: "Only the virtio figures.")
    var virtioOnly = false
    @Flag(help: "Only the snapshot figures (restore to the first instruction, snapshot write, QEMU -incoming, clones under vmmd).")
    var snapshotOnly = false
    @Flag(help: "Only the vmmd figures (with one C lifecycle run as their reference).")
    var daemonOnly = false
    @Flag(help: "Only the whole-process cold-start figures (vmmctl run, vmmctl --help).")
    var coldStartOnly = false
    @Flag(help: "Split the exit-path gap: C, full Machine, bare runOnce() loop on the main and on a new thread.")
    var diagnose = false
    @Flag(help: "Time one hypercall dispatch with no guest.")
    var micro = false

    /// The snapshot figures' children (a restore, or the bare KVM objects, in a fresh
    /// process) are dispatched before any parsing: they are not options of the benchmark.
    static func main() {
        let args = CommandLine.arguments.dropFirst()
        if args.first == "--restore-child" { restoreChild(Array(args.dropFirst())) }
        if args.first == "--kvm-child" { kvmChild(Array(args.dropFirst())) }
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            exit(withError: error)
        }
    }

    mutating func validate() throws {
        guard rounds > 0, exits > 0, vms > 0, pairs > 0, batch > 0, daemonVMs > 0, concurrency > 0,
              idleWorkers > 0, idleVMs >= 0, coldRuns > 0 else {
            throw ValidationError("counts must be positive")
        }
        guard [vsockOnly, virtioOnly, snapshotOnly, daemonOnly, coldStartOnly, diagnose, micro].filter({ $0 }).count <= 1 else {
            throw ValidationError("at most one of the mode flags")
        }
    }

    func run() throws {
        if micro { return microDispatch() }
        let root = FileManager.default.currentDirectoryPath
        guard FileManager.default.fileExists(atPath: root + "/Guests/build.sh") else {
            die("run from the package root (Guests/build.sh not found in \(root))")
        }
        let work = NSTemporaryDirectory() + "vmm-bench-\(getpid())"
        sh(["mkdir", "-p", work])
        defer { sh(["rm", "-rf", work]) }
        sh(["bash", root + "/Guests/build.sh", work])
        if diagnose { return try diagnoseExitPath(guest: work + "/bench.elf", pairs: pairs, batch: batch) }
        let reference = work + "/kvm_ref"
        sh(["cc", "-O2", "-Wall", "-o", reference, root + "/Benchmarks/ref/kvm_ref.c"])
        if vsockOnly { return vsockBenchmarks(work: work, root: root, rounds: rounds, megabytes: 256, connections: 500, stats: vsockStats) }
        if virtioOnly { return virtioBenchmarks(work: work, pairs: blockBatches, iterations: exits, rounds: rounds) }
        if snapshotOnly {
            return snapshotBenchmarks(work: work, runs: max(rounds, 9), clones: daemonVMs, concurrency: concurrency)
        }
        let cold = ColdStartBenchmark(work: work, reference: reference, runs: coldRuns)
        if coldStartOnly { return cold.run() }

        var cLife: [Double] = []
        if daemonOnly {
            cLife.append(field(sh([reference, "--irqchip=split", "lifecycle", work + "/exit.elf", "\(vms)"]), "ns_per_vm"))
        } else {
            cLife = try exitPathBenchmarks(work: work, reference: reference)
            cold.run()
            virtioBenchmarks(work: work, pairs: blockBatches, iterations: exits, rounds: rounds)
            vsockBenchmarks(work: work, root: root, rounds: rounds, megabytes: 256, connections: 500, stats: vsockStats)
            snapshotBenchmarks(work: work, runs: max(rounds, 9), clones: daemonVMs, concurrency: concurrency)
        }
        daemonBenchmarks(work: work, cLifecycle: median(cLife))
    }

    /// The exit-path, hypercall and lifecycle figures; returns the C lifecycle rounds.
    func exitPathBenchmarks(work: String, reference: String) throws -> [Double] {
        let benchImage = (try? [UInt8](Data(contentsOf: URL(fileURLWithPath: work + "/bench.elf")))) ?? []
        let hypercallImage = (try? [UInt8](Data(contentsOf: URL(fileURLWithPath: work + "/hypercall-ring3.elf")))) ?? []
        print("swift-vmm benchmark: \(rounds) alternating rounds, medians; C reference = Benchmarks/ref/kvm_ref.c")
        var cExit: [Double] = [], swiftExit: [Double] = [], cCall: [Double] = [], swiftCall: [Double] = []
        var cLife: [Double] = [], swiftLife: [Double] = [], cDown: [Double] = [], swiftDown: [Double] = []
        var cDownKernel: [Double] = [], swiftDownKernel: [Double] = []
        // Warm-up: page cache, KVM module paths, the Swift runtime.
        _ = try swiftExitPath(image: benchImage, exits: 1000)
        for round in 1 ... rounds {
            cExit.append(field(sh([reference, "exit-path", work + "/bench.elf", "\(exits)"]), "ns_per_exit"))
            swiftExit.append(try swiftExitPath(image: benchImage, exits: exits))
            cCall.append(field(sh([reference, "hypercall", work + "/hypercall-ring3.elf", "\(exits)"]), "ns_per_call"))
            swiftCall.append(try swiftHypercall(image: hypercallImage, calls: exits))
            // The default (split irqchip) on both sides; KVM's irqchip for its teardown alone.
            let c = sh([reference, "--irqchip=split", "lifecycle", work + "/exit.elf", "\(vms)"])
            cLife.append(field(c, "ns_per_vm")); cDown.append(field(c, "teardown_ns_per_vm"))
            let s = try swiftLifecycle(path: work + "/exit.elf", vms: vms, irqchip: .split)
            swiftLife.append(s.0); swiftDown.append(s.1)
            cDownKernel.append(field(sh([reference, "lifecycle", work + "/exit.elf", "\(vms)"]), "teardown_ns_per_vm"))
            swiftDownKernel.append(try swiftLifecycle(path: work + "/exit.elf", vms: vms, irqchip: .kernel).1)
            print(String(format: "round %d: exit C %.0f ns, Swift %.0f ns; hypercall C %.0f ns, Swift %.0f ns; lifecycle C %.2f ms, Swift %.2f ms; teardown C %.2f ms, Swift %.2f ms",
                         round, cExit[round - 1], swiftExit[round - 1], cCall[round - 1], swiftCall[round - 1],
                         cLife[round - 1] / 1e6, swiftLife[round - 1] / 1e6, cDown[round - 1] / 1e6, swiftDown[round - 1] / 1e6))
        }
        print("interleaved in one process (\(pairs) C/Swift pairs of \(batch) iterations):")
        let e = try interleaved(guest: work + "/bench.elf", hypercalls: false, pairs: pairs, batch: batch)
        print(String(format: "  exit path: C %.0f ns/exit, swift-vmm %.0f ns/exit, ratio %.3f (paired median %.3f) (target <= 1.03) %@",
                     e.2, e.3, e.0, e.1, verdict(e.0 <= 1.03)))
        let h = try interleaved(guest: work + "/hypercall-ring3.elf", hypercalls: true, pairs: pairs, batch: batch)
        print(String(format: "  hypercall round trip: C %.0f ns/call, swift-vmm %.0f ns/call, ratio %.3f (paired median %.3f) (target <= 1.05) %@",
                     h.2, h.3, h.0, h.1, verdict(h.0 <= 1.05)))

        print("separate runs, alternating rounds (medians):")
        let exitRatio = median(swiftExit) / median(cExit)
        let lifeRatio = median(swiftLife) / median(cLife)
        let callRatio = median(swiftCall) / median(cCall)
        /// The median of the per-round Swift/C ratios: rounds run back to back, so this cancels
        /// the host's slow drifts between "fast" and "slow" periods better than a ratio of medians.
        func pairedRatio(_ swift: [Double], _ c: [Double]) -> Double { median(zip(swift, c).map { $0 / $1 }) }
        print(String(format: "  exit path (port I/O, %u exits): C %.0f ns/exit, swift-vmm %.0f ns/exit, ratio %.3f (target <= 1.03) %@",
                     exits, median(cExit), median(swiftExit), exitRatio, verdict(exitRatio <= 1.03)))
        print(String(format: "  hypercall round trip (%u calls): C %.0f ns/call, swift-vmm %.0f ns/call, ratio %.3f (target <= 1.05) %@",
                     exits, median(cCall), median(swiftCall), callRatio, verdict(callRatio <= 1.05)))
        print(String(format: "  create/run/destroy (%d VMs, the split irqchip): C %.2f ms/VM, swift-vmm %.2f ms/VM, ratio %.3f (target <= 1.5) %@",
                     vms, median(cLife) / 1e6, median(swiftLife) / 1e6, lifeRatio, verdict(lifeRatio <= 1.5)))
        let down = median(swiftDown) / 1e6
        print(String(format: "  VM teardown (the split irqchip, the default): C %.3f ms, swift-vmm %.3f ms, ratio %.3f (target <= 1 ms) %@",
                     median(cDown) / 1e6, down, median(swiftDown) / median(cDown), verdict(down <= 1)))
        print(String(format: "  VM teardown with KVM's in-kernel irqchip and PIT (--irqchip kernel): C %.3f ms, swift-vmm %.3f ms",
                     median(cDownKernel) / 1e6, median(swiftDownKernel) / 1e6))
        print(String(format: "  paired per-round ratios (median): exit %.3f, hypercall %.3f, lifecycle %.3f, teardown %.3f",
                     pairedRatio(swiftExit, cExit), pairedRatio(swiftCall, cCall), pairedRatio(swiftLife, cLife),
                     pairedRatio(swiftDown, cDown)))
        return cLife
    }

    /// The vmmd figures, against the C reference's create/run/destroy rate in one process.
    func daemonBenchmarks(work: String, cLifecycle: Double) {
        print("vmmd (\(daemonVMs) managed VMs, \(concurrency) clients at a time: create hello over the API, wait for power-off, destroy):")
        let figures: DaemonBenchmark.Figures
        do {
            let done = DispatchSemaphore(value: 0)
            let box = ResultBox()
            let benchmark = DaemonBenchmark(work: work, vms: daemonVMs, concurrency: concurrency, idleWorkers: idleWorkers,
                                            idleVMs: idleVMs)
            // Detached: the main thread is about to block.
            Task.detached {
                do {
                    box.result = .success(try await benchmark.run())
                } catch {
                    box.result = .failure(error)
                }
                done.signal()
            }
            done.wait()
            guard let result = box.result else { die("the daemon benchmark did not finish") }
            figures = try result.get()
        } catch {
            die("daemon benchmark: \(error)")
        }
        let cVMsPerSecond = 1e9 / cLifecycle
        print(String(format: "  %.0f VMs/s (target >= 400) %@; C reference create/run/destroy in one process, one at a time: %.0f VMs/s (ratio %.2f)",
                     figures.vmsPerSecond, verdict(figures.vmsPerSecond >= 400), cVMsPerSecond,
                     figures.vmsPerSecond / cVMsPerSecond))
        print(String(format: "  latency create -> destroyed: p50 %.1f ms, p99 %.1f ms; create -> running (the create call): p50 %.1f ms (target <= 5) %@, p99 %.1f ms",
                     figures.p50, figures.p99, figures.createP50, verdict(figures.createP50 <= 5), figures.createP99))
        print(String(format: "  create -> running with one client at a time (30 VMs, before the run above): p50 %.1f ms (target <= 5) %@; with %d clients the rest is queueing behind the other VMs on 2 cores",
                     figures.soloCreateP50, verdict(figures.soloCreateP50 <= 5), concurrency))
        print(String(format: "  worker memory beyond guest RAM: RSS %.2f MiB (target <= 4) %@; private dirty %.2f MiB; PSS %.2f MiB each with %d idle workers",
                     Double(figures.rssOverheadKiB) / 1024, verdict(figures.rssOverheadKiB <= 4096),
                     Double(figures.privateKiB) / 1024, Double(figures.pssKiB) / 1024, idleWorkers))
        do {
            let bin = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
            let start = try DaemonStartBenchmark(vmmd: bin + "/vmmd", work: work, runs: 15).run()
            print(String(format: "  vmmd start to API socket ready (median of %d): %.2f ms of CPU (target <= 8) %@, %.2f ms wall",
                         start.cpuMs.count, median(start.cpuMs), verdict(median(start.cpuMs) <= 8), median(start.wallMs)))
        } catch {
            print("  vmmd start to API socket ready: not measured: \(error)")
        }
        if idleVMs > 0 {
            print(String(format: "  %d idle VMs: GET /v1/vms %.1f ms (target <= 50) %@, the first (every VM encoded) %.1f ms; created in %.0f ms, destroyed in %.0f ms; workers left %d",
                         idleVMs, figures.listMs, verdict(figures.listMs <= 50), figures.firstListMs, figures.createAllMs,
                         figures.destroyAllMs, figures.workersLeft))
        }
    }
}

func verdict(_ met: Bool) -> String { met ? "MET" : "MISSED" }

final class ResultBox: @unchecked Sendable {
    var result: Result<DaemonBenchmark.Figures, Error>?
}
