// vmm-bench: swift-vmm against a C program on raw KVM, in one run.
//
// Build in release mode and run from the package root:
//     swift run -c release vmm-bench [--pairs P] [--batch B] [--rounds R] [--exits N] [--vms K]
//
// It builds the test guests (Guests/build.sh) and the C reference
// (Benchmarks/ref/kvm_ref.c, also linked in as the KVMRef library) and measures:
//   1. interleaved in this process: C and Swift batches alternate every ~50 ms, so both
//      see the same host conditions — the figures to quote;
//   2. separate runs: the kvm_ref program and swift-vmm in alternating rounds (medians).
// `--vsock-only` runs just the vsock figures (VsockBench.swift): throughput both ways
// and connections per second through the hybrid socket, against two host processes on
// a plain Unix socket (Benchmarks/ref/unix_copy.c).
// `--snapshot-only` runs just the snapshot figures (SnapshotBench.swift): restore to the
// first instruction in a fresh process (targets <= 5 ms, ours <= 1 ms), snapshot write
// against `cp --sparse=always` (<= 1.5x), QEMU's -incoming from a file (>= 10x slower),
// clones per second under vmmd (>= 200).
// `--virtio-only` runs just the virtio figures (VirtioBench.swift): the block path with
// no guest against pread/pwrite (targets <= 1.15 reads, <= 1.25 writes) and the cost of
// a queue notification and an interrupt through each path.
// `--diagnose` splits the exit-path gap (C, full Machine, bare runOnce() loop on the main
// and on a new thread); `--micro` times one hypercall dispatch with no guest.
//
//   - exit path: ns per port-I/O exit, a ring-3 guest loop of `out` to port 0x80, through
//     the full swift-vmm path (vCPU runner, exit decode, port bus, POST-code device)
//     against C handling the same exit inline. Target ≤ 1.03 × C.
//   - hypercall: round trip of the `abi_info` hypercall from a ring-3 loop (guest →
//     doorbell exit → registers read, dispatched, RAX written → guest), against C doing
//     the same with the same sync-regs mechanism. Target ≤ 1.05 × C.
//   - lifecycle: create VM (64 MiB, irqchip, PIT, 1 vCPU) → boot exit.elf → run to its
//     debug-exit → destroy, in process. Target ≤ 1.5 × C.
import Boot
import Devices
import Foundation
import Synchronization
import GuestMemory
import Hypercalls
import KVM
import KVMRef
import VMM

struct Options {
    var rounds = 5
    var exits: UInt32 = 100_000
    var vms = 20
    var pairs = 40
    var batch: UInt32 = 5000
    var daemonVMs = 300
    var concurrency = 8

    init(_ args: [String]) {
        var i = 0
        while i + 1 < args.count {
            switch args[i] {
            case "--rounds": rounds = max(1, Int(args[i + 1]) ?? rounds)
            case "--exits": exits = max(1, UInt32(args[i + 1]) ?? exits)
            case "--vms": vms = max(1, Int(args[i + 1]) ?? vms)
            case "--pairs": pairs = max(1, Int(args[i + 1]) ?? pairs)
            case "--batch": batch = max(1, UInt32(args[i + 1]) ?? batch)
            case "--daemon-vms": daemonVMs = max(1, Int(args[i + 1]) ?? daemonVMs)
            case "--concurrency": concurrency = max(1, Int(args[i + 1]) ?? concurrency)
            default: break
            }
            i += 2
        }
    }
}

func die(_ message: String) -> Never {
    FileHandle.standardError.write(Data("vmm-bench: \(message)\n".utf8))
    exit(2)
}

@discardableResult
func sh(_ args: [String]) -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = args
    let pipe = Pipe()
    p.standardOutput = pipe
    do { try p.run() } catch { die("cannot run \(args[0]): \(error)") }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { die("\(args.joined(separator: " ")) exited with \(p.terminationStatus)") }
    return String(decoding: data, as: UTF8.self)
}

func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

func median(_ values: [Double]) -> Double {
    let s = values.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// The number after `key=` in the C reference's output line.
func field(_ line: String, _ key: String) -> Double {
    for part in line.split(whereSeparator: { $0 == " " || $0 == "\n" }) where part.hasPrefix(key + "=") {
        if let v = Double(part.dropFirst(key.count + 1)) { return v }
    }
    die("no \(key) in C reference output: \(line)")
}

// MARK: - Swift side

func swiftExitPath(image: [UInt8], exits: UInt32) throws -> Double {
    var config = MachineConfig()
    config.memoryMiB = 64
    config.kernel = image
    config.debugExit = true
    let machine = try Machine(config: config)
    try machine.memory.writeInteger(exits, at: GuestAddress(0x9000))
    let t0 = now()
    let reason = try machine.run()
    let t1 = now()
    guard reason == .debugExit(value: 0) else { die("bench guest stopped with: \(reason)") }
    let seen = machine.postCode.writes.load(ordering: .relaxed)
    guard seen == UInt64(exits) else { die("POST-code device saw \(seen) writes, expected \(exits)") }
    return Double(t1 - t0) / Double(exits)
}

func swiftHypercall(image: [UInt8], calls: UInt32) throws -> Double {
    var config = MachineConfig()
    config.memoryMiB = 64
    config.kernel = image
    config.debugExit = true
    config.hypercalls = true
    let machine = try Machine(config: config)
    try machine.memory.writeInteger(calls, at: GuestAddress(0x9000))
    let t0 = now()
    let reason = try machine.run()
    let t1 = now()
    guard reason == .debugExit(value: 0) else { die("hypercall guest stopped with: \(reason)") }
    let made = machine.statistics().hypercalls.first { $0.name == "abi_info" }?.count ?? 0
    guard made == UInt64(calls) + 1 else { die("abi_info ran \(made) times, expected \(calls + 1)") }
    return Double(t1 - t0) / Double(calls)
}

func swiftLifecycle(path: String, vms: Int) throws -> Double {
    let t0 = now()
    for _ in 0 ..< vms {
        var config = MachineConfig()
        config.memoryMiB = 64
        config.kernel = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        config.debugExit = true
        let machine = try Machine(config: config, kvm: KVMSystem())
        let reason = try machine.run()
        guard reason == .debugExit(value: 0x21) else { die("exit guest stopped with: \(reason)") }
    }
    return Double(now() - t0) / Double(vms)
}

// MARK: - Interleaved batches

/// C and Swift batches of `batch` iterations, alternating (and alternating which goes
/// first) inside this process, so both see the same host conditions at a 50 ms grain.
/// Returns (sum Swift / sum C, median of per-pair ratios, C ns/iteration, Swift ns/iteration).
func interleaved(guest: String, hypercalls: Bool, pairs: Int, batch: UInt32) throws -> (Double, Double, Double, Double) {
    guard let ref = kvmref_open(guest, hypercalls ? 1 : 0) else { die("kvmref_open failed") }
    defer { kvmref_close(ref) }
    var config = MachineConfig()
    config.memoryMiB = 64
    config.kernel = try [UInt8](Data(contentsOf: URL(fileURLWithPath: guest)))
    config.debugExit = true
    config.hypercalls = hypercalls
    let machine = try Machine(config: config)
    func swiftBatch() throws -> Double {
        try machine.reset()
        try machine.memory.writeInteger(batch, at: GuestAddress(0x9000))
        let t0 = now()
        let reason = try machine.run()
        let t1 = now()
        guard reason == .debugExit(value: 0) else { die("Swift batch stopped with: \(reason)") }
        return Double(t1 - t0)
    }
    func cBatch() -> Double { Double(kvmref_run_batch(ref, batch)) }
    _ = cBatch(); _ = try swiftBatch()  // warm-up
    var c: [Double] = [], swift: [Double] = []
    for i in 0 ..< pairs {
        if i % 2 == 0 {
            c.append(cBatch()); swift.append(try swiftBatch())
        } else {
            swift.append(try swiftBatch()); c.append(cBatch())
        }
    }
    let n = Double(batch) * Double(pairs)
    return (swift.reduce(0, +) / c.reduce(0, +), median(zip(swift, c).map { $0 / $1 }),
            c.reduce(0, +) / n, swift.reduce(0, +) / n)
}

// MARK: - Main

let options = Options(Array(CommandLine.arguments.dropFirst()))
// Children of the snapshot benchmark: a restore (or the bare KVM objects) in a fresh process.
if CommandLine.arguments.dropFirst().first == "--restore-child" { restoreChild(Array(CommandLine.arguments.dropFirst(2))) }
if CommandLine.arguments.dropFirst().first == "--kvm-child" { kvmChild(Array(CommandLine.arguments.dropFirst(2))) }
/// Diagnostic: a bare runOnce() loop over a Machine's vCPU, with the POST-code device call.
func bareLoop(_ m: Machine, _ batch: UInt32) throws -> Double {
    try m.reset()
    try m.memory.writeInteger(batch, at: GuestAddress(0x9000))
    let vcpu = m.vcpus[0].vcpu
    let t0 = now()
    loop: while true {
        if case .io(let io) = try vcpu.runOnce() {
            if io.port == 0x80 { m.postCode.write(offset: 0, size: 1, value: vcpu.ioValue(io)) }
            if io.port == 0xF4 { break loop }
        }
    }
    return Double(now() - t0)
}

if CommandLine.arguments.contains("--diagnose") {
    // Interleaved: C, full Machine, bare runOnce() loop on this thread, bare loop on a new thread.
    let root = FileManager.default.currentDirectoryPath
    let work = NSTemporaryDirectory() + "vmm-bench-diag-\(getpid())"
    sh(["mkdir", "-p", work]); sh(["bash", root + "/Guests/build.sh", work])
    let guest = work + "/bench.elf"
    guard let ref = kvmref_open(guest, 0) else { die("kvmref_open") }
    var config = MachineConfig()
    config.memoryMiB = 64
    config.kernel = try [UInt8](Data(contentsOf: URL(fileURLWithPath: guest)))
    config.debugExit = true
    let full = try Machine(config: config)
    let bare = try Machine(config: config)
    let batch = options.batch
    var c: [Double] = [], f: [Double] = [], b: [Double] = [], t: [Double] = []
    for _ in 0 ..< options.pairs {
        c.append(Double(kvmref_run_batch(ref, batch)))
        try full.reset(); try full.memory.writeInteger(batch, at: GuestAddress(0x9000))
        let t0 = now(); _ = try full.run(); f.append(Double(now() - t0))
        b.append(try bareLoop(bare, batch))
        let box = Mutex<Double>(0)
        let th = try HostThread(name: "diag") { let v = (try? bareLoop(bare, batch)) ?? 0; box.withLock { $0 = v } }
        th.join()
        t.append(box.withLock { $0 })
    }
    func r(_ x: [Double]) -> Double { median(zip(x, c).map { $0 / $1 }) }
    print(String(format: "paired medians vs C: full Machine %.3f, bare loop main thread %.3f, bare loop new thread %.3f (C %.0f ns/exit)",
                 r(f), r(b), r(t), median(c) / Double(batch)))
    exit(0)
}
if CommandLine.arguments.contains("--micro") {
    // Host-side cost of one hypercall dispatch, no guest involved.
    final class NoEnv: HypercallEnvironment, @unchecked Sendable {
        let vmName = "x"
        func consoleWrite(_ bytes: [UInt8]) {}
        func requestPowerOff() {}
        func requestReset() {}
        func guestLog(level: Int, message: String, vcpu: UInt32) {}
    }
    let registry = HypercallRegistry()
    let env = NoEnv()
    try BuiltinHypercalls.register(into: registry, environment: env)
    registry.seal()
    let memory = try GuestMemory.create(ramSize: 4 << 20)
    var sink: Int64 = 0
    let n = 1_000_000
    let t0 = now()
    for i in 0 ..< n {
        if case .result(let v) = registry.dispatch(HypercallRequest(number: 0, rbx: UInt64(i), rcx: 0, rsi: 0, rdi: 0, ring: 3, vcpu: 0), memory: memory) { sink &+= v }
    }
    print("dispatch: \(Double(now() - t0) / Double(n)) ns per call (\(sink))")
    exit(0)
}
let root = FileManager.default.currentDirectoryPath
guard FileManager.default.fileExists(atPath: root + "/Guests/build.sh") else {
    die("run from the package root (Guests/build.sh not found in \(root))")
}
let work = NSTemporaryDirectory() + "vmm-bench-\(getpid())"
sh(["mkdir", "-p", work])
sh(["bash", root + "/Guests/build.sh", work])
let reference = work + "/kvm_ref"
sh(["cc", "-O2", "-Wall", "-o", reference, root + "/Benchmarks/ref/kvm_ref.c"])
if CommandLine.arguments.contains("--vsock-only") {
    vsockBenchmarks(work: work, root: root, rounds: options.rounds, megabytes: 256, connections: 500)
    sh(["rm", "-rf", work])
    exit(0)
}
if CommandLine.arguments.contains("--snapshot-only") {
    snapshotBenchmarks(work: work, runs: max(options.rounds, 9), clones: options.daemonVMs, concurrency: options.concurrency)
    sh(["rm", "-rf", work])
    exit(0)
}
if CommandLine.arguments.contains("--virtio-only") {
    virtioBenchmarks(work: work, pairs: options.pairs, iterations: options.exits, rounds: options.rounds)
    sh(["rm", "-rf", work])
    exit(0)
}
let benchImage = (try? [UInt8](Data(contentsOf: URL(fileURLWithPath: work + "/bench.elf")))) ?? []
let hypercallImage = (try? [UInt8](Data(contentsOf: URL(fileURLWithPath: work + "/hypercall-ring3.elf")))) ?? []

var cExit: [Double] = [], swiftExit: [Double] = [], cLife: [Double] = [], swiftLife: [Double] = []
/// `--daemon-only`: just the vmmd figures (with one C lifecycle run as their reference).
let daemonOnly = CommandLine.arguments.contains("--daemon-only")
if daemonOnly {
    cLife.append(field(sh([reference, "lifecycle", work + "/exit.elf", "\(options.vms)"]), "ns_per_vm"))
} else {
    print("swift-vmm benchmark: \(options.rounds) alternating rounds, medians; C reference = Benchmarks/ref/kvm_ref.c")
    var cCall: [Double] = [], swiftCall: [Double] = []
    do {
        // Warm-up: page cache, KVM module paths, the Swift runtime.
        _ = try swiftExitPath(image: benchImage, exits: 1000)
        for round in 1 ... options.rounds {
            cExit.append(field(sh([reference, "exit-path", work + "/bench.elf", "\(options.exits)"]), "ns_per_exit"))
            swiftExit.append(try swiftExitPath(image: benchImage, exits: options.exits))
            cCall.append(field(sh([reference, "hypercall", work + "/hypercall-ring3.elf", "\(options.exits)"]), "ns_per_call"))
            swiftCall.append(try swiftHypercall(image: hypercallImage, calls: options.exits))
            cLife.append(field(sh([reference, "lifecycle", work + "/exit.elf", "\(options.vms)"]), "ns_per_vm"))
            swiftLife.append(try swiftLifecycle(path: work + "/exit.elf", vms: options.vms))
            print(String(format: "round %d: exit C %.0f ns, Swift %.0f ns; hypercall C %.0f ns, Swift %.0f ns; lifecycle C %.2f ms, Swift %.2f ms",
                         round, cExit[round - 1], swiftExit[round - 1], cCall[round - 1], swiftCall[round - 1],
                         cLife[round - 1] / 1e6, swiftLife[round - 1] / 1e6))
        }
    } catch {
        die("\(error)")
    }
    print("interleaved in one process (\(options.pairs) C/Swift pairs of \(options.batch) iterations):")
    do {
        let e = try interleaved(guest: work + "/bench.elf", hypercalls: false, pairs: options.pairs, batch: options.batch)
        print(String(format: "  exit path: C %.0f ns/exit, swift-vmm %.0f ns/exit, ratio %.3f (paired median %.3f) (target <= 1.03) %@",
                     e.2, e.3, e.0, e.1, e.0 <= 1.03 ? "MET" : "MISSED"))
        let h = try interleaved(guest: work + "/hypercall-ring3.elf", hypercalls: true, pairs: options.pairs, batch: options.batch)
        print(String(format: "  hypercall round trip: C %.0f ns/call, swift-vmm %.0f ns/call, ratio %.3f (paired median %.3f) (target <= 1.05) %@",
                     h.2, h.3, h.0, h.1, h.0 <= 1.05 ? "MET" : "MISSED"))
    } catch {
        die("\(error)")
    }
    print("separate runs, alternating rounds (medians):")
    let exitRatio = median(swiftExit) / median(cExit)
    let lifeRatio = median(swiftLife) / median(cLife)
    let callRatio = median(swiftCall) / median(cCall)
    /// The median of the per-round Swift/C ratios: rounds run back to back, so this cancels
    /// the host's slow drifts between "fast" and "slow" periods better than a ratio of medians.
    func pairedRatio(_ swift: [Double], _ c: [Double]) -> Double { median(zip(swift, c).map { $0 / $1 }) }
    print(String(format: "  exit path (port I/O, %u exits): C %.0f ns/exit, swift-vmm %.0f ns/exit, ratio %.3f (target <= 1.03) %@",
                 options.exits, median(cExit), median(swiftExit), exitRatio, exitRatio <= 1.03 ? "MET" : "MISSED"))
    print(String(format: "  hypercall round trip (%u calls): C %.0f ns/call, swift-vmm %.0f ns/call, ratio %.3f (target <= 1.05) %@",
                 options.exits, median(cCall), median(swiftCall), callRatio, callRatio <= 1.05 ? "MET" : "MISSED"))
    print(String(format: "  create/run/destroy (%d VMs): C %.2f ms/VM, swift-vmm %.2f ms/VM, ratio %.3f (target <= 1.5) %@",
                 options.vms, median(cLife) / 1e6, median(swiftLife) / 1e6, lifeRatio, lifeRatio <= 1.5 ? "MET" : "MISSED"))
    print(String(format: "  paired per-round ratios (median): exit %.3f, hypercall %.3f, lifecycle %.3f",
                 pairedRatio(swiftExit, cExit), pairedRatio(swiftCall, cCall), pairedRatio(swiftLife, cLife)))

}

if !daemonOnly {
    virtioBenchmarks(work: work, pairs: options.pairs, iterations: options.exits, rounds: options.rounds)
    vsockBenchmarks(work: work, root: root, rounds: options.rounds, megabytes: 256, connections: 500)
    snapshotBenchmarks(work: work, runs: max(options.rounds, 9), clones: options.daemonVMs, concurrency: options.concurrency)
}

// MARK: - The daemon

print("vmmd (\(options.daemonVMs) managed VMs, \(options.concurrency) clients at a time: create hello over the API, wait for power-off, destroy):")
let daemonFigures: DaemonBenchmark.Figures
do {
    let done = DispatchSemaphore(value: 0)
    let box = ResultBox()
    // Detached: top-level code is main-actor code, and the main thread is about to block.
    Task.detached {
        do {
            box.result = .success(try await DaemonBenchmark(work: work, vms: options.daemonVMs, concurrency: options.concurrency).run())
        } catch {
            box.result = .failure(error)
        }
        done.signal()
    }
    done.wait()
    guard let result = box.result else { die("the daemon benchmark did not finish") }
    daemonFigures = try result.get()
} catch {
    die("daemon benchmark: \(error)")
}
let cVMsPerSecond = 1e9 / median(cLife)
print(String(format: "  %.0f VMs/s (target >= 100) %@; C reference create/run/destroy in one process, one at a time: %.0f VMs/s (ratio %.2f)",
             daemonFigures.vmsPerSecond, daemonFigures.vmsPerSecond >= 100 ? "MET" : "MISSED", cVMsPerSecond,
             daemonFigures.vmsPerSecond / cVMsPerSecond))
print(String(format: "  latency create -> destroyed: p50 %.1f ms, p99 %.1f ms; the create call alone: p50 %.1f ms, p99 %.1f ms",
             daemonFigures.p50, daemonFigures.p99, daemonFigures.createP50, daemonFigures.createP99))
print(String(format: "  worker memory beyond guest RAM: RSS %.2f MiB (target <= 4) %@; private dirty %.2f MiB; PSS with two workers %.2f MiB",
             Double(daemonFigures.rssOverheadKiB) / 1024, daemonFigures.rssOverheadKiB <= 4096 ? "MET" : "MISSED",
             Double(daemonFigures.privateKiB) / 1024, Double(daemonFigures.pssKiB) / 1024))
sh(["rm", "-rf", work])

final class ResultBox: @unchecked Sendable {
    var result: Result<DaemonBenchmark.Figures, Error>?
}
