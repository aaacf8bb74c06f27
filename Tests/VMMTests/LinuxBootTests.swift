import Boot
import Foundation
import Testing

/// The real-kernel inputs scripts/fetch-linux.sh leaves in .cache/linux.
enum LinuxKernel {
    static let directory = packageRoot.appendingPathComponent(".cache/linux")
    static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }
    static let available = ["bzImage", "vmlinux", "initramfs.cpio.gz"].allSatisfy {
        FileManager.default.fileExists(atPath: path($0))
    }
    static let skipReason: Comment = "no kernel in .cache/linux: run scripts/fetch-linux.sh (scripts/test.sh does)"
    static let slow = ProcessInfo.processInfo.environment["VMM_SLOW_TESTS"] == "1"
    static let fullBoot = ProcessInfo.processInfo.environment["VMM_FULL_BOOT_TESTS"] == "1"

    /// What the boot log must show: the banner, the command line, the e820 map, every
    /// ACPI table, the IOAPIC, both CPUs and KVM's paravirtual clock.
    static func expectations(commandLine: String) -> [String] {
        ["Linux version 6.", "Command line: \(commandLine)",
         "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable",
         "BIOS-e820: [mem 0x000000000009fc00-",   // PVH Linux merges the reserved ranges up to 1 MiB
         "BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable",
         "Hypervisor detected: KVM", "kvm-clock: Using msrs 4b564d01 and 4b564d00",
         "ACPI: RSDP 0x00000000000E0000", "ACPI: XSDT 0x", "ACPI: FACP 0x", "ACPI: APIC 0x", "ACPI: DSDT 0x",
         // The split irqchip's IOAPIC (version 0x11, 24 pins), and no IRQ 0 override: no PIT.
         "IOAPIC[0]: apic_id 2, version 17, address 0xfec00000, GSI 0-23",
         "smpboot: Allowing 2 CPUs, 0 hotplug CPUs"]
    }
}

/// How a real-kernel boot went.
struct LinuxBoot {
    var log: String
    /// Expected lines the log never showed.
    var missing: [String]
    /// vmmctl's exit status, or nil when the test stopped it after seeing everything.
    var status: Int32?
    var seconds: Double
}

/// Boots `kernel` with 2 vCPUs, the initramfs and the emulation-safe template through
/// `vmmctl run`, as a user would, and watches its serial log. The VM runs in a child
/// process at the lowest CPU priority (`nice -n 19`), so a boot that takes a core for
/// tens of seconds does not starve the tests running beside it. With `stopWhenSeen`, the
/// VM is stopped as soon as every expected line is there. Async, sleeping between looks,
/// so that it holds none of Swift Testing's few worker threads while the guest runs.
func bootLinux(_ kernel: String, commandLine: String, expecting: [String], stopWhenSeen: Bool = true,
               deadline: TimeInterval) async throws -> LinuxBoot {
    let log = FileManager.default.temporaryDirectory.appendingPathComponent("linux-\(getpid())-\(kernel).log")
    defer { try? FileManager.default.removeItem(at: log) }
    try #require(VMMCtl.exists, "vmmctl is not built at \(VMMCtl.path)")
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/nice")
    process.arguments = ["-n", "19", VMMCtl.path, "run", "--kernel", LinuxKernel.path(kernel),
                         "--initrd", LinuxKernel.path("initramfs.cpio.gz"), "--cmdline", commandLine,
                         "--cpus", "2", "--memory", "256", "--cpu-template", "emulation-safe",
                         "--serial", "file:" + log.path]
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    let start = Date()
    try process.run()
    SpawnedProcesses.register(process.processIdentifier, "vmmctl run --kernel \(kernel)")
    // Ended on every path, a cancelled or failed wait included.
    defer {
        if process.isRunning { process.terminate(); process.waitUntilExit() }
        SpawnedProcesses.unregister(process.processIdentifier)
    }
    var missing = expecting
    var text = ""
    while process.isRunning, Date().timeIntervalSince(start) < deadline {
        try await Task.sleep(nanoseconds: 100_000_000)
        text = (try? String(contentsOf: log, encoding: .utf8)) ?? text
        missing.removeAll { text.contains($0) }
        if stopWhenSeen, missing.isEmpty { break }
    }
    let seconds = Date().timeIntervalSince(start)
    let stoppedByUs = process.isRunning
    if stoppedByUs { process.terminate() }
    process.waitUntilExit()
    text = (try? String(contentsOf: log, encoding: .utf8)) ?? text
    missing.removeAll { text.contains($0) }
    return LinuxBoot(log: text, missing: missing, status: stoppedByUs ? nil : process.terminationStatus, seconds: seconds)
}

func kernelBytes(_ name: String) throws -> [UInt8] {
    try [UInt8](Data(contentsOf: URL(fileURLWithPath: LinuxKernel.path(name))))
}

@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .enabled(if: LinuxKernel.available, LinuxKernel.skipReason),
       .serialized)
struct LinuxBootTests {
    static let commandLine = "console=ttyS0 earlyprintk=serial swiftvmm.test=1"

    /// Debian's vmlinux through its PVH entry: ~20 s here to the point where Linux has
    /// listed the ACPI tables and counted the CPUs; the machine stops right there.
    @Test(.timeLimit(.minutes(5))) func pvhVmlinuxShowsACPIAndBothCPUs() async throws {
        let image = try kernelBytes("vmlinux")
        #expect(try BootImageFormat.detect(image) == .pvhELF && BootImageFormat.isLinux(image))
        let boot = try await bootLinux("vmlinux", commandLine: Self.commandLine,
                                 expecting: LinuxKernel.expectations(commandLine: Self.commandLine), deadline: 240)
        print("PVH vmlinux: \(String(format: "%.1f", boot.seconds)) s to the last expected line")
        #expect(boot.missing.isEmpty, "never shown: \(boot.missing); vmmctl status \(boot.status.map(String.init) ?? "-")\n--- log tail ---\n\(boot.log.suffix(4000))")
        #expect(boot.status == nil, "the VM ended by itself before showing everything")
        #expect(!boot.log.contains("INT_SRC_OVR"), "an interrupt source override for a PIT the split irqchip does not have")
    }

    /// The bzImage itself, as far as this host's KVM gets: the decompressor runs first at
    /// emulated CPL 0, then the kernel enables the serial console and its FPU code (the
    /// template's `noxsave` at work: FXSAVE, not XSAVE), where the test stops it.
    @Test(.enabled(if: LinuxKernel.slow, "set VMM_SLOW_TESTS=1 for the bzImage boot (minutes on a KVM that emulates CPL 0)"),
          .timeLimit(.minutes(20)))
    func bzImageReachesTheConsoleAndFPUSetup() async throws {
        let expecting = LinuxKernel.expectations(commandLine: Self.commandLine)
            + ["noxsave", "printk: console [ttyS0] enabled", "ACPI: Core revision", "x86/fpu: x87 FPU will use FXSAVE"]
        #expect(try BootImageFormat.detect(kernelBytes("bzImage")) == .bzImage)
        let boot = try await bootLinux("bzImage", commandLine: Self.commandLine, expecting: expecting, deadline: 1100)
        print("bzImage: \(String(format: "%.1f", boot.seconds)) s to the last expected line")
        #expect(boot.missing.isEmpty, "never shown: \(boot.missing); vmmctl status \(boot.status.map(String.init) ?? "-")\n--- log tail ---\n\(boot.log.suffix(4000))")
        #expect(boot.status == nil, "the VM ended by itself before showing everything")
    }

    /// Debian's kernel as far as it gets in 30 minutes on a KVM that emulates CPL 0: with
    /// the emulation assist it passes the int3 self-test and brings up both CPUs; then its
    /// own CPU-bound boot work (ftrace record check, BTF, X.509) at ~1 µs an instruction
    /// is the limit. Prints the last line it reached.
    @Test(.enabled(if: LinuxKernel.slow, "set VMM_SLOW_TESTS=1 for the 30-minute boot of Debian's kernel"),
          .timeLimit(.minutes(35)))
    func stockKernelAsFarAsItGetsInThirtyMinutes() async throws {
        let boot = try await bootLinux("vmlinux", commandLine: "console=ttyS0", expecting: [
            "smp: Brought up 1 node, 2 CPUs", "swift-vmm init: 2 CPUs online",
        ], stopWhenSeen: true, deadline: 1800)
        let last = boot.log.split(separator: "\n").last.map(String.init) ?? ""
        print("Debian vmlinux after \(String(format: "%.0f", boot.seconds)) s: \(boot.missing.isEmpty ? "reached init" : "last line: \(last)")")
        #expect(!boot.missing.contains("smp: Brought up 1 node, 2 CPUs"), "\(boot.log.suffix(4000))")
    }

    /// The whole way: init runs, counts both CPUs, sees kvm-clock and powers off through
    /// ACPI S5, which ends the VM with status 0. Debian's kernel needs more than 20
    /// minutes of emulated boot work on this project's test hosts; for hardware KVM.
    @Test(.enabled(if: LinuxKernel.fullBoot, "set VMM_FULL_BOOT_TESTS=1 on hardware KVM for the boot to init and power-off"),
          .timeLimit(.minutes(20)), arguments: ["vmlinux", "bzImage"])
    func bootsToInitAndPowersOff(kernel: String) async throws {
        let boot = try await bootLinux(kernel, commandLine: "console=ttyS0", expecting: [
            "swift-vmm init: 2 CPUs online", "swift-vmm init: clocksource kvm-clock", "reboot: Power down",
        ], stopWhenSeen: false, deadline: 1100)
        #expect(boot.missing.isEmpty, "never shown: \(boot.missing)\n--- log tail ---\n\(boot.log.suffix(4000))")
        #expect(boot.status == 0, "vmmctl's exit status: 0 is the guest's ACPI power-off")
    }
}
