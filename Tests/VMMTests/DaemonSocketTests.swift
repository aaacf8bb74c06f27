import Foundation
import Testing

/// vmmd with vsock and net: the listener created with the owner's permissions and
/// passed to the sandboxed worker, guest connections brokered by vmmd as the owner,
/// taps opened only for their owner.
@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct DaemonSocketTests {
    @Test func vsockInAWorkerWithBrokeredConnections() throws {
        let d = try DaemonFixture()
        let socket = d.directory.appendingPathComponent("v.sock").path
        let listener = try TestListener(path: socket + "_7000")
        let served = Thread {
            if let c = listener.accept() {
                _ = c.receive(max: 64)
                try? c.send("welcome\n")
                c.close()
            }
        }
        served.start()
        let body = try DaemonFixture.createBody("sock", guest: "sockets", extra:
            #","debug_exit":true,"cmdline":"connect=7000 refused=7001","vsock":{"cid":7,"socket":"\#(socket)"}"#)
        let created = d.api("POST", "/v1/vms", json: body, record: "/v1/vms")
        #expect(created.status == 201, "\(created.body)")
        #expect(d.eventually(30) { d.api("GET", "/v1/vms/sock/console").body.contains("vsock: ready cid 7") },
                "\(d.api("GET", "/v1/vms/sock/console").body)\n\(d.log)")
        let console = d.api("GET", "/v1/vms/sock/console").body
        #expect(console.contains("vsock: connect ok") && console.contains("vsock: refused ok"), "\(console)")
        // A host process speaks the hybrid protocol to the socket vmmd made.
        let s = try TestSocket(connectingTo: socket)
        try s.send("CONNECT 5252\n")
        #expect(s.readLine()?.hasPrefix("OK ") == true)
        let data = testPattern(seed: 5, count: 300_000)
        let writer = Thread { try? s.send(data) }
        writer.start()
        #expect(s.receive(exactly: data.count) == data)
        let info = try #require(d.vm("sock"))
        let vsock = try #require(info["vsock"] as? [String: Any])
        #expect(vsock["cid"] as? Int == 7 && vsock["socket"] as? String == socket)
        _ = d.api("GET", "/v1/vms/sock", record: "/v1/vms/{name}")
        let stats = d.api("GET", "/v1/vms/sock/stats").body
        #expect(stats.contains("vsock0") && stats.contains("guest_connections"), "\(stats)")
        let metrics = d.api("GET", "/metrics").body
        #expect(metrics.contains(#"vmmd_virtio_host_connections{vm="sock",owner="0",device="vsock0"} 1"#),
                "\(metrics.split(separator: "\n").filter { $0.contains("vsock0") })")
        #expect(d.vm("sock")?["state"] as? String == "running")   // the sandbox let every call through
        #expect(d.api("DELETE", "/v1/vms/sock").status == 204)
        #expect(d.eventually(5) { access(socket, F_OK) != 0 }, "the listener's socket file outlived its VM")
    }

    /// The socket is created, and guest connections made, with the owner's permissions:
    /// nobody's VM gets a socket nobody owns, and cannot reach a root-only PATH_P.
    @Test func vsockActsWithTheOwnersPermissions() throws {
        let d = try DaemonFixture()
        chmod(d.socket, 0o666)
        let dir = d.directory.appendingPathComponent("nobody")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        chmod(dir.path, 0o777)
        let socket = dir.appendingPathComponent("v.sock").path
        let rootOnly = try TestListener(path: socket + "_7000")
        chmod(rootOnly.path, 0o600)
        let nobody: UInt32 = 65534
        let body = try DaemonFixture.createBody("nb", guest: "sockets", extra:
            #","debug_exit":true,"cmdline":"refused=7000","vsock":{"cid":9,"socket":"\#(socket)"}"#)
        let created = d.api("POST", "/v1/vms", json: body, asUID: nobody)
        #expect(created.status == 201, "\(created.body)")
        var st = stat()
        #expect(stat(socket, &st) == 0 && st.st_uid == nobody)
        #expect(d.eventually(30) { d.api("GET", "/v1/vms/nb/console?owner=\(nobody)").body.contains("vsock: refused ok") })
        // A socket path nobody may create is refused up front.
        let denied = try DaemonFixture.createBody("nb2", guest: "sockets", extra: #","vsock":{"cid":9,"socket":"/root/x.sock"}"#)
        let r = d.api("POST", "/v1/vms", json: denied, asUID: nobody)
        #expect(r.status == 422 && r.body.contains("vsock.socket"), "\(r.body)")
        let bad = d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("nb3", guest: "sockets", extra: #","vsock":{"cid":2,"socket":"/tmp/x"}"#))
        #expect(bad.status == 400 && bad.body.contains("vsock.cid"))
        let unknown = d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("nb4", guest: "sockets", extra: #","vsock":{"cid":5,"socket":"/tmp/x","port":1}"#))
        #expect(unknown.status == 400)
    }

    /// vmmd in a network namespace with two taps: one owned by nobody, one by no one.
    /// nobody may attach only the first; its guest pings the namespace's kernel.
    @Test(.enabled(if: NetnsGate.available, NetnsGate.skipReason))
    func tapsAreOpenedOnlyForTheirOwner() throws {
        let netns = try TestNetns()
        let nobody: UInt32 = 65534
        try netns.createTap(user: nobody)
        let other = "svo\(UInt16.random(in: 0 ... .max))"
        try TestNetns.ip(["-n", netns.name, "tuntap", "add", "dev", other, "mode", "tap"])
        let d = try DaemonFixture(launcher: ["/usr/sbin/ip", "netns", "exec", netns.name])
        chmod(d.socket, 0o666)
        let ping = "ip=\(netns.guestAddress) peer=\(netns.hostAddress)"
        let mine = try DaemonFixture.createBody("net", guest: "sockets", extra:
            #","debug_exit":true,"cmdline":"\#(ping)","net":[{"tap":"\#(netns.tapName)","mac":"52:54:00:00:00:42"}]"#)
        let created = d.api("POST", "/v1/vms", json: mine, asUID: nobody)
        #expect(created.status == 201, "\(created.body)\n\(d.log)")
        #expect(d.eventually(30) { d.api("GET", "/v1/vms/net/console?owner=\(nobody)").body.contains("sockets: ok") },
                "\(d.api("GET", "/v1/vms/net/console?owner=\(nobody)").body)")
        let info = d.api("GET", "/v1/vms/net?owner=\(nobody)").body
        #expect(info.contains("52:54:00:00:00:42"), "\(info)")
        let theirs = try DaemonFixture.createBody("net2", guest: "sockets", extra: #","start":false,"net":[{"tap":"\#(other)"}]"#)
        let refused = d.api("POST", "/v1/vms", json: theirs, asUID: nobody)
        #expect(refused.status == 403 && refused.body.contains("net[0].tap"), "\(refused.body)")
        let missing = try DaemonFixture.createBody("net3", guest: "sockets", extra: #","start":false,"net":[{"tap":"nosuchtap0"}]"#)
        #expect(d.api("POST", "/v1/vms", json: missing).status == 422)
        // Root may attach any tap; vmmd picks the MAC.
        let root = d.api("POST", "/v1/vms", json: theirs)
        #expect(root.status == 201 && root.body.contains("52:54:00:"), "\(root.body)")
        d.stop()
    }
}
