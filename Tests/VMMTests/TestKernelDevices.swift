import CSys
import Foundation
import Synchronization
import Testing

/// The virtio devices the test kernel's `vmmctl run` boot gets, and what the host needs to
/// check what Linux did with them: an ext4 root disk with a serial (mkfs.ext4, read back
/// with debugfs and e2fsck afterwards), a raw read-only disk, an rng, a vsock device with
/// its hybrid socket and a host service at `PATH_7000`, and, where the host allows it
/// (root, /dev/net/tun, iproute2), a tap in a network namespace made for the test, in which
/// vmmctl runs. The guest side is scripts/test-kernel/devices-check (an /etc/init.d hook)
/// and scripts/test-kernel/vsock-echo.c, both in an initramfs built here.
final class TestKernelDevices: @unchecked Sendable {
    // @unchecked: everything is set in init; the service records under its own lock.
    let directory: URL
    let token = String(UInt64.random(in: 1 ... .max), radix: 36)
    let serial: String
    let rootImage: String
    let readOnlyImage: String
    let readOnlyLine: String
    let initramfs: String
    let socketPath: String
    /// The host port the guest connects to (a service answers) and one nobody listens on.
    let servicePort = 7000, refusedPort = 7001
    let service: TestKernelHostService
    let netns: TestNetns?
    let mac = "52:54:00:5e:a1:01"
    static let rootSectors = 131072
    static let rngBytes = 65536
    /// How long an echo connection may go without a byte before it counts as failed.
    static let echoTimeoutSeconds: Int32 = 180
    static let connectAttempts = 3
    static let guestCID = 3
    /// The echo server's whole line: the test waits for all of it (the console may hand
    /// over half a line), then for the echo.
    static let echoListening = "vsock-echo: listening on port 5252, local cid \(guestCID)"

    /// `initramfsAdditions`: more `--add SRC:DEST` for the initramfs (a kernel's modules).
    init(network: Bool, initramfsAdditions: [String] = []) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("svmm-linux-devices-\(getpid())-\(UInt32.random(in: 0 ... .max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        self.directory = directory
        func file(_ name: String) -> String { directory.appendingPathComponent(name).path }
        serial = "svmm-\(token.prefix(8))"
        rootImage = file("root.img")
        readOnlyImage = file("ro.img")
        initramfs = file("initramfs.cpio")
        socketPath = file("vsock.sock")
        readOnlyLine = "read-only from the host \(token)"

        // The root disk: ext4 with its inode tables and journal written now, so the guest
        // kernel's lazy-init thread has nothing to zero at emulated speed.
        try Self.run("/usr/bin/truncate", ["-s", "\(Self.rootSectors * 512)", rootImage])
        try Self.run("/usr/sbin/mkfs.ext4", ["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", rootImage])
        // The read-only disk: raw, one line at the start.
        var bytes = Array((readOnlyLine + "\n").utf8)
        bytes += [UInt8](repeating: 0, count: (1 << 20) - bytes.count)
        try Data(bytes).write(to: URL(fileURLWithPath: readOnlyImage))

        let scripts = packageRoot.appendingPathComponent("scripts")
        let echo = file("vsock-echo")
        try Self.run("/usr/bin/cc", ["-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o", echo,
                                     scripts.appendingPathComponent("test-kernel/vsock-echo.c").path])
        try Self.run("/bin/bash", [scripts.appendingPathComponent("make-initramfs.sh").path, "--out", initramfs,
                                   "--add", "\(echo):/bin/vsock-echo",
                                   "--add", scripts.appendingPathComponent("test-kernel/devices-check").path + ":/etc/init.d/50-devices"]
                                   + initramfsAdditions.flatMap { ["--add", $0] })
        service = try TestKernelHostService(path: "\(socketPath)_\(servicePort)")
        netns = network ? try TestNetns() : nil
        try netns?.createTap()
    }

    deinit {
        service.stop()
        try? FileManager.default.removeItem(at: directory)
    }

    /// vmmctl's device flags, root disk first.
    var arguments: [String] {
        ["--disk", "\(rootImage),serial=\(serial)", "--disk", "\(readOnlyImage),readonly", "--rng",
         "--vsock", "cid=\(Self.guestCID),socket=\(socketPath)", "--verbose"]
            + (netns.map { ["--net", "tap=\($0.tapName),mac=\(mac)"] } ?? [])
    }

    /// What the hook reads from the kernel command line.
    var commandLine: String {
        "vmm_token=\(token) vmm_vsock=\(servicePort),\(refusedPort)"
            + (netns.map { " vmm_net=\($0.guestAddress)/24,\($0.hostAddress)" } ?? "")
    }

    /// Runs vmmctl inside the namespace, where its tap is.
    var launcher: [String] { netns.map { ["/usr/sbin/ip", "netns", "exec", $0.name] } ?? [] }

    /// The console lines one boot's hook must print (`boot` 1 or 2).
    func expectedLines(boot: Int) -> [String] {
        var lines = [
            "devices: vda serial '\(serial)' size \(Self.rootSectors) ro 0 cache 'write back'",
            "devices: rng current 'virtio_rng.0'",
            "devices: vda ext4 4 MiB O_DIRECT: write ",
            "devices: vda synced, boot \(boot)",
            "devices: vda unmounted",
            "devices: vdb ro 1 first line '\(readOnlyLine)'",
            "devices: vdb write refused: sh: write error: Operation not permitted",
            "vsock-echo: reply from 2:\(servicePort) 'hello guest, you sent \("hello host from \(token)".utf8.count) bytes'",
            "vsock-echo: connect to 2:\(refusedPort): Connection reset by peer",
            Self.echoListening,
        ]
        if boot == 2 { lines.append("devices: vda had 'token \(token) boot 1'") }
        if let netns {
            lines += ["devices: eth0 up \(netns.guestAddress)/24 mac \(mac)", "3 packets transmitted, 3 packets received"]
        }
        return lines
    }

    /// The SHA-256 the guest printed for `rng-BOOT` (sha256sum's line), if it did.
    static func guestRNGDigest(_ console: String, boot: Int) -> String? {
        ConsoleBoot.lines(console).lazy.compactMap { line -> String? in
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count == 2, parts[1] == "/mnt/vda/rng-\(boot)", parts[0].count == 64 else { return nil }
            return String(parts[0])
        }.first
    }

    /// A counter from vmmctl's `vmmctl: statistics DEVICE: name value, ...` line.
    static func statistic(_ output: String, device: String, counter: String) -> UInt64? {
        let prefix = "vmmctl: statistics \(device): "
        guard let line = ConsoleBoot.lines(output).last(where: { $0.hasPrefix(prefix) }) else { return nil }
        for pair in line.dropFirst(prefix.count).split(separator: ",") {
            let parts = pair.split(separator: " ")
            if parts.count == 2, parts[0] == counter { return UInt64(parts[1]) }
        }
        return nil
    }

    /// `count` host connections at once through the hybrid socket to the guest's echo on
    /// port 5252, each sending `size` bytes and checking the echo's checksum; the failures.
    /// The connections are opened one after another (each waits for its `OK`), then all
    /// transfer at once: a guest at emulated speed on a loaded host cannot answer 50
    /// REQUESTs together within the 2 s the device gives it (Firecracker's limit too),
    /// and that refusal is the device working, not what this checks.
    func echo(connections count: Int, size: Int) -> [String] {
        var sockets: [TestSocket] = []
        var failures: [String] = []
        for i in 0 ..< count {
            // The device resets a REQUEST the guest has not answered in 2 s (as Firecracker
            // does); a starved guest may miss that, so a connection gets a few tries.
            var lastError: (any Error)?
            for _ in 0 ..< Self.connectAttempts {
                do {
                    let s = try TestSocket(connectingTo: socketPath)
                    // 50 echoes share one guest that runs at the lowest CPU priority beside
                    // the rest of the suite: a connection may wait tens of seconds for its turn.
                    _ = csys_set_receive_timeout(s.fd, Self.echoTimeoutSeconds)
                    try s.send("CONNECT 5252\n")
                    guard let ok = s.readLine(), ok.hasPrefix("OK "), UInt32(ok.dropFirst(3)) != nil else {
                        throw TestSocketError("connection \(i): no OK line")
                    }
                    sockets.append(s)
                    lastError = nil
                    break
                } catch {
                    lastError = error
                }
            }
            if let lastError { failures.append("\(lastError)") }
        }
        guard failures.isEmpty else { return failures }
        let transferFailures = Mutex<[String]>([])
        onThreads(count) { [sockets] i in
            let s = sockets[i]
            let data = testPattern(seed: UInt64(i + 1) &* 0x9E37_79B9_7F4A_7C15, count: size)
            let writer = Thread { try? s.send(data) }
            writer.start()
            let back = s.receive(exactly: size)
            if back.count != size || checksum(back) != checksum(data) {
                transferFailures.withLock {
                    $0.append("connection \(i): \(back.count) of \(size) bytes back\(back.count == size ? ", checksum differs" : "")")
                }
            }
            s.close()
        }
        return transferFailures.withLock { $0 }
    }

    /// A file of the root image, as e2fsprogs' debugfs reads it (nil when it is not there).
    func imageFile(_ name: String) throws -> [UInt8]? {
        let out = directory.appendingPathComponent("dump-\(name)").path
        try? FileManager.default.removeItem(atPath: out)
        try Self.run("/usr/sbin/debugfs", ["-R", "dump /\(name) \(out)", rootImage])
        guard let data = FileManager.default.contents(atPath: out) else { return nil }
        return [UInt8](data)
    }

    /// e2fsck's verdict on the root image after the guest used it (read-only check).
    func fsck() -> (clean: Bool, output: String) {
        let r = runProcess("/usr/sbin/e2fsck", ["-fn", rootImage])
        return (r.status == 0, r.output)
    }

    static func sha256(_ bytes: [UInt8], in directory: URL) throws -> String {
        let path = directory.appendingPathComponent("sha-input").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let r = runProcess("/usr/bin/sha256sum", [path])
        guard r.status == 0, let digest = r.stdout.split(separator: " ").first else { throw TestSocketError("sha256sum: \(r.output)") }
        return String(digest)
    }

    static func run(_ executable: String, _ arguments: [String]) throws {
        let r = runProcess(executable, arguments)
        guard r.status == 0 else {
            throw TestSocketError("\(([executable] + arguments).joined(separator: " ")) failed (\(r.status)): \(r.output)")
        }
    }
}

/// The host service the guest reaches at host port P (the Unix socket `PATH_P`): reads
/// until the guest shuts its side, answers how many bytes came, closes. Records what came.
final class TestKernelHostService: @unchecked Sendable {
    // @unchecked: `received` is under its Mutex; the listener's fd is only shut down. The
    // accept thread holds the service until `stop` ends it.
    private let listener: TestListener
    private let done = DispatchSemaphore(value: 0)
    private let stopped = Atomic<Bool>(false)
    let received = Mutex<[String]>([])

    init(path: String) throws {
        listener = try TestListener(path: path)
        let thread = Thread { [self] in serve() }
        thread.start()
    }

    private func serve() {
        while let connection = listener.accept() {
            var message: [UInt8] = []
            while true {
                let chunk = connection.receive()
                if chunk.isEmpty { break }
                message += chunk
            }
            try? connection.send("hello guest, you sent \(message.count) bytes\n")
            connection.close()
            received.withLock { $0.append(String(decoding: message, as: UTF8.self)) }
        }
        done.signal()
    }

    /// Ends the accept loop (shutdown wakes a blocked accept on Linux) and waits for it.
    func stop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        shutdown(listener.fd, Int32(SHUT_RDWR))
        _ = done.wait(timeout: .now() + 30)
    }
}
