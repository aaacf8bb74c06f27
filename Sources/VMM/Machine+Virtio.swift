import Boot
import Devices
import GuestMemory
import KVM

extension Machine {
    /// The virtio devices of `config` in device order — disks (root first), the
    /// entropy device, the network devices, the vsock device — each on its own MMIO
    /// window and GSI, registered on `bus`.
    static func buildVirtioDevices(_ config: MachineConfig, vm: KVMVM, memory: GuestMemory,
                                   bus: MMIOBus, interrupts: InterruptWiring) throws -> (DeviceLayout, [VirtioDeviceHost]) {
        var devices: [(any VirtioDevice, [Int32])] = config.disks.map {
            (BlockDevice(backend: $0.backend, readOnly: $0.readOnly, serial: $0.serial), $0.backend.descriptors)
        }
        for (i, disk) in config.disks.enumerated() where disk.backend.direct {
            if let why = disk.backend.ringUnavailable {
                config.logger.notice("blk\(i): no io_uring on this host (\(why)): one system call per request")
            }
        }
        if config.rng { devices.append((EntropyDevice(), [])) }
        for network in config.networks {
            let device = try NetDevice(tap: network.tap, mac: network.mac)
            devices.append((device, device.descriptors))
        }
        if let vsock = config.vsock {
            let device = try VsockDevice(guestCID: vsock.guestCID, backend: vsock.backend, limits: vsock.limits)
            devices.append((device, device.descriptors))
        }
        let layout = try DeviceLayout(kinds: devices.map { Self.layoutKind($0.0.deviceType) })
        var hosts: [VirtioDeviceHost] = []
        for (slot, (device, fds)) in zip(layout.slots, devices) {
            let host = try VirtioDeviceHost(slot: slot, device: device, vm: vm, memory: memory,
                                            notification: config.virtioNotification, interrupts: interrupts,
                                            extraDescriptors: fds)
            hosts.append(host)
            try bus.register(host.transport, base: slot.base, length: slot.size)
        }
        return (layout, hosts)
    }

    static func layoutKind(_ type: Virtio.DeviceType) -> String {
        switch type {
        case .block: return "virtio-blk"
        case .entropy: return "virtio-rng"
        case .network: return "virtio-net"
        case .vsock: return "virtio-vsock"
        }
    }

    /// The vsock device, if the machine has one.
    public var vsockDevice: VsockDevice? {
        virtioDevices.lazy.compactMap { $0.transport.device as? VsockDevice }.first
    }

    /// Tells the guest every vsock connection is gone (VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
    /// on the event queue) after closing them: what a restored snapshot needs, since the
    /// host sockets its connections used do not exist any more. False without a vsock
    /// device.
    @discardableResult
    public func resetVsockTransport() -> Bool {
        guard let device = vsockDevice else { return false }
        device.resetTransport()
        return true
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

    /// The transport of the device named `name` (blk0, rng0, net0, vsock0, ...), for tests and tools.
    public func virtioTransport(named name: String) -> VirtioMMIOTransport? {
        virtioDevices.first { $0.slot.name == name }?.transport
    }

    /// Descriptors the virtio devices use (disk images, eventfds): a sandbox that closes
    /// stray descriptors must keep these.
    public var virtioDescriptors: [Int32] { virtioDevices.flatMap(\.descriptors) }
}
