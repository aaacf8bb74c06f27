import Foundation
import Testing

/// The project's test kernel (scripts/build-test-kernel.sh: Debian's linux-source-6.1,
/// tinyconfig + scripts/test-kernel/kernel.config) and its busybox initramfs
/// (scripts/make-initramfs.sh, /init = scripts/test-kernel/init) in .cache/linux-test.
enum TestKernel {
    static let directory = packageRoot.appendingPathComponent(".cache/linux-test")
    static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
    static let available = ["vmlinux", "bzImage", "initramfs.cpio"].allSatisfy {
        FileManager.default.fileExists(atPath: path($0))
    }
    static let skipReason: Comment = "no test kernel in .cache/linux-test: run scripts/build-test-kernel.sh (scripts/test.sh does)"
}

/// A `vmmctl run` of the test kernel whose console the test reads and types into.
final class ConsoleBoot: @unchecked Sendable {
    // @unchecked: the text is only read and written under `lock`.
    let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private let lock = NSLock()
    private var buffer = ""
    let start = Date()

    /// `launcher`: what vmmctl runs under (e.g. `ip netns exec NS`), before `nice`.
    init(arguments: [String], launcher: [String] = []) throws {
        try #require(VMMCtl.exists, "vmmctl is not built at \(VMMCtl.path)")
        let command = launcher + ["/usr/bin/nice", "-n", "19", VMMCtl.path, "run"] + arguments
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        output.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self, !data.isEmpty else { return }
            self.lock.withLock { self.buffer += String(decoding: data, as: UTF8.self) }
        }
        try process.run()
    }

    /// A test that stops early (a failed #require) leaves no VM running.
    deinit {
        if process.isRunning { process.terminate(); process.waitUntilExit() }
    }

    var text: String { lock.withLock { buffer } }

    /// The lines of console text. The guest's tty ends its lines with "\r\n", which Swift
    /// reads as one Character, so splitting on "\n" would glue them to the next line.
    static func lines(_ text: String) -> [Substring] {
        text.split(omittingEmptySubsequences: true) { $0.isNewline }
    }
    var seconds: Double { Date().timeIntervalSince(start) }

    /// Waits until the console shows `needle` for the `occurrence`-th time; returns the
    /// seconds since the start, or nil at the deadline or when vmmctl ended.
    /// A cancelled test (its time limit passed) stops waiting at once instead of spinning.
    func wait(for needle: String, occurrence: Int = 1, deadline: TimeInterval) async -> Double? {
        while seconds < deadline, !Task.isCancelled {
            if text.components(separatedBy: needle).count - 1 >= occurrence { return seconds }
            if !process.isRunning { return text.components(separatedBy: needle).count - 1 >= occurrence ? seconds : nil }
            try? await Task.sleep(nanoseconds: 100_000_000)
        }
        return nil
    }

    func type(_ line: String) { input.fileHandleForWriting.write(Data((line + "\n").utf8)) }

    /// Waits for vmmctl to end (killing it at the deadline) and returns its status.
    func finish(deadline: TimeInterval) async -> Int32? {
        while process.isRunning, seconds < deadline, !Task.isCancelled { try? await Task.sleep(nanoseconds: 100_000_000) }
        let killed = process.isRunning
        if killed { process.terminate() }
        process.waitUntilExit()
        output.fileHandleForReading.readabilityHandler = nil
        let rest = output.fileHandleForReading.readDataToEndOfFile()
        lock.withLock { buffer += String(decoding: rest, as: UTF8.self) }
        return killed ? nil : process.terminationStatus
    }
}

@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .enabled(if: TestKernel.available, TestKernel.skipReason),
       .serialized)
struct TestKernelBootTests {
    static func arguments(_ kernel: String, cmdline: String, initramfs: String = TestKernel.path("initramfs.cpio")) -> [String] {
        ["--kernel", TestKernel.path(kernel), "--initrd", initramfs, "--cmdline", cmdline,
         "--cpus", "2", "--memory", "256", "--cpu-template", "emulation-safe"]
    }

    /// One boot that checks many things: the test kernel through PVH with 2 vCPUs reaches
    /// /init, which sees both CPUs and the clocksource; its devices hook
    /// (scripts/test-kernel/devices-check) finds the root disk as /dev/vda with its serial
    /// and a write cache, mounts its ext4, writes a file, reads 64 KiB from /dev/hwrng
    /// (rng_current names virtio) onto it, times a 4 MiB O_DIRECT write and read, syncs;
    /// reads the read-only disk's first line and has a write refused; brings up eth0 in
    /// the test's network namespace and pings the namespace's address; connects to a host
    /// service over vsock and to a port nobody listens on (reset); serves an echo on vsock
    /// port 5252, which 50 host connections drive at once through the hybrid socket. The
    /// 8250 console takes a typed line;
    /// `reboot -f` resets through ACPI, the devices come back, the hook finds the first
    /// boot's file and appends to it; the second line powers off through ACPI S5: status 0.
    /// Then the host reads the root image with e2fsprogs: both boots' lines, the rng bytes
    /// the guest hashed, a clean file system. On this project's hosts all of it needs the
    /// emulation assist (int3, clac, popcnt, the syscall repair, the stalled
    /// KVM_HC_CLOCK_PAIRING of kvm_ptp), whose counts vmmctl prints at the end.
    @Test(.timeLimit(.minutes(20))) func testKernelBootsWithItsDevicesTakesInputRebootsAndPowersOff() async throws {
        let devices = try TestKernelDevices(network: NetnsGate.available)
        let boot = try ConsoleBoot(arguments: Self.arguments("vmlinux", cmdline: "console=ttyS0 " + devices.commandLine,
                                                             initramfs: devices.initramfs) + devices.arguments,
                                   launcher: devices.launcher)
        func fail(_ what: String) -> Comment { "\(what) after \(String(format: "%.0f", boot.seconds)) s\n--- console tail ---\n\(boot.text.suffix(5000))" }
        func seconds(_ t: Double?) -> String { t.map { String(format: "%.1f", $0) } ?? "-" }
        if devices.netns == nil { print("test kernel: no network namespace here (\(NetnsGate.skipReason)): virtio-net not checked") }

        let atInit = await boot.wait(for: "swift-vmm init: 2 CPUs online", deadline: 500)
        #expect(atInit != nil, fail("/init never reported 2 CPUs"))
        guard let atInit else { _ = await boot.finish(deadline: 0); return }
        #expect(await boot.wait(for: "swift-vmm init: clocksource ", deadline: atInit + 30) != nil, fail("no clocksource line"))
        #expect(boot.text.contains("smp: Brought up 1 node, 2 CPUs"))
        #expect(!boot.text.contains("ACPI Error"), fail("ACPI errors"))
        let prompt = await boot.wait(for: "type a line", deadline: atInit + 300)
        #expect(prompt != nil, fail("no prompt"))
        let listening = await boot.wait(for: TestKernelDevices.echoListening, deadline: atInit + 360)
        let first = boot.text
        let missingFirst = devices.expectedLines(boot: 1).filter { !first.contains($0) }
        #expect(missingFirst.isEmpty, fail("first boot: never shown \(missingFirst)"))

        // 50 connections at once through the hybrid socket, each echoed and checksummed.
        let size = LinuxKernel.slow ? 1 << 20 : 256 << 10
        let echoStart = Date()
        let failures = listening == nil ? ["the echo never listened"] : devices.echo(connections: 50, size: size)
        let echoSeconds = Date().timeIntervalSince(echoStart)
        #expect(failures.isEmpty, fail("vsock echo: \(failures.prefix(5))"))

        boot.type("reboot")
        #expect(await boot.wait(for: "swift-vmm init: read 'reboot'", deadline: boot.seconds + 60) != nil, fail("the typed line did not arrive"))
        let again = await boot.wait(for: "swift-vmm init: 2 CPUs online", occurrence: 2, deadline: boot.seconds + 500)
        #expect(again != nil, fail("no second /init after reboot -f"))
        #expect(await boot.wait(for: "type a line", occurrence: 2, deadline: boot.seconds + 300) != nil, fail("no second prompt"))
        #expect(await boot.wait(for: TestKernelDevices.echoListening, occurrence: 2, deadline: boot.seconds + 60) != nil,
                fail("no second echo server"))
        let second = String(boot.text.dropFirst(first.count))
        let missingSecond = devices.expectedLines(boot: 2).filter { !second.contains($0) }
        #expect(missingSecond.isEmpty, fail("second boot: never shown \(missingSecond)"))
        // The vsock device after the reset: one more connection.
        #expect(devices.echo(connections: 1, size: 4096).isEmpty, fail("vsock echo after the reboot"))
        boot.type("echo from the test")
        #expect(await boot.wait(for: "swift-vmm init: read 'echo from the test'", deadline: boot.seconds + 60) != nil, fail("no echo"))
        let status = await boot.finish(deadline: boot.seconds + 120)
        #expect(status == 0, fail("vmmctl's exit status \(status.map(String.init) ?? "none"): 0 is the guest's ACPI power-off"))
        let out = boot.text
        #expect(out.contains("reboot: Power down"))

        // What the guest left on its disks, read on the host.
        let fromGuest = try devices.imageFile("from-guest").map { String(decoding: $0, as: UTF8.self) }
        #expect(fromGuest == "token \(devices.token) boot 1\ntoken \(devices.token) boot 2\n", "from-guest: \(String(describing: fromGuest))")
        for n in 1 ... 2 {
            let rng = try devices.imageFile("rng-\(n)") ?? []
            #expect(rng.count == TestKernelDevices.rngBytes, "rng-\(n): \(rng.count) bytes")
            #expect(Set(rng).count > 200, "rng-\(n) does not look random: \(Set(rng).count) distinct byte values")
            let guestDigest = TestKernelDevices.guestRNGDigest(out, boot: n)
            let hostDigest = try TestKernelDevices.sha256(rng, in: devices.directory)
            #expect(guestDigest != nil && guestDigest == hostDigest,
                    "rng-\(n): the guest's sha256 \(guestDigest ?? "none") is not the image's")
        }
        let rng1 = try devices.imageFile("rng-1"), rng2 = try devices.imageFile("rng-2")
        #expect(rng1 != rng2, "both boots read the same rng bytes")
        let fsck = devices.fsck()
        #expect(fsck.clean, "e2fsck -fn on the root image:\n\(fsck.output)")
        let readOnly = try [UInt8](Data(contentsOf: URL(fileURLWithPath: devices.readOnlyImage)))
        #expect(readOnly.prefix(devices.readOnlyLine.utf8.count + 1) == ArraySlice(Array((devices.readOnlyLine + "\n").utf8))
                && readOnly.dropFirst(devices.readOnlyLine.utf8.count + 1).allSatisfy { $0 == 0 }, "the read-only image changed")
        let greetings = devices.service.received.withLock { $0 }
        #expect(greetings == Array(repeating: "hello host from \(devices.token)", count: 2), "the host service got \(greetings)")
        // The devices' own counts (vmmctl run --verbose prints them at the end).
        let count = { (device: String, counter: String) in TestKernelDevices.statistic(out, device: device, counter: counter) ?? 0 }
        #expect(count("blk0", "flushes") > 0 && count("blk0", "bytes_written") > 0 && count("blk0", "errors") == 0, "blk0: no flush or write")
        #expect(count("blk1", "bytes_written") == 0, "the read-only disk was written")
        #expect(count("rng0", "bytes_read") >= UInt64(2 * TestKernelDevices.rngBytes))
        #expect(count("vsock0", "host_connections") == 51 && count("vsock0", "guest_connections") == 2
                && count("vsock0", "connections_refused") == 2 && count("vsock0", "credit_violations") == 0)
        if devices.netns != nil { #expect(count("net0", "tx_frames") >= 4 && count("net0", "rx_frames") >= 4 && count("net0", "tx_dropped") == 0) }

        print("test kernel: /init after \(seconds(atInit)) s, devices checked and prompt at \(seconds(prompt)) s, "
              + "50 vsock echoes of \(size >> 10) KiB in \(String(format: "%.1f", echoSeconds)) s, /init again after the reboot at "
              + "\(seconds(again)) s, powered off at \(seconds(boot.seconds)) s")
        for line in ConsoleBoot.lines(out) where line.hasPrefix("vmmctl: emulation assist:") || line.hasPrefix("vmmctl: statistics ")
            || line.contains("devices: vda ext4 ") { print(line) }
    }

    /// The same kernel through vmmd: a worker in its sandbox (seccomp, no privileges) runs
    /// it with the emulation assist and the syscall repair; /init powers off on its own
    /// (`vmm_action=poweroff`), the VM ends `poweroff` with status 0, and the statistics
    /// carry the assist's counts. (In this suite, so the two boots never share the CPUs.)
    @Test(.timeLimit(.minutes(10))) func testKernelPowersOffThroughVmmd() async throws {
        let d = try DaemonFixture()
        let body = #"{"name":"linux","kernel":"\#(TestKernel.path("vmlinux"))","initrd":"\#(TestKernel.path("initramfs.cpio"))","#
            + #""cmdline":"console=ttyS0 vmm_action=poweroff","memory_mib":256,"vcpus":2,"cpu_template":"emulation-safe","#
            + #""emulation_assist":"auto"}"#
        let create = d.api("POST", "/v1/vms", json: body)
        #expect(create.status == 201, "\(create.body)")
        let start = Date()
        var exit: [String: Any]?
        while Date().timeIntervalSince(start) < 480 {
            exit = d.vm("linux")?["last_exit"] as? [String: Any]
            if exit != nil { break }
            try await Task.sleep(nanoseconds: 500_000_000)
        }
        let console = d.api("GET", "/v1/vms/linux/console").body
        #expect(exit?["kind"] as? String == "poweroff" && exit?["status"] as? Int == 0,
                "last_exit \(String(describing: exit)) after \(Int(Date().timeIntervalSince(start))) s\n--- console tail ---\n\(console.suffix(4000))\n--- vmmd log ---\n\(d.log.suffix(2000))")
        #expect(console.contains("swift-vmm init: 2 CPUs online"))
        let stats = d.api("GET", "/v1/vms/linux/stats").body
        #expect(stats.contains("emulation_assist"), "\(stats.prefix(2000))")
        #expect(d.api("DELETE", "/v1/vms/linux").status == 204)
        print("test kernel through vmmd: powered off after \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
    }

    /// Linux snapshotted at its shell through vmmd and restored by it in a new worker:
    /// the restored shell runs a program and answers (2 CPUs, /proc read), with no boot in
    /// between. (Before the assist finished `lsl`, a restored guest's NMI backtrace stopped
    /// on it.)
    @Test(.timeLimit(.minutes(10))) func testKernelRestoresUnderVmmd() async throws {
        let d = try DaemonFixture()
        let scratch = try SnapshotScratch()
        let body = #"{"name":"lx","kernel":"\#(TestKernel.path("vmlinux"))","initrd":"\#(TestKernel.path("initramfs.cpio"))","#
            + #""cmdline":"console=ttyS0 vmm_action=shell","memory_mib":256,"vcpus":2,"cpu_template":"emulation-safe"}"#
        #expect(d.api("POST", "/v1/vms", json: body).status == 201)
        let start = Date()
        var console = ""
        while Date().timeIntervalSince(start) < 400 {
            console = d.api("GET", "/v1/vms/lx/console").body
            if console.contains("/ # ") { break }
            try await Task.sleep(nanoseconds: 500_000_000)
        }
        try #require(console.contains("/ # "), "no shell after \(Int(Date().timeIntervalSince(start))) s\n\(console.suffix(3000))")
        let snapshot = d.api("PUT", "/v1/vms/lx/snapshot", json: #"{"path":"\#(scratch.path("shell"))"}"#)
        #expect(snapshot.status == 200, "\(snapshot.body)")
        #expect(d.api("DELETE", "/v1/vms/lx").status == 204)
        let restored = d.api("POST", "/v1/vms", json: #"{"name":"back","restore_from":{"path":"\#(scratch.path("shell"))"}}"#)
        #expect(restored.status == 201, "\(restored.body)")
        let restoredAt = Date()
        #expect(d.api("POST", "/v1/vms/back/console", data: "echo restored-$((6*7)) cpus-$(grep -c ^processor /proc/cpuinfo)\n").status == 204)
        var answer = ""
        while Date().timeIntervalSince(restoredAt) < 120 {
            answer = d.api("GET", "/v1/vms/back/console").body
            if answer.contains("restored-42 cpus-") { break }
            try await Task.sleep(nanoseconds: 250_000_000)
        }
        #expect(answer.contains("restored-42 cpus-"), "the restored shell did not answer\n\(answer.suffix(3000))\n--- vmmd log ---\n\(d.log.suffix(2000))")
        if !answer.contains("restored-42 cpus-2") {
            // grep, started by the restored shell, may meet this host's start-up crash.
            if Self.onlyTheHostsStartupCrash(answer) {
                withKnownIssue("the restored shell's grep died at its start (this host's TLS fault)", isIntermittent: true) {
                    Issue.record("no CPU count:\n\(answer.suffix(2000))")
                }
            } else {
                Issue.record("the restored guest does not see 2 CPUs:\n\(answer.suffix(2000))")
            }
        }
        #expect(!answer.contains("Linux version"), "the restore booted")
        #expect(d.api("DELETE", "/v1/vms/back").status == 204)
        print("test kernel under vmmd: shell after \(String(format: "%.1f", restoredAt.timeIntervalSince(start))) s, "
              + "the restored shell answered \(String(format: "%.1f", Date().timeIntervalSince(restoredAt))) s after the restore")
    }
}
