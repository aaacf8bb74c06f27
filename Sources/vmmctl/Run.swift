import ArgumentParser
import Boot
import Debug
import Devices
import KVM
import Logging
import VMM
import VMMAPI
#if canImport(Glibc)
import Glibc
#endif

/// Where `--serial` sends COM1.
enum SerialTarget: ExpressibleByArgument {
    case stdio, none, file(String)

    init?(argument: String) {
        switch argument {
        case "stdio": self = .stdio
        case "none": self = .none
        default:
            guard argument.hasPrefix("file:"), argument.count > 5 else { return nil }
            self = .file(String(argument.dropFirst(5)))
        }
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        // Marks `run` as a subcommand even when `VMMCtl.parseRunAlone` parses it alone: a
        // root command first parses its arguments twice more looking for
        // `--generate-completion-script` (which the fast path leaves to the root parse),
        // a third of the parse. In the root parse `run` is not the root, and this is unused.
        _superCommandName: "vmmctl",
        abstract: "Boot a kernel in the foreground and run it until the guest stops.")

    @Option(help: "Kernel image: a bzImage (/boot/vmlinuz-*), a PVH ELF (vmlinux, test guests) or a multiboot kernel; the format is detected. Not with --restore.")
    var kernel: String?

    @Option(help: "Initial ramdisk (boot_params ramdisk for a bzImage, module 0 for PVH and multiboot).")
    var initrd: String?

    @Option(help: "Kernel command line.")
    var cmdline: String = RunRequest.defaults.cmdline

    @Option(help: "Guest RAM in MiB.")
    var memory: UInt64 = RunRequest.defaults.memory

    @Option(help: "Number of vCPUs (default 1, or the --topology's count).")
    var cpus: Int?

    @Option(help: "CPU topology, sockets=S,cores=C,threads=T (CPUID and MADT); the product must equal --cpus, which defaults to it.")
    var topology: String?

    @Option(help: "CPU template: which CPUID features the guest sees (see `vmmctl cpu-templates`).")
    var cpuTemplate: String = RunRequest.defaults.cpuTemplate

    @Flag(help: "Attach the debug-exit port (0xf4): a write of V ends the VM with status (V << 1) | 1.")
    var debugExit = false

    @Option(help: "COM1: stdio, file:PATH or none.")
    var serial: SerialTarget = RunRequest.defaults.serial

    @Flag(help: "End with status 2 when the guest resets, instead of rebooting it.")
    var noReboot = false

    @Flag(help: "Reboot on a triple fault, as a PC does, instead of ending with status 6.")
    var rebootOnTripleFault = false

    @Flag(help: "Enable the hypercall doorbell (docs/hypercalls.md). Off by default.")
    var hypercalls = false

    @Option(help: "The VM's name (the vm_name hypercall returns it; log lines carry it).")
    var name: String = RunRequest.defaults.name

    @Option(help: "Serve gdb's remote protocol on tcp:HOST:PORT (IPv4; port 0 picks one) or unix:PATH (docs/debugging.md).")
    var gdb: GDBEndpointArgument?

    @Flag(help: "With --gdb: wait for gdb to attach before the first guest instruction.")
    var gdbWait = false

    @Option(help: "Finish in the VMM what this host's instruction emulator refuses: auto (when a probe VM shows it is needed), on, off.")
    var emulationAssist: EmulationAssistMode = RunRequest.defaults.emulationAssist
    @Option(help: ArgumentHelp("A virtio-blk disk (repeatable; the first is the root disk, /dev/vda): a raw image, read-write unless readonly, O_DIRECT with direct, GET_ID answering serial.",
                               valueName: DiskOption.helpText))
    var disk: [DiskOption] = []

    @Flag(help: "Add a virtio-rng device (bytes from getrandom).")
    var rng = false

    @Option(help: ArgumentHelp("A virtio-net device on a tap (repeatable); the MAC is random unless given.",
                               valueName: NetOption.helpText))
    var net: [NetOption] = []

    @Option(help: ArgumentHelp("A virtio-vsock device: the guest's CID and the Unix socket host processes connect to (CONNECT <port>); guest connections to host port P go to PATH_P.",
                               valueName: VsockOption.helpText))
    var vsock: VsockOption?

    @Option(help: "How virtio notifications travel: ioeventfd (KVM ioeventfd + irqfd, a device thread) or bus (an MMIO exit served on the vCPU thread).")
    var virtioNotify: String = RunRequest.defaults.virtioNotify

    @Flag(help: "Also list the virtio devices on the Linux command line (virtio_mmio.device=, CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES).")
    var virtioCmdline = false

    @Option(help: "Interrupt controllers: kernel (KVM's IOAPIC, PIC and PIT) or split (the IOAPIC in the VMM, no PIC or PIT: the VM closes in about a tenth of the time).")
    var irqchip: IRQChipMode = RunRequest.defaults.irqchip

    @Flag(help: "Print the devices (MMIO windows and IRQs) before the guest starts.")
    var verbose = false

    @OptionGroup(title: "Snapshots")
    var snapshot: RunSnapshotOptions

    func run() throws {
        try request.run()
    }

    /// The options as plain values.
    var request: RunRequest {
        RunRequest(kernel: kernel, initrd: initrd, cmdline: cmdline, memory: memory, cpus: cpus, topology: topology,
                   cpuTemplate: cpuTemplate, debugExit: debugExit, serial: serial, noReboot: noReboot,
                   rebootOnTripleFault: rebootOnTripleFault, hypercalls: hypercalls, name: name, gdb: gdb, gdbWait: gdbWait,
                   emulationAssist: emulationAssist, disk: disk, rng: rng, net: net, vsock: vsock, virtioNotify: virtioNotify,
                   virtioCmdline: virtioCmdline, irqchip: irqchip, verbose: verbose, snapshot: snapshot.request)
    }
}

/// What `vmmctl run` was asked to do: `Run`'s options as plain values (their defaults
/// are these), so that `RunRequest.fastParse` can fill them without ArgumentParser.
struct RunRequest {
    static let defaults = RunRequest()

    var kernel: String?
    var initrd: String?
    var cmdline = ""
    var memory: UInt64 = 128
    var cpus: Int?
    var topology: String?
    var cpuTemplate = CPUTemplate.host.name
    var debugExit = false
    var serial = SerialTarget.stdio
    var noReboot = false
    var rebootOnTripleFault = false
    var hypercalls = false
    var name = "vm"
    var gdb: GDBEndpointArgument?
    var gdbWait = false
    var emulationAssist = EmulationAssistMode.auto
    var disk: [DiskOption] = []
    var rng = false
    var net: [NetOption] = []
    var vsock: VsockOption?
    var virtioNotify = VirtioNotification.ioeventfd.rawValue
    var virtioCmdline = false
    var irqchip = IRQChipMode.split
    var verbose = false
    /// nil: no snapshot option given (as ArgumentParser's group with every default).
    var snapshot: RunSnapshotRequest?

    func run() throws {
        var config = MachineConfig()
        config.memoryMiB = memory
        do {
            config.cpuTemplate = try CPUTemplate.named(cpuTemplate)
            if let topology {
                let parsed = try CPUTopology(parsing: topology)
                config.topology = parsed
                config.cpus = cpus ?? parsed.cpuCount
            } else {
                config.cpus = cpus ?? 1
            }
        } catch {
            fail("\(error)")
        }
        config.commandLine = cmdline
        config.debugExit = debugExit
        config.rebootOnReset = !noReboot
        config.rebootOnTripleFault = rebootOnTripleFault
        config.hypercalls = hypercalls
        config.name = name
        config.trackDirtyPages = snapshot?.trackDirtyPages ?? false
        guard (kernel == nil) != (snapshot?.restore == nil) else { fail("give --kernel PATH, or --restore DIR (not both)") }
        config.emulationAssist = emulationAssist
        do {
            if let kernel { config.kernel = try readFile(kernel) }
            if let initrd { config.initrd = try readFile(initrd) }
            config.disks = try disk.map { try $0.open() }
            config.networks = try net.map { try $0.open() }
            config.vsock = try vsock?.open()
        } catch {
            fail("\(error)")
        }
        config.rng = rng
        guard let notification = VirtioNotification(rawValue: virtioNotify) else {
            fail("--virtio-notify must be one of: \(VirtioNotification.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        config.virtioNotification = notification
        config.virtioOnCommandLine = virtioCmdline
        config.irqchip = irqchip
        if gdbWait && gdb == nil { fail("--gdb-wait needs --gdb") }
        let status = runMachine(config, serial: serial, verbose: verbose, gdb: gdb.map { ($0.endpoint, gdbWait) },
                                snapshot: snapshot, restoredName: name == "vm" ? nil : name)
        throw ExitCode(status)
    }
}

extension EmulationAssistMode: ExpressibleByArgument {}
extension IRQChipMode: ExpressibleByArgument {}
extension EmulationAssistSetting: ExpressibleByArgument {}

/// Builds and runs a machine, printing one line on stderr about how it ended; returns
/// the exit status.
func runMachine(_ base: MachineConfig, serial: SerialTarget, verbose: Bool = false,
                gdb: (GDBEndpoint, wait: Bool)? = nil,
                snapshot: RunSnapshotRequest? = nil, restoredName: String? = nil) -> Int32 {
    VMMCtl.bootstrapLogging
    var config = base
    config.logger = Logger(label: "vmmctl")
    var outputFD: Int32 = -1
    switch serial {
    case .stdio: config.serialOutput = FileDescriptorOutput(fd: STDOUT_FILENO)
    case .none: config.serialOutput = NullOutput()
    case .file(let path):
        outputFD = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard outputFD >= 0 else { fail("cannot open serial log \(path): \(String(cString: strerror(errno)))") }
        config.serialOutput = FileDescriptorOutput(fd: outputFD)
    }
    defer { if outputFD >= 0 { close(outputFD) } }

    // The probe VM's answer and the supported CPUID from an earlier run on this host
    // boot, and this run's for the next.
    let probeCache = config.emulationAssist == .off ? nil : HostEmulationCache.standard()
    let cached = probeCache?.load()
    if let cached { HostEmulation.assume(cached.emulation) }
    let machine: Machine
    do {
        let kvm = try KVMSystem()
        if let cpuid = cached?.supportedCPUID, !cpuid.isEmpty { kvm.adoptSupportedCPUID(cpuid) }
        machine = try snapshot?.restoredMachine(config, named: restoredName, kvm: kvm) ?? Machine(config: config, kvm: kvm)
        if cached?.supportedCPUID.isEmpty ?? true, let probeCache, let found = HostEmulation.known {
            probeCache.store(.init(emulation: found, supportedCPUID: try kvm.supportedCPUID()))
        }
    } catch {
        fail("\(error)")
    }
    if verbose { printDevices(machine) }
    if case .stdio = serial { machine.forwardInput(fromDescriptor: STDIN_FILENO) }
    let reason: StopReason
    do {
        snapshot?.installSignalHandlers(machine)
        if let gdb {
            reason = try runUnderDebugger(machine, at: gdb.0, wait: gdb.wait)
        } else {
            try machine.start(paused: snapshot?.paused == true && snapshot?.restore != nil)
            reason = try machine.waitForStop()
        }
    } catch {
        fail("\(error)")
    }
    let status = reason.exitStatus
    if verbose { printDeviceStatistics(machine) }
    let assisted = machine.assistedInstructions
    if !assisted.isEmpty {
        printError("vmmctl: emulation assist: " + assisted.map { "\($0.name) \($0.count)" }.joined(separator: ", "))
    }
    printError("vmmctl: \(reason) (exit status \(status))")
    return status
}

func readFile(_ path: String) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw ValidationError("cannot open \(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var result: [UInt8] = []
    // As large as the file (one read and the end), at most 1 MiB: zeroing a buffer much
    // larger than a small guest costs more page faults than running it.
    var st = stat()
    let size = fstat(fd, &st) == 0 && st.st_size > 0 ? Int(st.st_size) : 0
    var chunk = [UInt8](repeating: 0, count: min(max(size + 1, 4096), 1 << 20))
    while true {
        let n = read(fd, &chunk, chunk.count)
        if n < 0 && errno == EINTR { continue }
        guard n >= 0 else { throw ValidationError("cannot read \(path): \(String(cString: strerror(errno)))") }
        if n == 0 { return result }
        result += chunk[0 ..< n]
    }
}

func printError(_ line: String) {
    let text = line + "\n"
    _ = text.withCString { write(STDERR_FILENO, $0, strlen($0)) }
}

func fail(_ message: String) -> Never {
    printError("vmmctl: error: \(message)")
    exit(ExitStatus.vmmError)
}
