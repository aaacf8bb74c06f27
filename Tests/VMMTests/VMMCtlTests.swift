import Foundation
import Testing

/// The `vmmctl` binary built next to the tests.
enum VMMCtl {
    static let path = packageRoot.appendingPathComponent(".build/debug/vmmctl").path
    static var exists: Bool { FileManager.default.isExecutableFile(atPath: path) }

    static func run(_ args: [String]) throws -> (status: Int32, stdout: String, all: String) {
        try #require(exists, "vmmctl is not built at \(path): run `swift build` before `swift test`")
        let r = runProcess(path, args)
        return (r.status, r.stdout, r.output)
    }
}

@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct VMMCtlTests {
    @Test func debugExitStatusAndMessage() throws {
        let r = try VMMCtl.run(["run", "--kernel", TestGuests.path("exit"), "--debug-exit", "--memory", "32"])
        #expect(r.status == 67)
        #expect(r.stdout == "exit guest\n")
        #expect(r.all.contains("vmmctl: guest wrote 0x21 to the debug-exit port (exit status 67)"))
    }

    /// `vmmctl run`'s fast parse (vmmctl/RunFastParse.swift) against ArgumentParser's:
    /// the debug binary parses each command line it takes both ways and ends with status 70
    /// on any difference. Each line here names a kernel that does not exist, so vmmctl
    /// stops with status 10 right after the parse (64 where ArgumentParser refuses the line).
    /// The first group must take the fast path, the second must be left to ArgumentParser.
    @Test func fastParseOfRunAgreesWithArgumentParser() throws {
        let k = "/nonexistent/kernel.elf"
        let fast: [[String]] = [
            [], ["--kernel", k], ["--kernel=\(k)", "--memory=64"], ["--memory", "64", "--kernel", k, "--cmdline", "console=ttyS0 a=b"],
            ["--kernel", k, "--cmdline=a=b c", "--cpus", "2", "--topology", "sockets=1,cores=2,threads=1"],
            ["--kernel", k, "--debug-exit", "--no-reboot", "--reboot-on-triple-fault", "--hypercalls", "--rng", "--virtio-cmdline", "--verbose"],
            ["--kernel", k, "--serial", "none"], ["--kernel", k, "--serial", "file:/nonexistent/serial.log"],
            ["--kernel", k, "--name", "n1", "--emulation-assist", "off", "--irqchip", "kernel", "--virtio-notify", "bus",
             "--cpu-template", "emulation-safe", "--initrd", "/nonexistent/initrd"],
            ["--kernel", k, "--memory", "+64"], ["--kernel", k, "--cpus", "0"], ["--kernel", k, "--cpus=-1"], ["--kernel", k, "--cpu-template", "no-such-template"],
            // The snapshot options (a restore's start-up is what its user waits for).
            ["--restore", "/nonexistent/snapshot"], ["--kernel", k, "--restore", "/nonexistent/snapshot"],
            ["--restore", "/nonexistent/snapshot", "--paused", "--restore-copy", "--clock", "advance", "--name", "c1"],
            ["--restore=/nonexistent/snapshot", "--clock", "bogus"],
            ["--kernel", k, "--snapshot-to", "/nonexistent/s%n", "--snapshot-diff", "--stop-after-snapshot", "--track-dirty-pages"],
        ]
        let left: [[String]] = [
            ["--kernel"], ["--kernel", k, "--serial", "bogus"], ["--kernel", k, "--memory", "0x40"],
            ["--kernel", k, "--memory", "64", "--memory", "32"], ["--kernel", k, "--debug-exit=1"], ["--kernel", k, "--cmdline", ""],
            ["--kernel", k, "--cmdline", "-x"], ["--kernel", k, "extra"], ["--kernel", k, "--cpus", "-1"],
            ["--kernel", k, "--disk", "/nonexistent/disk.img"], ["--kernel", k, "--unknown"], ["--kernel", k, "--help"],
            ["--kernel", k, "--irqchip", "both"], ["--restore"], ["--restore", "/a", "--restore", "/b"], ["--kernel", k, "--", "x"],
        ]
        for (arguments, expectFast) in fast.map({ ($0, true) }) + left.map({ ($0, false) }) {
            try #require(VMMCtl.exists, "vmmctl is not built at \(VMMCtl.path)")
            let r = runProcess(VMMCtl.path, ["run"] + arguments, environment: ["VMMCTL_TRACE_PARSE": "1"])
            #expect(r.status != 70 && !r.output.contains("internal error"), "\(arguments): \(r.output)")
            #expect(r.output.contains("vmmctl: fast parse") == expectFast, "\(arguments): \(r.output)")
            #expect([0, 10, 64].contains(r.status), "\(arguments): status \(r.status) \(r.output)")
        }
    }

    @Test func tripleFaultAndInternalErrorHaveTheirOwnStatus() throws {
        let triple = try VMMCtl.run(["run", "--kernel", TestGuests.path("triple"), "--memory", "32"])
        #expect(triple.status == 6 && triple.all.contains("triple fault on vCPU 0"))
        let int3 = try VMMCtl.run(["run", "--kernel", TestGuests.path("int3"), "--memory", "32"])
        #expect(int3.status == 8 || int3.status == 6)
        #expect(int3.all.contains("KVM internal error") || int3.all.contains("triple fault"))
    }

    @Test func resetRebootsUnlessNoReboot() throws {
        let reboot = try VMMCtl.run(["run", "--kernel", TestGuests.path("reset"), "--memory", "32"])
        #expect(reboot.status == 0 && reboot.stdout == "resetting\nrebooted\n")
        let noReboot = try VMMCtl.run(["run", "--kernel", TestGuests.path("reset"), "--memory", "32", "--no-reboot"])
        #expect(noReboot.status == 2 && noReboot.stdout == "resetting\n")
    }

    @Test func serialToFileAndNone() throws {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("vmmctl-serial-\(getpid()).log")
        defer { try? FileManager.default.removeItem(at: log) }
        let r = try VMMCtl.run(["run", "--kernel", TestGuests.path("hello"), "--cmdline", "q=1",
                                "--serial", "file:" + log.path])
        #expect(r.status == 0 && r.stdout.isEmpty)
        #expect(try String(contentsOf: log, encoding: .utf8) == "Hello from a swift-vmm guest!\ncmdline: q=1\n")
        let none = try VMMCtl.run(["run", "--kernel", TestGuests.path("hello"), "--serial", "none"])
        #expect(none.status == 0 && none.stdout.isEmpty)
    }

    /// A vmmctl started with SIGTERM and SIGINT blocked (posix_spawn from a thread that
    /// blocks them, as the test runner's threads do; exec keeps the mask) still ends on
    /// them. With them blocked, a terminated `vmmctl run` of Linux ran on and the test
    /// that stopped it waited forever.
    @Test(arguments: [SIGTERM, SIGINT])
    func endsOnASignalItWasStartedWithBlocked(signal: Int32) throws {
        try #require(VMMCtl.exists, "vmmctl is not built at \(VMMCtl.path)")
        let guest = try TestGuests.path("idle")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = ["-c", "import os, signal, sys; "
                             + "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT}); "
                             + "os.execv(sys.argv[1], sys.argv[1:])",
                             VMMCtl.path, "run", "--kernel", guest, "--memory", "32", "--serial", "none"]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        SpawnedProcesses.register(process.processIdentifier, "vmmctl run idle (signal test)")
        defer {
            if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
            SpawnedProcesses.unregister(process.processIdentifier)
        }
        Thread.sleep(forTimeInterval: 1.5)   // the guest is running
        kill(process.processIdentifier, signal)
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning, Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        #expect(!process.isRunning, "vmmctl run still running 10 s after signal \(signal)")
    }

    @Test func smpWithTwoCPUs() throws {
        let r = try VMMCtl.run(["run", "--kernel", TestGuests.path("smp"), "--cpus", "2", "--memory", "32"])
        #expect(r.status == 0 && r.stdout == "A\nsmp: 2 cpus\n")
    }

    @Test func badInputsGetAClearErrorAndStatus10() throws {
        let missing = try VMMCtl.run(["run", "--kernel", "/nonexistent/guest.elf"])
        #expect(missing.status == 10 && missing.all.contains("cannot open /nonexistent/guest.elf"))
        let junk = FileManager.default.temporaryDirectory.appendingPathComponent("junk-\(getpid()).elf")
        defer { try? FileManager.default.removeItem(at: junk) }
        try Data([0x7F, 0x45, 0x4C, 0x46, 2, 1, 1, 0, 0, 0]).write(to: junk)
        let truncated = try VMMCtl.run(["run", "--kernel", junk.path])
        #expect(truncated.status == 10 && truncated.all.contains("image is truncated"))
        let tooSmall = try VMMCtl.run(["run", "--kernel", TestGuests.path("exit"), "--memory", "1"])
        #expect(tooSmall.status == 10 && tooSmall.all.contains("memory must be between"))
        let badSerial = try VMMCtl.run(["run", "--kernel", TestGuests.path("exit"), "--serial", "tcp:1"])
        #expect(badSerial.status != 0 && badSerial.all.contains("--serial"))
    }

    @Test func demoAndCaps() throws {
        let demo = try VMMCtl.run(["demo", "--cmdline", "from-test"])
        #expect(demo.status == 0)
        #expect(demo.stdout.contains("Hello from the swift-vmm demo guest") && demo.stdout.contains("command line: from-test"))
        let caps = try VMMCtl.run(["caps"])
        #expect(caps.status == 0 && caps.stdout.contains("KVM_CAP_USER_MEMORY") && caps.stdout.contains("KVM API version 12"))
    }
}

/// The same guest, written outside the VMM's own code (a C program) or as plain PVH
/// assembly, must print the same and exit the same under vmmctl and QEMU's microvm.
@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct QEMUComparisonTests {
    static let qemu = ["/usr/bin/qemu-system-x86_64", "/usr/local/bin/qemu-system-x86_64"]
        .first { FileManager.default.isExecutableFile(atPath: $0) }

    @Test(.enabled(if: qemu != nil, "qemu-system-x86_64 is not installed (scripts/install-deps.sh installs it)"),
          arguments: ["c-hello", "exit", "exit64"])
    func sameOutputAndStatusAsQEMUMicrovm(guest: String) throws {
        let qemu = try #require(Self.qemu)
        let kernel = try TestGuests.path(guest)
        let cmdline = "console=ttyS0 from=comparison"
        let q = runProcess(qemu, ["-M", "microvm,x-option-roms=off,isa-serial=on,rtc=off", "-accel", "tcg",
                                  "-m", "32", "-display", "none", "-monitor", "none", "-serial", "stdio",
                                  "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
                                  "-kernel", kernel, "-append", cmdline])
        let v = try VMMCtl.run(["run", "--kernel", kernel, "--debug-exit", "--memory", "32", "--cmdline", cmdline])
        #expect(!q.stdout.isEmpty)
        #expect(v.stdout == q.stdout)
        #expect(v.status == q.status)
    }
}
