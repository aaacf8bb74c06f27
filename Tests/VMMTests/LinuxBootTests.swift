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
    static let modulesAvailable = FileManager.default.fileExists(atPath: path("modules/order"))

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

    /// Debian's stock kernel to userspace with Debian's own virtio drivers: the package's
    /// modules (scripts/fetch-linux.sh keeps them) loaded by insmod from the initramfs
    /// (scripts/test-kernel/load-modules). Debian builds virtio, virtio_ring, virtio_mmio,
    /// virtio_blk and virtio-rng as modules and virtio_mmio without
    /// CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, so the disks are found through the DSDT's
    /// LNRO0005 devices alone. Then the test kernel's device checks run on them
    /// (scripts/test-kernel/devices-check: /dev/vda with its serial, ext4 written and
    /// synced, 64 KiB of /dev/hwrng, the read-only disk read and its write refused), /init
    /// powers off through ACPI, and the host reads the image. One vCPU: on a KVM that
    /// emulates CPL 0 the kernel's own boot work (README, "Debian's stock kernel") takes it
    /// 22 minutes of wall time here to reach /init (32 beside a CI run), and a second vCPU
    /// only adds stop_machine rendezvous to wait for. The whole test: 41 minutes beside a
    /// CI run.
    @Test(.enabled(if: LinuxKernel.slow, "set VMM_SLOW_TESTS=1 for Debian's kernel to userspace (35-45 minutes here)"),
          .enabled(if: LinuxKernel.modulesAvailable, "no modules in .cache/linux/modules: run scripts/fetch-linux.sh"),
          .timeLimit(.minutes(75)))
    func stockKernelLoadsItsVirtioModulesAndUsesTheDisks() async throws {
        let modules = LinuxKernel.directory.appendingPathComponent("modules")
        let names = try String(contentsOf: modules.appendingPathComponent("order"), encoding: .utf8)
            .split(separator: "\n").map(String.init)
        let hook = packageRoot.appendingPathComponent("scripts/test-kernel/load-modules").path
        let devices = try TestKernelDevices(network: false, initramfsAdditions:
            ["\(hook):/etc/init.d/10-modules", modules.appendingPathComponent("order").path + ":/lib/modules/order"]
            + names.map { modules.appendingPathComponent("\($0).ko").path + ":/lib/modules/\($0).ko" })
        let boot = try ConsoleBoot(arguments: [
            "--kernel", LinuxKernel.path("vmlinux"), "--initrd", devices.initramfs,
            "--cmdline", "console=ttyS0 nowatchdog cryptomgr.notests=1 mitigations=off nopti vmm_action=poweroff vmm_token=\(devices.token)",
            "--cpus", "1", "--memory", "256", "--cpu-template", "emulation-safe", "--verbose",
            "--disk", "\(devices.rootImage),serial=\(devices.serial)", "--disk", "\(devices.readOnlyImage),readonly", "--rng"])
        func fail(_ what: String) -> Comment { "\(what) after \(String(format: "%.0f", boot.seconds)) s\n--- console tail ---\n\(boot.text.suffix(5000))" }
        let atInit = await boot.wait(for: "swift-vmm init: 1 CPUs online", deadline: 4200)
        #expect(atInit != nil, fail("/init never ran"))
        guard let atInit else { _ = await boot.finish(deadline: 0); return }
        print("Debian vmlinux: /init after \(String(format: "%.0f", atInit)) s")
        let status = await boot.finish(deadline: atInit + 1200)
        let out = boot.text
        #expect(status == 0, fail("vmmctl's exit status \(status.map(String.init) ?? "none"): 0 is the guest's ACPI power-off"))
        let expected = names.map { "modules: \($0) loaded" } + ["modules: /dev/vda after "] + [
            "devices: vda serial '\(devices.serial)' size \(TestKernelDevices.rootSectors) ro 0 cache 'write back'",
            "devices: rng current 'virtio_rng.0'",
            "devices: vda synced, boot 1", "devices: vda unmounted",
            "devices: vdb ro 1 first line '\(devices.readOnlyLine)'",
            "devices: vdb write refused: sh: write error: Operation not permitted",
            "reboot: Power down",
        ]
        let missing = expected.filter { !out.contains($0) }
        #expect(missing.isEmpty, fail("never shown: \(missing)"))
        let fromGuest = try devices.imageFile("from-guest").map { String(decoding: $0, as: UTF8.self) }
        #expect(fromGuest == "token \(devices.token) boot 1\n", "from-guest: \(String(describing: fromGuest))")
        let rng = try devices.imageFile("rng-1") ?? []
        #expect(rng.count == TestKernelDevices.rngBytes && Set(rng).count > 200, "rng-1: \(rng.count) bytes, \(Set(rng).count) distinct")
        let guestDigest = TestKernelDevices.guestRNGDigest(out, boot: 1)
        let hostDigest = try TestKernelDevices.sha256(rng, in: devices.directory)
        #expect(guestDigest != nil && guestDigest == hostDigest, "rng-1: the guest's sha256 \(guestDigest ?? "none") is not the image's")
        let fsck = devices.fsck()
        #expect(fsck.clean, "e2fsck -fn on the root image:\n\(fsck.output)")
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
