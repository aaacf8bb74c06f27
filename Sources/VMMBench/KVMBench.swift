// The exit-path, hypercall and lifecycle figures: swift-vmm against the C reference
// (Benchmarks/ref/kvm_ref.c), in separate runs and interleaved in one process.
import Boot
import Devices
import Foundation
import Synchronization
import GuestMemory
import Hypercalls
import KVM
import KVMRef
import VMM

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

/// ns per VM for the whole create → run → destroy, and ns per VM for the destroy alone
/// (the last reference to the Machine dropped: vCPU, VM and memory fds closed).
func swiftLifecycle(path: String, vms: Int, irqchip: IRQChipMode) throws -> (Double, Double) {
    var teardown: UInt64 = 0
    let t0 = now()
    for _ in 0 ..< vms {
        var config = MachineConfig()
        config.memoryMiB = 64
        config.kernel = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        config.debugExit = true
        config.irqchip = irqchip
        var machine: Machine? = try Machine(config: config, kvm: KVMSystem())
        let reason = try machine?.run()
        guard reason == .debugExit(value: 0x21) else { die("exit guest stopped with: \(String(describing: reason))") }
        let d0 = now()
        machine = nil
        teardown += now() - d0
    }
    return (Double(now() - t0) / Double(vms), Double(teardown) / Double(vms))
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


// MARK: - Diagnostics

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

/// `--diagnose`, interleaved: C, full Machine, bare runOnce() loop on this thread, bare
/// loop on a new thread.
func diagnoseExitPath(guest: String, pairs: Int, batch: UInt32) throws {
    guard let ref = kvmref_open(guest, 0) else { die("kvmref_open") }
    var config = MachineConfig()
    config.memoryMiB = 64
    config.kernel = try [UInt8](Data(contentsOf: URL(fileURLWithPath: guest)))
    config.debugExit = true
    let full = try Machine(config: config)
    let bare = try Machine(config: config)
    var c: [Double] = [], f: [Double] = [], b: [Double] = [], t: [Double] = []
    for _ in 0 ..< pairs {
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
}

/// `--micro`: the host-side cost of one hypercall dispatch, no guest involved.
func microDispatch() {
    final class NoEnv: HypercallEnvironment, @unchecked Sendable {
        let vmName = "x"
        func consoleWrite(_ bytes: [UInt8]) {}
        func requestPowerOff() {}
        func requestReset() {}
        func guestLog(level: Int, message: String, vcpu: UInt32) {}
    }
    let registry = HypercallRegistry()
    let env = NoEnv()
    do { try BuiltinHypercalls.register(into: registry, environment: env) } catch { die("\(error)") }
    registry.seal()
    guard let memory = try? GuestMemory.create(ramSize: 4 << 20) else { die("cannot create guest memory") }
    var sink: Int64 = 0
    let n = 1_000_000
    let t0 = now()
    for i in 0 ..< n {
        if case .result(let v) = registry.dispatch(HypercallRequest(number: 0, rbx: UInt64(i), rcx: 0, rsi: 0, rdi: 0, ring: 3, vcpu: 0), memory: memory) { sink &+= v }
    }
    print("dispatch: \(Double(now() - t0) / Double(n)) ns per call (\(sink))")
}
