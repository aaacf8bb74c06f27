import Boot
import Devices
import Hypercalls
import Logging

/// Everything needed to build a `Machine`.
public struct MachineConfig: Sendable {
    /// Guest RAM in MiB (split around the 3-4 GiB MMIO hole when larger than 3 GiB).
    public var memoryMiB: UInt64 = 128
    /// Number of vCPUs; vCPU 0 boots, the others wait for INIT/SIPI.
    public var cpus: Int = 1
    /// The kernel image bytes (format detected by the loader).
    public var kernel: [UInt8] = []
    public var initrd: [UInt8]?
    public var commandLine: String = ""
    /// Attach the QEMU-compatible debug-exit port at 0xF4.
    public var debugExit: Bool = false
    /// Where COM1 output goes.
    public var serialOutput: any SerialOutput = NullOutput()
    /// Restart the guest on reset (i8042 0xFE, ACPI reset); otherwise the machine stops with `.reset`.
    public var rebootOnReset: Bool = true
    /// Treat a triple fault as a reset and reboot (a PC's behaviour); otherwise the machine
    /// stops with `.tripleFault` (the default: a triple fault is usually a bug to look at).
    public var rebootOnTripleFault: Bool = false
    /// Give the guest interrupt controllers: KVM's local APICs, and an IOAPIC where
    /// `irqchip` says. Without them, `hlt` exits to the VMM (and ends the machine as
    /// `.halt`, since nothing could wake the vCPU).
    public var inKernelIRQChip: Bool = true
    /// Where the IOAPIC (and a PIC and PIT) live when `inKernelIRQChip` is on: the VMM's
    /// IOAPIC by default (a VM closes in under a millisecond instead of 8-24 ms of SRCU
    /// grace periods), KVM's for a guest that needs a PIC or a PIT.
    public var irqchip: IRQChipMode = .split
    /// How the vCPUs are arranged (CPUID leaves 1, 4, 0BH, 1FH and the MADT); nil means
    /// one socket of `cpus` single-threaded cores. Its CPU count must equal `cpus`.
    public var topology: CPUTopology?
    /// Which CPUID features the guest sees (`CPUTemplate.all`).
    public var cpuTemplate: CPUTemplate = .host
    /// Build ACPI tables (RSDP, XSDT, FADT, MADT, DSDT) at boot and pass the RSDP to the
    /// kernel. Needs the interrupt controllers, whose IOAPIC and LAPICs the MADT describes.
    public var acpi: Bool = true

    /// Whether the VMM finishes what the host's instruction emulator refuses
    /// (`EmulationAssist`): `auto` turns it on only where a probe VM shows it is needed.
    public var emulationAssist: EmulationAssistMode = .auto
    /// Disks, each a virtio-blk device in this order: the first is the root disk
    /// (Linux's /dev/vda).
    public var disks: [DiskConfig] = []
    /// A virtio-rng device (after the disks).
    public var rng: Bool = false
    /// Network devices (virtio-net), each on a tap, after the entropy device.
    public var networks: [NetworkConfig] = []
    /// A virtio-vsock device (the last virtio device).
    public var vsock: VsockConfig?
    /// How virtio queue notifications and interrupts travel (`VirtioNotification`).
    public var virtioNotification: VirtioNotification = .ioeventfd
    /// Also announce the virtio devices on a Linux command line (`virtio_mmio.device=`,
    /// for kernels with CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES); ACPI always describes them.
    /// Off by default: a kernel that reads both would probe each device twice.
    public var virtioOnCommandLine: Bool = false

    /// Log the pages that change — KVM's dirty log on every memory slot, and the VMM's
    /// own writes — so that a snapshot can be a diff of the one before it
    /// (`SnapshotOptions.Kind.diff`). Costs a write-protection fault on the first write
    /// to each page after every snapshot.
    public var trackDirtyPages: Bool = false

    /// The VM's name: what the `vm_name` hypercall answers and what log lines carry.
    public var name: String = "vm"
    /// Enable the hypercall doorbell and set CPUID 0x40000001 bit 0 (off by default:
    /// hypercalls are an attack surface the VM's owner opts into).
    public var hypercalls: Bool = false
    /// Extra calls a library user offers the guest (built-ins are added to it). Used only
    /// when `hypercalls` is on.
    public var hypercallRegistry: HypercallRegistry = HypercallRegistry()
    /// Where the VMM logs (guest `log` hypercalls land here, with the VM's name).
    public var logger = DeferredLogHandler.logger(label: "swift-vmm")

    /// Upper bounds a request is checked against.
    public static let maxMemoryMiB: UInt64 = 1 << 20   // 1 TiB
    public static let maxCPUs = 254                    // xAPIC IDs 0-254; 255 is broadcast

    public init() {}
}
