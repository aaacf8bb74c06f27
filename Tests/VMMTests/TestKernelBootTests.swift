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

    init(arguments: [String]) throws {
        try #require(VMMCtl.exists, "vmmctl is not built at \(VMMCtl.path)")
        process.executableURL = URL(fileURLWithPath: "/usr/bin/nice")
        process.arguments = ["-n", "19", VMMCtl.path, "run"] + arguments
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

    var text: String { lock.withLock { buffer } }
    var seconds: Double { Date().timeIntervalSince(start) }

    /// Waits until the console shows `needle` for the `occurrence`-th time; returns the
    /// seconds since the start, or nil at the deadline or when vmmctl ended.
    func wait(for needle: String, occurrence: Int = 1, deadline: TimeInterval) async -> Double? {
        while seconds < deadline {
            if text.components(separatedBy: needle).count - 1 >= occurrence { return seconds }
            if !process.isRunning { return text.components(separatedBy: needle).count - 1 >= occurrence ? seconds : nil }
            try? await Task.sleep(nanoseconds: 100_000_000)
        }
        return nil
    }

    func type(_ line: String) { input.fileHandleForWriting.write(Data((line + "\n").utf8)) }

    /// Waits for vmmctl to end (killing it at the deadline) and returns its status.
    func finish(deadline: TimeInterval) async -> Int32? {
        while process.isRunning, seconds < deadline { try? await Task.sleep(nanoseconds: 100_000_000) }
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
    static func arguments(_ kernel: String, cmdline: String) -> [String] {
        ["--kernel", TestKernel.path(kernel), "--initrd", TestKernel.path("initramfs.cpio"), "--cmdline", cmdline,
         "--cpus", "2", "--memory", "256", "--cpu-template", "emulation-safe"]
    }

    /// One boot that checks many things: the test kernel through PVH with 2 vCPUs reaches
    /// /init, which sees both CPUs and the clocksource; the 8250 console takes a typed
    /// line; `reboot -f` resets through ACPI and the machine boots /init again; the second
    /// line powers off through ACPI S5: status 0. On this project's hosts all of it needs
    /// the emulation assist (int3, clac, popcnt, the syscall repair, the stalled
    /// KVM_HC_CLOCK_PAIRING of kvm_ptp), whose counts vmmctl prints at the end.
    @Test(.timeLimit(.minutes(15))) func testKernelReachesInitTakesInputRebootsAndPowersOff() async throws {
        let boot = try ConsoleBoot(arguments: Self.arguments("vmlinux", cmdline: "console=ttyS0"))
        func fail(_ what: String) -> Comment { "\(what) after \(String(format: "%.0f", boot.seconds)) s\n--- console tail ---\n\(boot.text.suffix(5000))" }

        let atInit = await boot.wait(for: "swift-vmm init: 2 CPUs online", deadline: 400)
        #expect(atInit != nil, fail("/init never reported 2 CPUs"))
        guard atInit != nil else { _ = await boot.finish(deadline: 0); return }
        #expect(await boot.wait(for: "swift-vmm init: clocksource ", deadline: 410) != nil, fail("no clocksource line"))
        #expect(boot.text.contains("smp: Brought up 1 node, 2 CPUs"))
        #expect(!boot.text.contains("ACPI Error"), fail("ACPI errors"))
        #expect(await boot.wait(for: "type a line", deadline: 420) != nil, fail("no prompt"))
        boot.type("reboot")
        #expect(await boot.wait(for: "swift-vmm init: read 'reboot'", deadline: 440) != nil, fail("the typed line did not arrive"))
        let again = await boot.wait(for: "swift-vmm init: 2 CPUs online", occurrence: 2, deadline: 800)
        #expect(again != nil, fail("no second /init after reboot -f"))
        #expect(await boot.wait(for: "type a line", occurrence: 2, deadline: 820) != nil, fail("no second prompt"))
        boot.type("echo from the test")
        #expect(await boot.wait(for: "swift-vmm init: read 'echo from the test'", deadline: 840) != nil, fail("no echo"))
        let status = await boot.finish(deadline: 900)
        #expect(status == 0, fail("vmmctl's exit status \(status.map(String.init) ?? "none"): 0 is the guest's ACPI power-off"))
        let out = boot.text
        #expect(out.contains("reboot: Power down"))
        print("test kernel: /init after \(String(format: "%.1f", atInit ?? 0)) s, again after the reboot at \(String(format: "%.1f", again ?? 0)) s, powered off at \(String(format: "%.1f", boot.seconds)) s")
        if let line = out.split(separator: "\n").first(where: { $0.hasPrefix("vmmctl: emulation assist:") }) { print(line) }
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
}
