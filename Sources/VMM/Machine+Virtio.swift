import Boot
import Devices
import GuestMemory
import KVM

extension Machine {
    /// The virtio devices of `config` in device order — disks (root first), then the
    /// entropy device — each on its own MMIO window and GSI, registered on `bus`.
    static func buildVirtioDevices(_ config: MachineConfig, vm: KVMVM, memory: GuestMemory,
                                   bus: MMIOBus) throws -> (DeviceLayout, [VirtioDeviceHost]) {
        var devices: [(any VirtioDevice, [Int32])] = config.disks.map {
            (BlockDevice(backend: $0.backend, readOnly: $0.readOnly, serial: $0.serial), [$0.backend.fd])
        }
        if config.rng { devices.append((EntropyDevice(), [])) }
        let layout = try DeviceLayout(kinds: devices.map { $0.0.deviceType == .block ? "virtio-blk" : "virtio-rng" })
        var hosts: [VirtioDeviceHost] = []
        for (slot, (device, fds)) in zip(layout.slots, devices) {
            let host = try VirtioDeviceHost(slot: slot, device: device, vm: vm, memory: memory,
                                            notification: config.virtioNotification, irqchip: config.inKernelIRQChip,
                                            extraDescriptors: fds)
            hosts.append(host)
            try bus.register(host.transport, base: slot.base, length: slot.size)
        }
        return (layout, hosts)
    }

    /// The DSDT entries of the virtio devices: `_HID` "LNRO0005", the window as
    /// Memory32Fixed and the GSI as an edge-triggered, active-high Interrupt (see
    /// `VirtioMMIOTransport` for why edges).
    var virtioACPIDevices: [ACPIDevice] {
        deviceLayout.slots.enumerated().map { i, slot in
            ACPIDevice.virtioMMIO(index: i, base: UInt32(truncatingIfNeeded: slot.base), length: UInt32(slot.size), gsi: slot.gsi)
        }
    }

    /// `line` plus `virtio_mmio.device=` for each device, when the config asks for it
    /// and the kernel is Linux.
    static func withVirtioParameters(_ line: String, _ config: MachineConfig, layout: DeviceLayout) -> String {
        guard config.virtioOnCommandLine, BootImageFormat.isLinux(config.kernel), !layout.slots.isEmpty else { return line }
        return ([line] + layout.commandLineParameters).filter { !$0.isEmpty }.joined(separator: " ")
    }

    /// The transport of the device named `name` (blk0, rng0, ...), for tests and tools.
    public func virtioTransport(named name: String) -> VirtioMMIOTransport? {
        virtioDevices.first { $0.slot.name == name }?.transport
    }

    /// Descriptors the virtio devices use (disk images, eventfds): a sandbox that closes
    /// stray descriptors must keep these.
    public var virtioDescriptors: [Int32] { virtioDevices.flatMap(\.descriptors) }
}
