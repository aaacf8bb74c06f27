import Devices
import VMM

/// `vmmctl run --verbose`: the platform devices and every virtio device's MMIO window
/// and IRQ, from the machine's one layout, on stderr.
func printDevices(_ machine: Machine) {
    printError("vmmctl: devices:")
    printError("  com1        port 0x3f8-0x3ff  irq 4")
    let disks = machine.config.disks
    var disk = 0
    for slot in machine.deviceLayout.slots {
        let end = slot.base + slot.size - 1
        var line = "  \(slot.name.padded(to: 10))  mmio 0x\(String(slot.base, radix: 16))-0x\(String(end, radix: 16))  irq \(slot.gsi)  \(slot.kind)"
        if slot.kind == "virtio-blk", disk < disks.count {
            let d = disks[disk]
            line += "  \(d.path)\(d.readOnly ? " readonly" : "")\(d.serial.isEmpty ? "" : " serial=\(d.serial)")\(d.backend.direct ? " direct" : "")"
            line += "  \(d.backend.size / 512) sectors"
            disk += 1
        }
        if slot.kind == "virtio-net", let n = Int(slot.name.dropFirst(3)), n < machine.config.networks.count {
            let network = machine.config.networks[n]
            line += "  tap \(network.tap.name) mac \(network.mac)"
        }
        if slot.kind == "virtio-vsock", let vsock = machine.config.vsock {
            line += "  cid \(vsock.guestCID) socket \(vsock.path)"
        }
        printError(line)
    }
    printError("  virtio notifications: \(machine.config.virtioNotification.rawValue)")
}

/// `vmmctl run --verbose`, after the guest stopped: each device's counters, one line per
/// device (the same figures as `vmmctl stats` for a vmmd VM).
func printDeviceStatistics(_ machine: Machine) {
    for device in machine.statistics().devices {
        printError("vmmctl: statistics \(device.name): " + device.counters.map { "\($0.name) \($0.value)" }.joined(separator: ", "))
    }
}
