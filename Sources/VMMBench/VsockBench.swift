import CSys
import Devices
import Foundation
import VMM

/// `--vsock-only` (and part of the full run): vsock throughput both ways and connection
/// rate through the hybrid Unix socket, with the sockets guest (Guests/sockets: a sink
/// on port 5254, a source on 5255, the echo on 5252) at ring 3 on this machine, against
/// the limit: the same transfer between two host processes over a plain Unix socket
/// (Benchmarks/ref/unix_copy.c, measured in the same run).
func vsockBenchmarks(work: String, root: String, rounds: Int, megabytes: Int, connections: Int) {
    let reference = work + "/unix_copy"
    sh(["cc", "-O2", "-Wall", "-o", reference, root + "/Benchmarks/ref/unix_copy.c"])
    let bytes = megabytes << 20
    print("vsock (the sockets guest at ring 3, ioeventfd + irqfd; \(megabytes) MiB per transfer, median of \(rounds)):")
    do {
        let path = work + "/vsock.sock"
        var config = MachineConfig()
        config.memoryMiB = 32
        config.kernel = try [UInt8](Data(contentsOf: URL(fileURLWithPath: work + "/sockets.elf")))
        config.debugExit = true
        // The guest's receive window: 1 MiB (its sink gives credit back at half of it).
        config.commandLine = "credit=\(1 << 20)"
        config.vsock = VsockConfig(guestCID: 3, backend: try VsockUnixBackend(path: path), path: path)
        let output = BufferOutput()
        config.serialOutput = output
        let machine = try Machine(config: config)
        try machine.start()
        defer { machine.kill(); _ = try? machine.waitForStop() }
        let deadline = Date().addingTimeInterval(30)
        while !output.text.contains("vsock: ready"), Date() < deadline { usleep(10_000) }
        guard output.text.contains("vsock: ready") else { die("the sockets guest did not come up: \(output.text)") }

        var limit: [Double] = [], toGuest: [Double] = [], fromGuest: [Double] = []
        var limitRate: [Double] = [], rate: [Double] = []
        for _ in 0 ..< rounds {
            limit.append(field(sh([reference, "stream", "\(bytes)"]), "mb_per_s"))
            toGuest.append(try stream(path: path, port: 5254, bytes: bytes, send: true))
            fromGuest.append(try stream(path: path, port: 5255, bytes: bytes, send: false))
            limitRate.append(field(sh([reference, "connect", "\(connections)"]), "per_s"))
            rate.append(try connectRate(path: path, count: connections))
        }
        let l = median(limit), h2g = median(toGuest), g2h = median(fromGuest)
        print(String(format: "  Unix socket between two host processes (the limit): %.0f MB/s", l))
        print(String(format: "  host -> guest: %.0f MB/s (%.2f of the limit)", h2g, h2g / l))
        print(String(format: "  guest -> host: %.0f MB/s (%.2f of the limit)", g2h, g2h / l))
        let lr = median(limitRate), r = median(rate)
        print(String(format: "  connections (CONNECT, OK, close; %d in a row): %.0f/s, Unix socket accept + the same handshake %.0f/s (%.2f)",
                     connections, r, lr, r / lr))
        let counters = machine.statistics().devices.first { $0.name == "vsock0" }?.counters ?? []
        let wanted = ["packets_to_guest", "rx_buffer_waits", "credit_waits", "notifications", "interrupts"]
        print("  device: " + counters.filter { wanted.contains($0.name) }.map { "\($0.name) \($0.value)" }.joined(separator: ", "))
        if CommandLine.arguments.contains("--vsock-stats"), let vcpu = machine.statistics().vcpus.first {
            print("  vcpu0 KVM: " + vcpu.kvm.filter { $0.values.count == 1 && $0.value > 0 }.map { "\($0.name) \($0.value)" }.joined(separator: ", "))
            print("  vcpu0 exits: " + vcpu.exits.filter { $0.count > 0 }.map { "\($0.kind) \($0.count)" }.joined(separator: ", "))
        }
    } catch {
        die("vsock benchmark: \(error)")
    }
}

/// One host connection to guest `port`: `bytes` sent (to the sink) or received (from the
/// source), timed until the last byte; MB/s.
private func stream(path: String, port: UInt32, bytes: Int, send: Bool) throws -> Double {
    let fd = try hybridConnect(path: path, port: port)
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0x5A, count: 65536)
    let t0 = DispatchTime.now().uptimeNanoseconds
    var done = 0
    while done < bytes {
        let n = send ? Glibc.send(fd, buffer, min(buffer.count, bytes - done), Int32(MSG_NOSIGNAL))
            : recv(fd, &buffer, min(buffer.count, bytes - done), 0)
        guard n > 0 else { throw BenchError("vsock stream to port \(port) ended after \(done) bytes") }
        done += n
    }
    let ns = Double(DispatchTime.now().uptimeNanoseconds - t0)
    return Double(bytes) / (ns / 1e9) / 1e6
}

/// Connections per second: CONNECT 5252, the OK line, close; `count` in a row.
private func connectRate(path: String, count: Int) throws -> Double {
    let t0 = DispatchTime.now().uptimeNanoseconds
    for _ in 0 ..< count { close(try hybridConnect(path: path, port: 5252)) }
    return Double(count) / (Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
}

/// Connects to the hybrid socket and reads the `OK` line.
private func hybridConnect(path: String, port: UInt32) throws -> Int32 {
    let fd = csys_connect_unix(path)
    guard fd >= 0 else { throw BenchError("connecting to \(path): \(String(cString: strerror(-fd)))") }
    let line = Array("CONNECT \(port)\n".utf8)
    guard Glibc.send(fd, line, line.count, Int32(MSG_NOSIGNAL)) == line.count else { close(fd); throw BenchError("CONNECT failed") }
    var byte: UInt8 = 0
    var answer: [UInt8] = []
    while recv(fd, &byte, 1, 0) == 1, byte != UInt8(ascii: "\n") { answer.append(byte) }
    guard answer.starts(with: Array("OK ".utf8)) else { close(fd); throw BenchError("no OK from the guest's port \(port)") }
    return fd
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
