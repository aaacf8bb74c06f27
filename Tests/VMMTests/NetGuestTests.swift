import Devices
import Foundation
import Testing
import VMM

/// Network namespaces and taps need root and iproute2.
enum NetnsGate {
    static let available = geteuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")
        && access("/dev/net/tun", R_OK | W_OK) == 0
    static let shouldRun = KVMGate.shouldRun && available
    static let skipReason: Comment = "needs /dev/kvm, root, /dev/net/tun and iproute2 (ip netns)"
}

/// A network namespace made for one test, with a tap inside at 10.213.N.1/24; removed
/// with the value. Nothing leaves it: the guest's peer is the namespace's own kernel.
final class TestNetns {
    let name: String
    let tapName: String
    let subnet: Int
    var hostAddress: String { "10.213.\(subnet).1" }
    var guestAddress: String { "10.213.\(subnet).2" }

    init() throws {
        subnet = Int(getpid() % 200) + Int.random(in: 1 ... 50)
        name = "svmm-\(getpid())-\(UInt16.random(in: 0 ... .max))"
        tapName = "svt\(UInt16.random(in: 0 ... .max))"
        try Self.ip(["netns", "add", name])
    }

    /// Moves the interface `tap` (created in this process's namespace) into the
    /// namespace, addresses it and brings it up.
    func adopt(tap: String) throws {
        try Self.ip(["link", "set", tap, "netns", name])
        try configure(tap)
    }

    /// Creates a persistent tap in the namespace, owned by `user` when given.
    func createTap(user: UInt32? = nil) throws {
        try Self.ip(["-n", name, "tuntap", "add", "dev", tapName, "mode", "tap"] + (user.map { ["user", "\($0)"] } ?? []))
        try configure(tapName)
    }

    private func configure(_ tap: String) throws {
        try Self.ip(["-n", name, "addr", "add", "\(hostAddress)/24", "dev", tap])
        try Self.ip(["-n", name, "link", "set", tap, "up"])
        try Self.ip(["-n", name, "link", "set", "lo", "up"])
    }

    deinit { _ = runProcess("/usr/sbin/ip", ["netns", "del", name]) }

    static func ip(_ args: [String]) throws {
        let r = runProcess("/usr/sbin/ip", args)
        guard r.status == 0 else { throw TestSocketError("ip \(args.joined(separator: " ")): \(r.output)") }
    }
}

@Suite(.enabled(if: NetnsGate.shouldRun, NetnsGate.skipReason), .serialized)
struct NetGuestTests {
    /// The library path: the caller opens the tap and hands the descriptor in. The guest
    /// driver ARPs for the namespace's address and pings it; the namespace's kernel
    /// answers both.
    @Test(arguments: VirtioNotification.allCases)
    func guestGetsARPAndPingAnswersFromTheNamespaceKernel(notification: VirtioNotification) throws {
        let netns = try TestNetns()
        let tap = try TapDevice.open(name: netns.tapName)
        try netns.adopt(tap: netns.tapName)
        let mac = try #require(MACAddress("52:54:00:ab:cd:ef"))
        let (reason, out, machine) = try runGuest("sockets", cmdline: "ip=\(netns.guestAddress) peer=\(netns.hostAddress)") { _ in
        } config: { config in
            config.networks = [NetworkConfig(tap: tap, mac: mac)]
            config.virtioNotification = notification
        }
        #expect(reason == .debugExit(value: 0x10), "\(out)")
        #expect(out.contains("net: mac 52:54:00:ab:cd:ef\n") && out.contains("net: arp reply\n") && out.contains("net: ping reply\n"), "\(out)")
        let counters = Dictionary(uniqueKeysWithValues: machine.statistics().devices.first { $0.name == "net0" }?.counters.map { ($0.name, $0.value) } ?? [])
        #expect((counters["tx_frames"] ?? 0) >= 2 && (counters["rx_frames"] ?? 0) >= 2)
        #expect(counters["tx_dropped"] == 0)
    }

    /// Link status lives in configuration space: a change bumps ConfigGeneration and,
    /// for a live driver, raises a configuration-change interrupt.
    @Test func linkChangesReachTheDriver() throws {
        let tap = try TapDevice.open(name: "svl\(UInt16.random(in: 0 ... .max))")
        let mac = try #require(MACAddress("52:54:00:01:02:03"))
        let device = try NetDevice(tap: tap, mac: mac)
        let d = try TestDriver(device: device)
        #expect((0 ..< 6).map { UInt8(d.transport.read(offset: 0x100 + UInt64($0), size: 1)) } == mac.bytes)
        #expect(d.transport.read(offset: 0x106, size: 2) == 1)   // VIRTIO_NET_S_LINK_UP
        d.negotiate(low: UInt32(truncatingIfNeeded: NetDevice.featureStatus | NetDevice.featureMAC))
        d.driverOK()
        let generation = d.reg(0xFC)
        device.setLink(up: false, transport: d.transport)
        #expect(d.transport.read(offset: 0x106, size: 2) == 0 && d.reg(0xFC) == generation + 1)
        #expect(d.reg(0x60) & 2 == 2 && d.line.edges.load(ordering: .relaxed) == 1)
        device.setLink(up: false, transport: d.transport)   // no change, no interrupt
        #expect(d.line.edges.load(ordering: .relaxed) == 1)
        device.setLink(up: true, transport: d.transport)
        #expect(d.transport.read(offset: 0x106, size: 2) == 1 && device.counters.first { $0.name == "link_changes" }?.value == 2)
    }

    /// A descriptor that is not a tap with a vnet header is refused with a clear error.
    @Test func aDescriptorThatIsNotATapIsRefused() throws {
        let fd = open("/dev/null", O_RDWR)
        #expect(throws: DeviceError.self) { try TapDevice(adopting: fd) }
    }
}

struct NetOptionTests {
    @Test func macAddressesParseStrictly() {
        #expect(MACAddress("52:54:00:12:34:56")?.description == "52:54:00:12:34:56")
        #expect(MACAddress("52-54-00-12-34-56") != nil)
        #expect(MACAddress("01:00:5e:00:00:01") == nil)   // multicast
        #expect(MACAddress("52:54:00:12:34") == nil && MACAddress("52:54:00:12:34:5g") == nil)
        #expect(MACAddress.random().bytes.prefix(3) == [0x52, 0x54, 0x00])
    }
}
