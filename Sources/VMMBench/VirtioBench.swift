// vmm-bench, virtio part: the block device path with no guest, against plain
// pread/pwrite of the same file; and what one queue notification and one interrupt
// cost through each path (MMIO exit on the bus, ioeventfd; KVM_IRQ_LINE, irqfd),
// against a plain port-I/O exit.
import CKVM
import Devices
import Foundation
import GuestMemory
import KVM
import VMM

/// An interrupt line nobody listens to (the block benchmark has no guest).
struct SilentLine: InterruptLine {
    func set(_ level: Bool) {}
}

/// The driver side of the benchmark: negotiates VERSION_1 and INDIRECT_DESC, as Linux
/// does, and sets up queue 0 with the transport's own registers, at fixed guest addresses.
enum BenchDriver {
    static let table: UInt64 = 0x10_0000, avail: UInt64 = 0x11_0000, used: UInt64 = 0x12_0000

    static func activate(_ t: VirtioMMIOTransport, queueSize: UInt32) {
        func set(_ offset: UInt64, _ value: UInt32) { t.write(offset: offset, size: 4, value: UInt64(value)) }
        set(0x70, 0); set(0x70, 1); set(0x70, 3)
        set(0x24, 0); set(0x20, 1 << 28)                // VIRTIO_RING_F_INDIRECT_DESC
        set(0x24, 1); set(0x20, 1)                      // VERSION_1
        set(0x70, 11)
        set(0x30, 0); set(0x38, queueSize)
        set(0x80, UInt32(table)); set(0x90, UInt32(avail)); set(0xA0, UInt32(used))
        set(0x44, 1)
        set(0x70, 15)
    }
}

struct BlockBenchResult {
    /// The device as a VM has it (an O_DIRECT disk batching on its io_uring where the host has one).
    var deviceNs: [Double] = []
    /// O_DIRECT only: the same device with every request its own system call (BlockBackend(ring: false)).
    var synchronousNs: [Double] = []
    var plainNs: [Double] = []
    /// Whether `deviceNs` had a ring.
    var ring = false
}

/// One virtio-blk device model over the benchmark's file, on guest memory of its own,
/// and the requests of a batch written as Linux writes them: one indirect descriptor
/// each, to a table of three (header, one data buffer, status byte). Linux puts every
/// request of more than one buffer in an indirect table once INDIRECT_DESC is offered.
struct BenchDisk {
    let memory: GuestMemory
    let transport: VirtioMMIOTransport
    let backend: BlockBackend
    var availIndex: UInt16 = 0
    static let headers: UInt64 = 0x20_0000, statuses: UInt64 = 0x21_0000, indirectTables: UInt64 = 0x22_0000
    static let data: UInt64 = 0x100_0000

    init(path: String, ring: Bool, direct: Bool) throws {
        memory = try GuestMemory.create(ramSize: 128 << 20)
        backend = try BlockBackend.open(path: path, readOnly: false, direct: direct, ring: ring)
        transport = VirtioMMIOTransport(device: BlockDevice(backend: backend, readOnly: false), memory: memory, interrupt: SilentLine())
        BenchDriver.activate(transport, queueSize: 256)
    }

    /// Makes `offsets.count` requests of `size` bytes available (not yet notified).
    mutating func prepare(_ offsets: [UInt64], size: Int, write: Bool) throws {
        func descriptor(_ at: UInt64, _ address: UInt64, _ length: UInt32, _ flags: UInt16, next: UInt16) throws {
            try memory.writeInteger(address, at: GuestAddress(at))
            try memory.writeInteger(length, at: GuestAddress(at + 8))
            try memory.writeInteger(flags, at: GuestAddress(at + 12))
            try memory.writeInteger(next, at: GuestAddress(at + 14))
        }
        for (i, offset) in offsets.enumerated() {
            let h = Self.headers + 16 * UInt64(i), s = Self.statuses + UInt64(i), table = Self.indirectTables + 48 * UInt64(i)
            let buffer = Self.data + UInt64(i * size)
            try memory.writeInteger(UInt32(write ? 1 : 0), at: GuestAddress(h))
            try memory.writeInteger(UInt32(0), at: GuestAddress(h + 4))
            try memory.writeInteger(offset / 512, at: GuestAddress(h + 8))
            try descriptor(table, h, 16, 1, next: 1)
            try descriptor(table + 16, buffer, UInt32(size), write ? 1 : 3, next: 2)
            try descriptor(table + 32, s, 1, 2, next: 0)
            try descriptor(BenchDriver.table + 16 * UInt64(i), table, 48, 4, next: 0)
            try memory.writeInteger(UInt16(i), at: GuestAddress(BenchDriver.avail + 4 + 2 * UInt64(availIndex % 256)))
            availIndex &+= 1
        }
        try memory.writeInteger(availIndex, at: GuestAddress(BenchDriver.avail + 2))
    }

    /// ns to serve what `prepare` made available (one notification's work), checked.
    func serve(_ count: Int) throws -> Double {
        let t0 = now()
        transport.processQueue(0)
        let t = Double(now() - t0)
        for i in 0 ..< count where try memory.readInteger(UInt8.self, at: GuestAddress(Self.statuses + UInt64(i))) != 0 {
            die("block request \(i) failed")
        }
        return t
    }
}

/// `pairs` interleaved rounds of `perBatch` requests of `size` bytes at random aligned
/// offsets of a 64 MiB file in the page cache: through the virtio-blk model as a VM has
/// it (requests parsed from the ring, pread/pwrite into guest memory, used ring,
/// interrupt check) and as plain pread/pwrite into a host buffer. Each side has its own
/// offsets: with shared ones the later side of a round reads what the first just pulled
/// into the CPU's caches (paired medians swung 1.1-1.4 between runs). Returns ns per
/// request for each.
///
/// With `direct` every side opens the file with O_DIRECT, so each request reaches the
/// disk: the device batches on its io_uring, the same model without a ring runs beside
/// it, and the plain side reads and writes page-aligned memory (a `GuestMemory`,
/// through `readFile`/`writeFile`, a bounds check more than a bare pread).
func blockBenchmark(work: String, size: Int, write: Bool, pairs: Int, perBatch: Int = 64, direct: Bool = false) throws -> BlockBenchResult {
    let path = work + "/blk-bench.img"
    let fileSize = 64 << 20
    let fill = [UInt8](repeating: 0x5A, count: fileSize)
    _ = FileManager.default.createFile(atPath: path, contents: Data(fill))
    defer { try? FileManager.default.removeItem(atPath: path) }
    var device = try BenchDisk(path: path, ring: true, direct: direct)
    // Only an O_DIRECT disk has a ring (BlockBackend.ring): there the same model without
    // one runs beside it.
    var synchronous = direct ? try BenchDisk(path: path, ring: false, direct: direct) : nil
    let plainFD = open(path, O_RDWR | O_CLOEXEC | (direct ? CKVM_O_DIRECT : 0))
    guard plainFD >= 0 else { die("cannot open \(path)") }
    defer { close(plainFD) }
    // One host buffer per request, as the device has one guest buffer per request: the
    // same cache footprint on every side.
    var host = [UInt8](repeating: 0, count: size * perBatch)
    let aligned = try GuestMemory.create(ramSize: UInt64(max(size * perBatch, 1 << 20)))
    var result = BlockBenchResult()
    result.ring = device.backend.ring != nil

    func randomOffsets() -> [UInt64] { (0 ..< perBatch).map { _ in UInt64.random(in: 0 ..< UInt64(fileSize / size)) * UInt64(size) } }
    for round in 0 ... pairs {   // round 0 warms up (page cache, first touch of guest pages)
        try device.prepare(randomOffsets(), size: size, write: write)
        try synchronous?.prepare(randomOffsets(), size: size, write: write)
        let plainOffsets = randomOffsets()
        func plain() throws -> Double {
            let t0 = now()
            if direct {
                for (i, offset) in plainOffsets.enumerated() {
                    guard let range = GuestRange(start: GuestAddress(UInt64(i * size)), length: UInt64(size)) else { die("range") }
                    let n = write ? try aligned.writeFile(plainFD, offset: offset, from: range)
                                  : try aligned.readFile(plainFD, offset: offset, into: range)
                    if n != UInt64(size) { die("plain O_DIRECT transfer returned \(n)") }
                }
                return Double(now() - t0)
            }
            host.withUnsafeMutableBytes { buffer in
                for (i, offset) in plainOffsets.enumerated() {
                    let slot = buffer.baseAddress.map { $0 + i * size }
                    let n = write ? pwrite(plainFD, slot, size, off_t(offset)) : pread(plainFD, slot, size, off_t(offset))
                    if n != size { die("plain \(write ? "pwrite" : "pread") returned \(n)") }
                }
            }
            return Double(now() - t0)
        }
        // Every order of the three in turn, so no side is always first or last.
        var times = [0.0, 0.0, 0.0]
        let orders = [[0, 1, 2], [2, 0, 1], [1, 2, 0], [0, 2, 1], [1, 0, 2], [2, 1, 0]]
        for side in orders[round % orders.count] {
            switch side {
            case 0: times[0] = try device.serve(perBatch)
            case 1: times[1] = try synchronous?.serve(perBatch) ?? 0
            default: times[2] = try plain()
            }
        }
        if round > 0 {
            result.deviceNs.append(times[0] / Double(perBatch))
            if synchronous != nil { result.synchronousNs.append(times[1] / Double(perBatch)) }
            result.plainNs.append(times[2] / Double(perBatch))
        }
    }
    return result
}

/// ns per loop iteration of `guest` (bench.S's loop: N from 0x9000, debug-exit at the end)
/// on a machine built from `config`, after `prepare`.
func guestLoop(_ config: MachineConfig, iterations: UInt32, prepare: (Machine) -> Void = { _ in }) throws -> (Double, Machine) {
    let machine = try Machine(config: config)
    prepare(machine)
    try machine.memory.writeInteger(iterations, at: GuestAddress(0x9000))
    let t0 = now()
    let reason = try machine.run()
    let t = Double(now() - t0)
    guard reason == .debugExit(value: 0) else { die("loop guest stopped with \(reason)") }
    return (t / Double(iterations), machine)
}

/// The notification paths: a ring-3 loop of QueueNotify writes to an active virtio-blk
/// queue (nothing available: the cost of the notification itself), through the bus and
/// through an ioeventfd, against the same loop of port-0x80 writes; and the two ways a
/// device interrupts (KVM_IRQ_LINE pulse, irqfd write), timed from the host.
func notificationBenchmark(work: String, iterations: UInt32, rounds: Int) throws {
    let disk = work + "/notify.img"
    _ = FileManager.default.createFile(atPath: disk, contents: Data(count: 1 << 20))
    defer { try? FileManager.default.removeItem(atPath: disk) }
    var base = MachineConfig()
    base.memoryMiB = 64
    base.debugExit = true
    var port: [Double] = [], bus: [Double] = [], ioeventfd: [Double] = []
    var busHandled: UInt64 = 0, eventHandled: UInt64 = 0
    for _ in 0 ..< rounds {
        var p = base
        p.kernel = try [UInt8](Data(contentsOf: URL(fileURLWithPath: work + "/bench.elf")))
        port.append(try guestLoop(p, iterations: iterations).0)
        for mode in [VirtioNotification.bus, .ioeventfd] {
            var c = base
            c.kernel = try [UInt8](Data(contentsOf: URL(fileURLWithPath: work + "/notify.elf")))
            c.disks = [DiskConfig(backend: try BlockBackend.open(path: disk, readOnly: false, direct: false))]
            c.virtioNotification = mode
            let (ns, machine) = try guestLoop(c, iterations: iterations) { m in
                if let t = m.virtioTransport(named: "blk0") { BenchDriver.activate(t, queueSize: 8) }
            }
            let handled = machine.virtioTransport(named: "blk0")?.device.statistics.notifications.load(ordering: .relaxed) ?? 0
            if mode == .bus { bus.append(ns); busHandled = handled } else { ioeventfd.append(ns); eventHandled = handled }
        }
    }
    let portNs = median(port)
    print(String(format: "  queue notification, %u per run, medians of %d runs: port-I/O exit %.0f ns; MMIO exit on the bus %.0f ns (%.2f x port I/O); ioeventfd %.0f ns (%.2f x port I/O)",
                 iterations, rounds, portNs, median(bus), median(bus) / portNs, median(ioeventfd), median(ioeventfd) / portNs))
    print("    notifications the device acted on: bus \(busHandled) of \(iterations), ioeventfd \(eventHandled) (a device thread wake-up serves every notification since the last)")

    // Interrupts: the host side of each path, on a VM with the in-kernel irqchip.
    var config = base
    config.kernel = try [UInt8](Data(contentsOf: URL(fileURLWithPath: work + "/exit.elf")))
    let machine = try Machine(config: config)
    let event = try EventFD()
    try machine.vm.registerIRQFD(event, gsi: 7)
    let n = 100_000
    var t0 = now()
    for _ in 0 ..< n { try machine.vm.setIRQLine(6, level: true); try machine.vm.setIRQLine(6, level: false) }
    let line = Double(now() - t0) / Double(n)
    t0 = now()
    for _ in 0 ..< n { event.signal() }
    let irqfd = Double(now() - t0) / Double(n)
    print(String(format: "  interrupt edge from a device thread: KVM_IRQ_LINE assert+deassert %.0f ns, irqfd write %.0f ns (%.2f x)",
                 line, irqfd, irqfd / line))
}

/// The whole virtio section of vmm-bench.
func virtioBenchmarks(work: String, pairs: Int, iterations: UInt32, rounds: Int) {
    print("virtio (block path with no guest: \(pairs) interleaved batches of 64 requests, random offsets in a 64 MiB file in the page cache):")
    do {
        for (size, write, target) in [(4096, false, 1.15), (65536, false, 1.15), (4096, true, 1.25), (65536, true, 1.25)] {
            let r = try blockBenchmark(work: work, size: size, write: write, pairs: pairs)
            // Judged on the ratio of the medians: one batch preempted on a shared host
            // moves the ratio of the sums by a factor of several, the medians barely.
            let ratio = median(r.deviceNs) / median(r.plainNs)
            let sums = r.deviceNs.reduce(0, +) / r.plainNs.reduce(0, +)
            let paired = median(zip(r.deviceNs, r.plainNs).map { $0 / $1 })
            print(String(format: "  %@ %2d KiB: plain %@ %.0f ns/request, virtio-blk model %.0f ns/request, ratio %.3f (of sums %.3f, paired median %.3f) (target <= %.2f) %@",
                         write ? "write" : "read ", size >> 10, write ? "pwrite" : "pread ", median(r.plainNs), median(r.deviceNs),
                         ratio, sums, paired, target, ratio <= target ? "MET" : "MISSED"))
        }
        // The same model against a disk it really reads: O_DIRECT, so every request reaches
        // the device under the file system, and the ring's batch runs concurrently.
        for write in [false, true] {
            let r: BlockBenchResult
            do { r = try blockBenchmark(work: work, size: 4096, write: write, pairs: max(10, pairs / 10), direct: true) } catch {
                print("  O_DIRECT figures skipped: \(error) (this file system may have no O_DIRECT)")
                break
            }
            let ring = median(r.deviceNs), one = median(r.synchronousNs)
            print(String(format: "  O_DIRECT %@ 4 KiB: plain %@ %.0f ns/request; virtio-blk model %@ %.0f ns/request (%.2f x one system call per request, %.0f ns; %.2f x plain)",
                         write ? "write" : "read ", write ? "pwrite" : "pread ", median(r.plainNs),
                         r.ring ? "on the io_uring" : "(no io_uring here)", ring, ring / one, one, ring / median(r.plainNs)))
        }
        try notificationBenchmark(work: work, iterations: iterations, rounds: rounds)
    } catch {
        die("virtio benchmark: \(error)")
    }
}
