import CSys
import Devices
import Foundation
import GuestMemory
import KVM
import Snapshot
import VMM

// Snapshot figures (issue 14): restore to the guest's first instruction in a fresh
// process, snapshot write against `cp --sparse=always`, clones per second under vmmd,
// and QEMU's incoming migration from a file with the same guest. The guest is
// Guests/touch.S in 1 GiB of RAM: it writes 64 MiB, then polls COM1; the snapshot is
// taken with a byte already in the UART, so the restored guest's first instructions end
// it (isa-debug-exit).

/// CLOCK_MONOTONIC in ns: the same clock in every process, so a child's timestamps
/// compare with its parent's.
func monotonic() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
}

/// `vmm-bench --restore-child DIR cow|copy`: restores the snapshot in this fresh process,
/// runs it to the guest's first exit and prints when each step ended.
func restoreChild(_ args: [String]) -> Never {
    let started = monotonic()
    IoctlClock.start()
    guard args.count == 2 else { die("usage: --restore-child DIR cow|copy") }
    var options = RestoreOptions()
    options.memory = args[1] == "copy" ? .copy : .copyOnWrite
    do {
        let machine = try Machine.restore(from: args[0], options: options)
        let restored = monotonic()
        try machine.start()
        let reason = try machine.waitForStop()
        let first = monotonic()
        let inKernel = IoctlClock.spent
        print("start_ns=\(started) restore_ns=\(restored - started) first_ns=\(first - started) at_first=\(first) status=\(reason.exitStatus) kvm_ns=\(inKernel.kvm) run_ns=\(inKernel.run)")
        // The machine lives until here: released after its last use, its teardown (KVM's
        // VM release, unmapping guest memory) would run before `first` was read.
        withExtendedLifetime(machine) {}
    } catch {
        die("restore: \(error)")
    }
    exit(0)
}

/// `vmm-bench --kvm-child CPUS MIB`: the kernel's part of a restore in a fresh process —
/// KVM_CREATE_VM and KVM_CREATE_VCPU — and, apart, the rest of what KVM builds for it:
/// the memory slot (KVM's per-page metadata for MIB of RAM), the in-kernel irqchip and PIT.
func kvmChild(_ args: [String]) -> Never {
    let cpus = args.first.flatMap(Int.init) ?? 1
    let mib = args.dropFirst().first.flatMap(UInt64.init) ?? 1024
    do {
        let kvm = try KVMSystem()
        let t0 = monotonic()
        let vm = try kvm.createVM()
        let t1 = monotonic()
        let memory = try GuestMemory.create(ramSize: mib << 20)
        let t2 = monotonic()
        for (slot, segment) in memory.segments.enumerated() {
            try vm.setMemoryRegion(slot: UInt32(slot), guestAddress: segment.guestBase.raw, size: segment.size,
                                   hostAddress: segment.hostAddress, flags: .logDirtyPages)
        }
        let t3 = monotonic()
        // The interrupt controllers a restored machine of the default configuration gets.
        switch MachineConfig().irqchip {
        case .kernel:
            try vm.createIRQChip()
            try vm.createPIT()
        case .split:
            try vm.enableSplitIRQChip(ioapicPins: UInt32(IOAPIC.pinCount))
        }
        let t4 = monotonic()
        let vcpus = try (0 ..< cpus).map { try vm.createVCPU(id: UInt32($0)) }
        let t5 = monotonic()
        print("kernel_ns=\((t1 - t0) + (t5 - t4)) memslot_ns=\(t3 - t2) irqchip_ns=\(t4 - t3) vcpus=\(vcpus.count)")
    } catch {
        die("kvm: \(error)")
    }
    exit(0)
}

/// Milliseconds from spawning `vmmctl run --restore DIR` to its exit (the guest's status
/// 33), what a user of the CLI waits for; nil without a release vmmctl beside vmm-bench.
func wholeVMMCtlRestore(_ directory: String) -> Double? {
    let vmmctl = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path + "/vmmctl"
    guard FileManager.default.isExecutableFile(atPath: vmmctl) else { return nil }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: vmmctl)
    p.arguments = ["run", "--restore", directory]
    // Timed to the end of its output (the pipe closes as it exits): Process's
    // waitUntilExit alone polls, and added ~50 ms here.
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    let t0 = monotonic()
    do { try p.run() } catch { return nil }
    _ = pipe.fileHandleForReading.readDataToEndOfFile()
    let t1 = monotonic()
    p.waitUntilExit()
    guard p.terminationStatus == 33 else { die("vmmctl run --restore \(directory) ended with \(p.terminationStatus)") }
    return Double(t1 - t0) / 1e6
}

/// Runs `vmm-bench ARGS` and returns its output line and when it was spawned.
func child(_ args: [String]) -> (String, UInt64) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
    p.arguments = args
    let pipe = Pipe()
    p.standardOutput = pipe
    let spawned = monotonic()
    do { try p.run() } catch { die("cannot run a child: \(error)") }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { die("child \(args) exited with \(p.terminationStatus)") }
    return (String(decoding: data, as: UTF8.self), spawned)
}

func snapshotBenchmarks(work: String, runs: Int, clones: Int, concurrency: Int) {
    let dir = work + "/snapshots"
    sh(["mkdir", "-p", dir])
    let touch = work + "/touch.elf"
    print("snapshots (Guests/touch.S: 1 GiB guest that wrote 64 MiB; medians of \(runs) runs):")
    let base = dir + "/base"
    var writes: [Double] = [], copies: [Double] = []
    var written: UInt64 = 0
    do {
        var config = MachineConfig()
        config.memoryMiB = 1024
        config.kernel = try [UInt8](Data(contentsOf: URL(fileURLWithPath: touch)))
        config.debugExit = true
        let machine = try Machine(config: config)
        try machine.start()
        let deadline = Date().addingTimeInterval(60)
        while machine.postCode.lastCode != 0x55, Date() < deadline { usleep(1000) }
        guard machine.postCode.lastCode == 0x55 else { die("the touch guest did not get ready") }
        machine.pause()
        machine.serial.enqueueInput([0x0A])   // what ends the restored guest at once
        var options = SnapshotOptions()
        options.sync = false   // as cp: both leave the data in the page cache
        _ = try machine.snapshot(to: base, options: options)
        for i in 0 ..< runs {
            sh(["sync"])
            let t0 = monotonic()
            let s = try machine.snapshot(to: dir + "/w\(i)", options: options)
            writes.append(Double(monotonic() - t0))
            written = s.memoryBytesWritten
            sh(["rm", "-rf", dir + "/w\(i)"])
            sh(["sync"])
            let t1 = monotonic()
            sh(["cp", "--sparse=always", base + "/memory.bin", dir + "/cp.bin"])
            copies.append(Double(monotonic() - t1))
            sh(["rm", "-f", dir + "/cp.bin"])
        }
        machine.kill()
        _ = try machine.waitForStop()
    } catch {
        die("snapshot benchmark: \(error)")
    }
    let writeRatio = median(writes) / median(copies)
    print(String(format: "  snapshot write: %.1f ms for %.0f MiB of data (file 1 GiB, sparse), cp --sparse=always of its memory file %.1f ms, ratio %.2f (target <= 1.5) %@",
                 median(writes) / 1e6, Double(written) / 1048576, median(copies) / 1e6, writeRatio, writeRatio <= 1.5 ? "MET" : "MISSED"))

    // Restore in fresh processes, alternating with the bare KVM objects.
    var restore: [Double] = [], first: [Double] = [], spawnToFirst: [Double] = [], kernel: [Double] = [], chips: [Double] = []
    var slots: [Double] = []
    var copyFirst: [Double] = []
    var inKVM: [Double] = [], inRun: [Double] = [], oursMeasured: [Double] = []
    var cliWhole: [Double] = []
    _ = child(["--restore-child", base, "cow"])   // the page cache holds the files from here on
    for _ in 0 ..< runs {
        let (k, _) = child(["--kvm-child", "1", "1024"])
        kernel.append(field(k, "kernel_ns")); chips.append(field(k, "irqchip_ns")); slots.append(field(k, "memslot_ns"))
        let (line, spawned) = child(["--restore-child", base, "cow"])
        guard field(line, "status") == 33 else { die("the restored guest ended wrong: \(line)") }
        restore.append(field(line, "restore_ns")); first.append(field(line, "first_ns"))
        inKVM.append(field(line, "kvm_ns")); inRun.append(field(line, "run_ns"))
        oursMeasured.append(field(line, "first_ns") - field(line, "kvm_ns") - field(line, "run_ns"))
        spawnToFirst.append(field(line, "at_first") - Double(spawned))
        copyFirst.append(field(child(["--restore-child", base, "copy"]).0, "first_ns"))
        if let ms = wholeVMMCtlRestore(base) { cliWhole.append(ms) }
    }
    // The kernel's part is timed inside the restoring process itself (IoctlClock): every
    // KVM ioctl, and KVM_RUN up to the guest's first exit. Ours is the rest of the same
    // run: our code, its other system calls and its page faults.
    let total = median(first), ours = median(oursMeasured)
    print(String(format: "  restore to the first instruction in a fresh process: %.2f ms (target <= 5) %@; in KVM's ioctls %.2f ms and in KVM_RUN to the first exit %.2f ms (the kernel's, timed in the same runs); ours %.2f ms (target <= 1) %@",
                 total / 1e6, total <= 5e6 ? "MET" : "MISSED", median(inKVM) / 1e6, median(inRun) / 1e6, ours / 1e6, ours <= 1e6 ? "MET" : "MISSED"))
    let chipWork = MachineConfig().irqchip == .kernel ? "the in-kernel irqchip + PIT" : "enabling the split irqchip"
    let createPart = median(kernel)
    print(String(format: "    of KVM's ioctls, measured apart in fresh processes: KVM_CREATE_VM + KVM_CREATE_VCPU %.2f ms, the 1 GiB memory slot %.2f ms (KVM's per-page metadata), %@ %.2f ms; the total less KVM_CREATE_VM + KVM_CREATE_VCPU alone: %.2f ms",
                 createPart / 1e6, median(slots) / 1e6, chipWork, median(chips) / 1e6, (total - createPart) / 1e6))
    print(String(format: "    Machine.restore alone %.2f ms; process spawn to first instruction %.2f ms; with --restore-copy (64 MiB read) %.2f ms",
                 median(restore) / 1e6, median(spawnToFirst) / 1e6, median(copyFirst) / 1e6))
    if !cliWhole.isEmpty {
        print(String(format: "    vmmctl run --restore of the same snapshot, whole process (spawn to exit, the guest's end and the VM's teardown included): %.2f ms",
                     median(cliWhole)))
    }

    if let qemu = qemuIncoming(guest: touch, work: dir, runs: runs) {
        let ratio = qemu.spawnToRunning / median(spawnToFirst)
        print(String(format: "  QEMU microvm (migrate \"exec:cat > FILE\" of the same guest, %.0f MiB): -incoming \"exec:cat FILE\" spawn to running %.1f ms vs ours spawn to first instruction %.2f ms: %.1fx faster (target >= 10) %@",
                     Double(qemu.fileSize) / 1048576, qemu.spawnToRunning / 1e6, median(spawnToFirst) / 1e6, ratio, ratio >= 10 ? "MET" : "MISSED"))
        print(String(format: "    QEMU's migrate to the file took %.0f ms (ours: a full snapshot %.1f ms)", qemu.migrateMs, median(writes) / 1e6))
    } else {
        print("  QEMU comparison skipped: qemu-system-x86_64 is not installed (scripts/install-deps.sh installs it)")
    }

    let done = DispatchSemaphore(value: 0)
    let box = CloneBox()
    Task.detached {
        box.result = await clonesPerSecond(snapshot: base, work: work, clones: clones, concurrency: concurrency)
        done.signal()
    }
    done.wait()
    if let (rate, p50) = box.result {
        print(String(format: "  clones under vmmd (%d from one snapshot, %d clients at a time, 2 cores): %.0f VMs/s (target >= 200) %@; create -> destroyed p50 %.1f ms",
                     clones, concurrency, rate, rate >= 200 ? "MET" : "MISSED", p50))
    }
    sh(["rm", "-rf", dir])
}

final class CloneBox: @unchecked Sendable { var result: (Double, Double)? }

/// vmmd restoring `clones` VMs from `snapshot`, `concurrency` at a time: each created
/// with restore_from (copy-on-write), run until its guest ends, destroyed.
func clonesPerSecond(snapshot: String, work: String, clones: Int, concurrency: Int) async -> (Double, Double)? {
    let bin = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
    guard FileManager.default.isExecutableFile(atPath: bin + "/vmmd") else {
        print("  clones skipped: \(bin)/vmmd is missing (swift build -c release)")
        return nil
    }
    let socket = work + "/clones.sock"
    let daemon = Process()
    daemon.executableURL = URL(fileURLWithPath: bin + "/vmmd")
    daemon.arguments = ["--socket", socket, "--state-dir", work + "/clones-state", "--log-level", "warning"]
    do { try daemon.run() } catch { die("vmmd: \(error)") }
    defer { daemon.terminate(); daemon.waitUntilExit() }
    for _ in 0 ..< 200 where !FileManager.default.fileExists(atPath: socket) { usleep(20_000) }
    usleep(100_000)
    @Sendable func body(_ name: String) -> String { #"{"name":"\#(name)","restore_from":{"path":"\#(snapshot)"},"lifetime":"connection"}"# }
    do {
        _ = try DaemonBenchmark.plainLifecycle(socket: socket, name: "warm", body: body("warm"))
        let t0 = Date()
        let results = try onThreads(concurrency, count: clones) { i in
            try DaemonBenchmark.plainLifecycle(socket: socket, name: "clone-\(i)", body: body("clone-\(i)")).0
        }
        return (Double(results.count) / Date().timeIntervalSince(t0), median(results))
    } catch {
        die("clones: \(error)")
    }
}

/// QEMU microvm with the same guest: run it until it has touched its memory, migrate
/// it to a file (`exec:cat > FILE`), then start it `runs` times with `-incoming
/// "exec:cat FILE"`, timing spawn to "running" (its monitor's `info status`); each run
/// is then ended through the guest (a byte on COM1 → isa-debug-exit).
func qemuIncoming(guest: String, work: String, runs: Int) -> (spawnToRunning: Double, fileSize: UInt64, migrateMs: Double)? {
    let qemu = "/usr/bin/qemu-system-x86_64"
    guard FileManager.default.isExecutableFile(atPath: qemu) else { return nil }
    let file = work + "/qemu.mig"
    let base = ["-M", "microvm,x-option-roms=off,isa-serial=on,rtc=off", "-accel", "kvm", "-m", "1G", "-kernel", guest,
                "-display", "none", "-nodefaults", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
    func launch(_ extra: [String], monitor: String, serial: String) -> Process {
        unlink(monitor); unlink(serial)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: qemu)
        p.arguments = base + ["-chardev", "socket,id=s0,path=\(serial),server=on,wait=off", "-serial", "chardev:s0",
                              "-monitor", "unix:\(monitor),server,nowait"] + extra
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { die("qemu: \(error)") }
        return p
    }
    let monitor = work + "/qmon.sock", serial = work + "/qser.sock"
    let source = launch([], monitor: monitor, serial: serial)
    guard let ser = UnixLine(path: serial), let mon = UnixLine(path: monitor) else { source.terminate(); return nil }
    guard ser.waitFor("touched", seconds: 120) else { source.terminate(); die("QEMU's guest did not get ready") }
    _ = mon.waitFor("(qemu)", seconds: 5)
    let t0 = monotonic()
    mon.command("migrate \"exec:cat > \(file)\"")
    while !mon.command("info migrate").contains("completed") { usleep(2000) }
    let migrateMs = Double(monotonic() - t0) / 1e6
    mon.command("quit")
    source.waitUntilExit()
    let size = (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? UInt64) ?? 0
    var times: [Double] = []
    for _ in 0 ..< runs {
        let spawned = monotonic()
        let p = launch(["-incoming", "exec:cat \(file)"], monitor: monitor, serial: serial)
        guard let m = UnixLine(path: monitor) else { p.terminate(); die("QEMU's monitor did not come up") }
        _ = m.waitFor("(qemu)", seconds: 10)
        while !m.command("info status").contains("running") { usleep(200) }
        times.append(Double(monotonic() - spawned))
        UnixLine(path: serial)?.send("x")
        p.waitUntilExit()
        guard p.terminationStatus == 33 else { die("QEMU's restored guest ended with \(p.terminationStatus)") }
    }
    return (median(times), size, migrateMs)
}

/// A line-oriented Unix-socket client (QEMU's monitor and serial).
final class UnixLine {
    let fd: Int32
    private var buffer = ""

    init?(path: String) {
        var fd: Int32 = -1
        for _ in 0 ..< 2000 {
            fd = csys_connect_unix(path)
            if fd >= 0 { break }
            usleep(1000)
        }
        guard fd >= 0 else { return nil }
        self.fd = fd
    }

    deinit { close(fd) }

    func send(_ text: String) { _ = text.withCString { write(fd, $0, strlen($0)) } }

    /// Reads until `text` has arrived (false after `seconds`).
    func waitFor(_ text: String, seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        var chunk = [UInt8](repeating: 0, count: 4096)
        while !buffer.contains(text) {
            guard Date() < deadline else { return false }
            let n = read(fd, &chunk, chunk.count)
            guard n > 0 else { return false }
            buffer += String(decoding: chunk[0 ..< n], as: UTF8.self)
        }
        buffer = String(buffer[buffer.range(of: text)!.upperBound...])
        return true
    }

    /// A monitor command; its answer (up to the next prompt).
    @discardableResult
    func command(_ line: String) -> String {
        buffer = ""
        send(line + "\n")
        var chunk = [UInt8](repeating: 0, count: 4096)
        while !buffer.hasSuffix("(qemu) ") {
            let n = read(fd, &chunk, chunk.count)
            guard n > 0 else { break }
            buffer += String(decoding: chunk[0 ..< n], as: UTF8.self)
        }
        let answer = buffer
        buffer = ""
        return answer
    }
}
