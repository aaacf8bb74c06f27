import Boot
import Devices
import Dispatch
import Foundation
import Synchronization
import Testing
import VMM

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
    /// ACPI table, both CPUs and KVM's paravirtual clock.
    static func expectations(commandLine: String) -> [String] {
        ["Linux version 6.", "Command line: \(commandLine)",
         "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable",
         "BIOS-e820: [mem 0x000000000009fc00-",   // PVH Linux merges the reserved ranges up to 1 MiB
         "BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable",
         "Hypervisor detected: KVM", "kvm-clock: Using msrs 4b564d01 and 4b564d00",
         "ACPI: RSDP 0x00000000000E0000", "ACPI: XSDT 0x", "ACPI: FACP 0x", "ACPI: APIC 0x", "ACPI: DSDT 0x",
         "IOAPIC[0]: apic_id 2", "ACPI: INT_SRC_OVR (bus 0 bus_irq 0 global_irq 2 dfl dfl)",
         "smpboot: Allowing 2 CPUs, 0 hotplug CPUs"]
    }
}

/// Serial output that looks for lines and stops the machine once every one was seen,
/// so a boot test ends as soon as the kernel has said what it must.
final class BootLogWatcher: SerialOutput, @unchecked Sendable {
    // @unchecked: all state is behind `state`; `machine` is set once before the run.
    struct State {
        var text: [UInt8] = []
        var missing: [String]
        var lineStart = 0
    }
    let state: Mutex<State>
    nonisolated(unsafe) weak var machine: Machine?

    init(expecting: [String]) { state = Mutex(State(missing: expecting)) }

    func write(_ byte: UInt8) {
        let done = state.withLock { s -> Bool in
            s.text.append(byte)
            guard byte == 0x0A, !s.missing.isEmpty else { return false }
            let line = String(decoding: s.text[s.lineStart...], as: UTF8.self)
            s.lineStart = s.text.count
            s.missing.removeAll { line.contains($0) }
            return s.missing.isEmpty
        }
        if done { machine?.kill() }
    }

    var text: String { state.withLock { String(decoding: $0.text, as: UTF8.self) } }
    var missing: [String] { state.withLock { $0.missing } }
}

/// Boots `kernel` with 2 vCPUs and the initramfs; returns the log, what it never showed,
/// how the machine stopped and how long it took.
func bootLinux(_ kernel: String, commandLine: String, expecting: [String], stopWhenSeen: Bool = true, deadline: TimeInterval)
    throws -> (log: String, missing: [String], reason: StopReason, seconds: Double, format: BootImageFormat) {
    var config = MachineConfig()
    config.memoryMiB = 256
    config.cpus = 2
    config.cpuTemplate = .emulationSafe
    config.kernel = try [UInt8](Data(contentsOf: URL(fileURLWithPath: LinuxKernel.path(kernel))))
    config.initrd = try [UInt8](Data(contentsOf: URL(fileURLWithPath: LinuxKernel.path("initramfs.cpio.gz"))))
    config.commandLine = commandLine
    let watcher = BootLogWatcher(expecting: expecting)
    config.serialOutput = watcher
    let start = Date()
    let machine = try Machine(config: config)
    if stopWhenSeen { watcher.machine = machine }
    // The watchdog: a boot that never shows everything still ends.
    DispatchQueue.global().asyncAfter(deadline: .now() + deadline) { [weak machine] in machine?.kill() }
    let reason = try machine.run()
    return (watcher.text, watcher.missing, reason, Date().timeIntervalSince(start), machine.bootFormat)
}

@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .enabled(if: LinuxKernel.available, LinuxKernel.skipReason),
       .serialized)
struct LinuxBootTests {
    static let commandLine = "console=ttyS0 earlyprintk=serial swiftvmm.test=1"

    /// Debian's vmlinux through its PVH entry: ~20 s here to the point where Linux has
    /// listed the ACPI tables and counted the CPUs; the machine stops right there.
    @Test(.timeLimit(.minutes(5))) func pvhVmlinuxShowsACPIAndBothCPUs() throws {
        let boot = try bootLinux("vmlinux", commandLine: Self.commandLine,
                                 expecting: LinuxKernel.expectations(commandLine: Self.commandLine), deadline: 240)
        print("PVH vmlinux: \(String(format: "%.1f", boot.seconds)) s to the last expected line; \(boot.reason)")
        #expect(boot.format == .pvhELF)
        #expect(BootImageFormat.isLinux(try [UInt8](Data(contentsOf: URL(fileURLWithPath: LinuxKernel.path("vmlinux"))))))
        #expect(boot.log.contains("noxsave") || !boot.log.contains("x86/fpu: Supporting XSAVE"))
        #expect(boot.missing.isEmpty, "never shown: \(boot.missing)\n--- log tail ---\n\(boot.log.suffix(4000))")
        #expect(boot.reason == .killed)
    }

    /// The bzImage itself, as far as this host's KVM gets: the decompressor runs first at
    /// emulated CPL 0, then the kernel enables the serial console and its FPU code (the
    /// template's `noxsave` at work: FXSAVE, not XSAVE). Next, on this host, its int3
    /// self-test stops it; on hardware KVM it goes on to init.
    @Test(.enabled(if: LinuxKernel.slow, "set VMM_SLOW_TESTS=1 for the bzImage boot (minutes on a KVM that emulates CPL 0)"),
          .timeLimit(.minutes(20)))
    func bzImageReachesTheConsoleAndFPUSetup() throws {
        let expecting = LinuxKernel.expectations(commandLine: Self.commandLine)
            + ["noxsave", "printk: console [ttyS0] enabled", "ACPI: Core revision", "x86/fpu: x87 FPU will use FXSAVE"]
        let boot = try bootLinux("bzImage", commandLine: Self.commandLine, expecting: expecting, deadline: 1100)
        print("bzImage: \(String(format: "%.1f", boot.seconds)) s to the last expected line; \(boot.reason)")
        #expect(boot.format == .bzImage)
        #expect(boot.missing.isEmpty, "never shown: \(boot.missing)\n--- log tail ---\n\(boot.log.suffix(4000))")
        #expect(boot.reason == .killed)
    }

    /// The whole way: init runs, counts both CPUs, sees kvm-clock and powers off through
    /// ACPI S5, which ends the VM with status 0. Not reachable on a KVM that cannot
    /// deliver int3 at CPL 0 (this project's test hosts); for hardware KVM.
    @Test(.enabled(if: LinuxKernel.fullBoot, "set VMM_FULL_BOOT_TESTS=1 on hardware KVM for the boot to init and power-off"),
          .timeLimit(.minutes(20)), arguments: ["vmlinux", "bzImage"])
    func bootsToInitAndPowersOff(kernel: String) throws {
        let boot = try bootLinux(kernel, commandLine: "console=ttyS0", expecting: [
            "swift-vmm init: 2 CPUs online", "swift-vmm init: clocksource kvm-clock", "reboot: Power down",
        ], stopWhenSeen: false, deadline: 1100)
        #expect(boot.missing.isEmpty, "never shown: \(boot.missing)\n--- log tail ---\n\(boot.log.suffix(4000))")
        #expect(boot.reason == .powerOff && boot.reason.exitStatus == 0)
    }
}
