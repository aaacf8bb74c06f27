// vmm-bench: swift-vmm against a C program on raw KVM, in one run.
//
// Build in release mode and run from the package root:
//     swift run -c release vmm-bench [--rounds R] [--exits N] [--vms K]
//
// It builds the test guests (Guests/build.sh) and the C reference
// (Benchmarks/ref/kvm_ref.c) with the system cc, then alternates C and Swift rounds so
// both see the same machine conditions, and prints medians and ratios:
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
import GuestMemory
import Hypercalls
import KVM
import VMM

struct Options {
    var rounds = 5
    var exits: UInt32 = 100_000
    var vms = 20

    init(_ args: [String]) {
        var i = 0
        while i + 1 < args.count {
            switch args[i] {
            case "--rounds": rounds = max(1, Int(args[i + 1]) ?? rounds)
            case "--exits": exits = max(1, UInt32(args[i + 1]) ?? exits)
            case "--vms": vms = max(1, Int(args[i + 1]) ?? vms)
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

/// Diagnostic: the same VM driven by a bare `runOnce()` loop on the calling thread, with
/// no runner, dispatcher or bus: how much of the gap to C is the VMM's layers.
func swiftRawExitPath(image: [UInt8], exits: UInt32) throws -> Double {
    var config = MachineConfig()
    config.memoryMiB = 64
    config.kernel = image
    config.debugExit = true
    let machine = try Machine(config: config)
    try machine.memory.writeInteger(exits, at: GuestAddress(0x9000))
    let vcpu = machine.vcpus[0].vcpu
    var posts: UInt64 = 0
    let t0 = now()
    loop: while true {
        switch try vcpu.runOnce() {
        case .io(let io) where io.port == 0x80: posts += 1
        case .io(let io) where io.port == 0xF4: break loop
        case .io, .interrupted: continue
        case let other: die("raw loop: unexpected exit \(other)")
        }
    }
    let t1 = now()
    guard posts == UInt64(exits) else { die("raw loop saw \(posts) POST writes") }
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

// MARK: - Main

let options = Options(Array(CommandLine.arguments.dropFirst()))
if CommandLine.arguments.contains("--raw") {
    // C, full swift-vmm, raw Swift loop, alternating: where does the time go?
    let root = FileManager.default.currentDirectoryPath
    let work = NSTemporaryDirectory() + "vmm-bench-raw-\(getpid())"
    sh(["mkdir", "-p", work]); sh(["bash", root + "/Guests/build.sh", work])
    sh(["cc", "-O2", "-o", work + "/kvm_ref", root + "/Benchmarks/ref/kvm_ref.c"])
    let image = try [UInt8](Data(contentsOf: URL(fileURLWithPath: work + "/bench.elf")))
    var c: [Double] = [], full: [Double] = [], raw: [Double] = []
    for _ in 0 ..< options.rounds {
        c.append(field(sh([work + "/kvm_ref", "exit-path", work + "/bench.elf", "\(options.exits)"]), "ns_per_exit"))
        full.append(try swiftExitPath(image: image, exits: options.exits))
        raw.append(try swiftRawExitPath(image: image, exits: options.exits))
    }
    print(String(format: "medians: C %.0f, swift-vmm %.0f, raw Swift loop %.0f ns/exit; paired full/C %.3f, raw/C %.3f, full/raw %.3f",
                 median(c), median(full), median(raw), median(zip(full, c).map { $0 / $1 }),
                 median(zip(raw, c).map { $0 / $1 }), median(zip(full, raw).map { $0 / $1 })))
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
let benchImage = (try? [UInt8](Data(contentsOf: URL(fileURLWithPath: work + "/bench.elf")))) ?? []
let hypercallImage = (try? [UInt8](Data(contentsOf: URL(fileURLWithPath: work + "/hypercall-ring3.elf")))) ?? []

print("swift-vmm benchmark: \(options.rounds) alternating rounds, medians; C reference = Benchmarks/ref/kvm_ref.c")
var cExit: [Double] = [], swiftExit: [Double] = [], cLife: [Double] = [], swiftLife: [Double] = []
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
let exitRatio = median(swiftExit) / median(cExit)
let lifeRatio = median(swiftLife) / median(cLife)
let callRatio = median(swiftCall) / median(cCall)
/// The median of the per-round Swift/C ratios: rounds run back to back, so this cancels
/// the host's slow drifts between "fast" and "slow" periods better than a ratio of medians.
func pairedRatio(_ swift: [Double], _ c: [Double]) -> Double { median(zip(swift, c).map { $0 / $1 }) }
print(String(format: "exit path (port I/O, %u exits): C %.0f ns/exit, swift-vmm %.0f ns/exit, ratio %.3f (target <= 1.03) %@",
             options.exits, median(cExit), median(swiftExit), exitRatio, exitRatio <= 1.03 ? "MET" : "MISSED"))
print(String(format: "hypercall round trip (%u calls): C %.0f ns/call, swift-vmm %.0f ns/call, ratio %.3f (target <= 1.05) %@",
             options.exits, median(cCall), median(swiftCall), callRatio, callRatio <= 1.05 ? "MET" : "MISSED"))
print(String(format: "create/run/destroy (%d VMs): C %.2f ms/VM, swift-vmm %.2f ms/VM, ratio %.3f (target <= 1.5) %@",
             options.vms, median(cLife) / 1e6, median(swiftLife) / 1e6, lifeRatio, lifeRatio <= 1.5 ? "MET" : "MISSED"))
print(String(format: "paired per-round ratios (median): exit %.3f, hypercall %.3f, lifecycle %.3f",
             pairedRatio(swiftExit, cExit), pairedRatio(swiftCall, cCall), pairedRatio(swiftLife, cLife)))
sh(["rm", "-rf", work])
