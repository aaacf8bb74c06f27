import Foundation
import Testing

/// vmmd with disks: opened with the caller's permissions, handed to the sandboxed
/// worker, served there, counted in stats and /metrics.
@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct DaemonDiskTests {
    @Test func diskAndRNGInAWorker() throws {
        let d = try DaemonFixture()
        let disk = try ScratchImage(size: 64 << 10)
        let body = try DaemonFixture.createBody("store", guest: "virtio", extra:
            #","cmdline":"test=persist","disks":[{"path":"\#(disk.path)","serial":"data-1"}],"rng":true"#)
        let created = d.api("POST", "/v1/vms", json: body, record: "/v1/vms")
        #expect(created.status == 201, "\(created.body)")
        #expect(d.eventually(30) { d.api("GET", "/v1/vms/store/console").body.contains("flushed") }, "\(d.log)")
        #expect(Array(disk.bytes[4096 ..< 4106]) == Array("persisted!".utf8))
        let info = try #require(d.vm("store"))
        let disks = try #require(info["disks"] as? [[String: Any]])
        #expect(disks.count == 1 && disks[0]["serial"] as? String == "data-1" && info["rng"] as? Bool == true)
        _ = d.api("GET", "/v1/vms/store", record: "/v1/vms/{name}")

        let stats = d.api("GET", "/v1/vms/store/stats")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(stats.body.utf8)) as? [String: Any])
        let scopes = try #require(object["scopes"] as? [String: [String: [String: Int]]], "\(stats.body)")
        #expect(scopes["blk0"]?["virtio"]?["requests"] == 2 && scopes["blk0"]?["virtio"]?["flushes"] == 1)
        #expect(scopes["rng0"]?["virtio"]?["requests"] == 0)
        let metrics = d.api("GET", "/metrics").body
        #expect(metrics.contains(#"vmmd_virtio_requests{vm="store",owner="0",device="blk0"} 2"#), "\(metrics)")
        #expect(d.ctl(["stats", "store"]).stdout.contains("blk0"))
        #expect(d.api("DELETE", "/v1/vms/store").status == 204)
        #expect(!d.api("GET", "/metrics").body.contains(#"vm="store""#))
    }

    @Test func disksAreOpenedWithTheCallersPermissions() throws {
        let d = try DaemonFixture()
        chmod(d.socket, 0o666)    // another user must reach the API
        let disk = try ScratchImage(size: 8192)
        chmod(disk.path, 0o644)   // others may read, not write
        func create(_ name: String, _ disks: String, asUID: UInt32? = nil) throws -> (Int, String) {
            let r = d.api("POST", "/v1/vms", json: try DaemonFixture.createBody(name, guest: "idle", extra: #","start":false,"disks":\#(disks)"#),
                          asUID: asUID, record: "/v1/vms")
            return (r.status, r.body)
        }
        let nobody: UInt32 = 65534
        var r = try create("w", #"[{"path":"\#(disk.path)"}]"#, asUID: nobody)
        #expect(r.0 == 422 && r.1.contains("disks[0].path"), "\(r.1)")
        r = try create("r", #"[{"path":"\#(disk.path)","read_only":true}]"#, asUID: nobody)
        #expect(r.0 == 201, "\(r.1)")
        r = try create("p", #"[{"path":"/proc/self/environ","read_only":true}]"#)
        #expect(r.0 == 422)
        r = try create("c", #"[{"path":"/dev/null"}]"#)
        #expect(r.0 == 422 && r.1.contains("block device"))
        r = try create("x", #"[{"path":"relative.img"}]"#)
        #expect(r.0 == 400 && r.1.contains("disks[0].path"))
        r = try create("y", #"[{"path":"\#(disk.path)","serial":"this serial is far too long"}]"#)
        #expect(r.0 == 400 && r.1.contains("serial"))
        r = try create("z", #"[{"path":"\#(disk.path)","cache":"none"}]"#)
        #expect(r.0 == 400)
        r = try create("twice", #"[{"path":"\#(disk.path)"},{"path":"\#(disk.path)","read_only":true}]"#)
        #expect(r.0 == 422 && r.1.contains("disks[1].path"), "\(r.1)")
        // The same file under another name is the same image.
        let alias = d.directory.appendingPathComponent("alias.img").path
        try FileManager.default.createSymbolicLink(atPath: alias, withDestinationPath: disk.path)
        r = try create("alias", #"[{"path":"\#(disk.path)"},{"path":"\#(alias)"}]"#)
        #expect(r.0 == 422 && r.1.contains("disks[1].path") && r.1.contains("attached twice only read-only"), "\(r.1)")
        r = try create("both", #"[{"path":"\#(disk.path)","read_only":true},{"path":"\#(alias)","read_only":true}]"#)
        #expect(r.0 == 201, "\(r.1)")
        let tooMany = "[" + Array(repeating: #"{"path":"\#(disk.path)","read_only":true}"#, count: 9).joined(separator: ",") + "]"
        r = try create("many", tooMany)
        #expect(r.0 == 400)
    }
}
