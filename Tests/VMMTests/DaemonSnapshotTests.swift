import Foundation
import Snapshot
import Testing

/// Snapshots through vmmd: `PUT /v1/vms/{name}/snapshot` and `restore_from`, across
/// vmmd and `vmmctl run` both ways, clones, diffs, quotas and refusals.
@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct DaemonSnapshotTests {
    static func json(_ body: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]) ?? [:]
    }

    /// A snapshot taken in vmmd restores in `vmmctl run`, a snapshot taken by `vmmctl
    /// run` restores in vmmd, and a restored VM's diff restores too: the count goes on
    /// with no gap and no repeat each time.
    @Test func vmmdAndVMMCtlRunRestoreEachOthersSnapshots() throws {
        let d = try DaemonFixture()
        let scratch = try SnapshotScratch()
        let create = try DaemonFixture.createBody("counter", guest: "count", extra: #","cmdline":"2000","memory_mib":32"#)
            .replacingOccurrences(of: #""memory_mib":16,"#, with: "")
        #expect(d.api("POST", "/v1/vms", json: create).status == 201)
        #expect(d.eventually(30) { d.api("GET", "/v1/vms/counter/console").body.contains("\n300\n") })
        let taken = d.api("PUT", "/v1/vms/counter/snapshot", json: #"{"path":"\#(scratch.path("vmmd"))","paused":true}"#,
                          record: "/v1/vms/{name}/snapshot")
        #expect(taken.status == 200, "\(taken.body)")
        let info = Self.json(taken.body)
        #expect(info["kind"] as? String == "full" && (info["vm"] as? [String: Any])?["state"] as? String == "paused")
        #expect((info["memory_file_bytes"] as? Int) == 32 << 20)
        let before = d.api("GET", "/v1/vms/counter/console").body
        #expect(d.api("DELETE", "/v1/vms/counter").status == 204)
        let run = try VMMCtl.run(["run", "--restore", scratch.path("vmmd")])
        #expect(run.status == 0, "\(run.all)")
        #expect(before + run.stdout == countOutput(to: 2000))

        // The other way: vmmctl run writes it (SIGUSR2), vmmd restores it. It counts to 6000
        // so that the restored VM is still counting when the diff is asked for (from 1200,
        // a second or more; to 2000 it was ~0.2 s, which a loaded machine missed).
        let process = try TestProcess(VMMCtl.path, ["run", "--kernel", TestGuests.path("count"), "--cmdline", "6000", "--memory", "32",
                                                    "--snapshot-to", scratch.path("ctl"), "--stop-after-snapshot"], discardStderr: true)
        let deadline = Date().addingTimeInterval(20)
        while !process.text.contains("\n400\n"), Date() < deadline { usleep(2000) }
        kill(process.pid, SIGUSR2)
        #expect(process.wait(30) == 12)
        let restored = d.api("POST", "/v1/vms", json: #"{"name":"back","restore_from":{"path":"\#(scratch.path("ctl"))"},"start":false}"#,
                             record: "/v1/vms")
        #expect(restored.status == 201, "\(restored.body)")
        #expect(Self.json(restored.body)["restored_from"] as? String == scratch.path("ctl"))
        #expect(Self.json(restored.body)["memory_mib"] as? Int == 32)
        // A restored VM tracks dirty pages (copy-on-write): a diff of it names its parent.
        #expect(d.api("POST", "/v1/vms/back/actions/start").status == 200)
        #expect(d.eventually(30) { d.api("GET", "/v1/vms/back/console").body.contains("\n1200\n") })
        let diff = d.api("PUT", "/v1/vms/back/snapshot", json: #"{"path":"\#(scratch.path("diff"))","diff":true,"paused":true}"#,
                         record: "/v1/vms/{name}/snapshot")
        #expect(diff.status == 200, "\(diff.body)")
        let diffInfo = Self.json(diff.body)
        #expect(diffInfo["kind"] as? String == "diff" && (diffInfo["parent"] as? [String: Any])?["path"] as? String == "../ctl")
        let between = d.api("GET", "/v1/vms/back/console").body
        let fromDiff = try VMMCtl.run(["run", "--restore", scratch.path("diff")])
        #expect(fromDiff.status == 0, "\(fromDiff.all)")
        #expect(process.text + between + fromDiff.stdout == countOutput(to: 6000))
        #expect(d.api("POST", "/v1/vms/back/actions/resume").status == 200)
        #expect(d.eventually(30) { (d.vm("back")?["state"] as? String) == "stopped" })
        #expect(process.text + d.api("GET", "/v1/vms/back/console").body == countOutput(to: 6000))
    }

    /// Five clones of one snapshot at once, each with its own name: they all go on and
    /// end powered off, each seeing generation 1, its own name and its own instance ID.
    /// A uid's quota counts them like created VMs.
    @Test func fiveClonesAndTheirQuota() throws {
        let scratch = try SnapshotScratch()
        let config = try DaemonFixture.writeConfig(#"{"quotas":{"uids":{"4242":{"memory_mib":24}}}}"#)
        let d = try DaemonFixture(config: config)
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("parent", guest: "hcloop", extra: #","hypercalls":true"#)).status == 201)
        #expect(d.eventually(30) { d.api("GET", "/v1/vms/parent/console").body.contains("hcloop: ready") })
        let base = scratch.path("base")
        #expect(d.api("PUT", "/v1/vms/parent/snapshot", json: #"{"path":"\#(base)"}"#).status == 200)
        for i in 0 ..< 5 {
            let r = d.api("POST", "/v1/vms", json: #"{"name":"clone-\#(i)","restore_from":{"path":"\#(base)"}}"#)
            #expect(r.status == 201, "\(r.body)")
        }
        for i in 0 ..< 5 { #expect(d.api("POST", "/v1/vms/clone-\(i)/console", data: "\n").status == 204) }
        var ids = Set<String>()
        for i in 0 ..< 5 {
            #expect(d.eventually(30) { (d.vm("clone-\(i)")?["last_exit"] as? [String: Any])?["kind"] as? String == "poweroff" })
            let console = d.api("GET", "/v1/vms/clone-\(i)/console").body
            let line = console.split(separator: "\n").last.map(String.init) ?? ""
            #expect(line.hasPrefix("hcloop: generation 00000001 id ") && line.hasSuffix(" name clone-\(i)"), "\(console)")
            ids.insert(String(line.split(separator: " ").dropFirst(4).first ?? ""))
        }
        #expect(ids.count == 5)

        chmod(d.socket, 0o666)
        _ = runProcess("/bin/chmod", ["-R", "a+rX", scratch.root.path])
        let first = d.api("POST", "/v1/vms", json: #"{"name":"mine","restore_from":{"path":"\#(base)"},"start":false}"#, asUID: 4242)
        #expect(first.status == 201, "\(first.body)")
        let second = d.api("POST", "/v1/vms", json: #"{"name":"mine2","restore_from":{"path":"\#(base)"},"start":false}"#, asUID: 4242)
        #expect(second.status == 429 && second.body.contains("memory_mib"), "\(second.status) \(second.body)")
    }

    /// What vmmd refuses, with the contract's codes.
    @Test func refusals() throws {
        let d = try DaemonFixture()
        let scratch = try SnapshotScratch()
        let record = "/v1/vms/{name}/snapshot"
        #expect(d.api("PUT", "/v1/vms/nobody/snapshot", json: #"{"path":"\#(scratch.path("x"))"}"#, record: record).status == 404)
        #expect(d.api("GET", "/v1/vms/nobody/snapshot").status == 405)
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("idle", guest: "idle")).status == 201)
        #expect(d.api("PUT", "/v1/vms/idle/snapshot", json: #"{"path":"relative"}"#, record: record).status == 400)
        #expect(d.api("PUT", "/v1/vms/idle/snapshot", json: #"{"path":"\#(scratch.path("x"))","compress":true}"#, record: record).status == 400)
        #expect(d.api("PUT", "/v1/vms/idle/snapshot", json: #"{"path":"\#(scratch.path("x"))","flags":1}"#, record: record).status == 400)
        let noParent = d.api("PUT", "/v1/vms/idle/snapshot", json: #"{"path":"\#(scratch.path("x"))","diff":true}"#, record: record)
        #expect(noParent.status == 409 && noParent.body.contains("take a full one first"), "\(noParent.body)")
        #expect(d.api("PUT", "/v1/vms/idle/snapshot", json: #"{"path":"\#(scratch.path("full"))"}"#, record: record).status == 200)
        let untracked = d.api("PUT", "/v1/vms/idle/snapshot", json: #"{"path":"\#(scratch.path("y"))","diff":true}"#, record: record)
        #expect(untracked.status == 409 && untracked.body.contains("track_dirty_pages"), "\(untracked.body)")
        let occupied = d.api("PUT", "/v1/vms/idle/snapshot", json: #"{"path":"\#(scratch.path("full"))"}"#, record: record)
        #expect(occupied.status == 409 && occupied.body.contains("not empty"), "\(occupied.body)")
        #expect(d.api("PUT", "/v1/vms/idle/snapshot", json: #"{"path":"/proc/self/snap"}"#, record: record).status == 422)
        #expect(d.api("POST", "/v1/vms/idle/actions/kill").status == 200)
        #expect(d.api("PUT", "/v1/vms/idle/snapshot", json: #"{"path":"\#(scratch.path("z"))"}"#, record: record).status == 409)
        #expect(!FileManager.default.fileExists(atPath: scratch.path("z")), "a refused snapshot leaves nothing")

        let withKernel = d.api("POST", "/v1/vms", json: #"{"name":"r","kernel":"/x","restore_from":{"path":"\#(scratch.path("full"))"}}"#, record: "/v1/vms")
        #expect(withKernel.status == 400 && withKernel.body.contains("comes from the snapshot"), "\(withKernel.body)")
        let missing = d.api("POST", "/v1/vms", json: #"{"name":"r","restore_from":{"path":"\#(scratch.path("absent"))"}}"#, record: "/v1/vms")
        #expect(missing.status == 422 && missing.body.contains("restore_from"), "\(missing.body)")
        try Data("not a snapshot".utf8).write(to: URL(fileURLWithPath: scratch.path("full/state.bin")))
        let damaged = d.api("POST", "/v1/vms", json: #"{"name":"r","restore_from":{"path":"\#(scratch.path("full"))"}}"#, record: "/v1/vms")
        #expect(damaged.status == 422 && damaged.body.contains("not a swift-vmm snapshot"), "\(damaged.body)")
        #expect(d.vmNames() == ["idle"])
    }
}
