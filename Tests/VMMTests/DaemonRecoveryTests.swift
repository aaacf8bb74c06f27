import Foundation
import Testing

/// vmmd when its world changes under it: a vanished kernel, a deleted state directory,
/// a second daemon, a crashed worker restarted; and the defaults a careful user relies on.
@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct DaemonRecoveryTests {
    @Test func aPersistentVMWhoseKernelVanishedShowsAsFailedUntilDestroyed() throws {
        let d = try DaemonFixture()
        let kernel = d.directory.appendingPathComponent("own.elf").path
        _ = FileManager.default.createFile(atPath: kernel, contents: Data(try TestGuests.image("idle")))
        #expect(d.api("POST", "/v1/vms", json: #"{"name":"gone","kernel":"\#(kernel)","memory_mib":16}"#).status == 201)
        let record = d.stateDirectory + "/vms/0/gone.json"
        #expect(d.stop() == 0)
        try FileManager.default.removeItem(atPath: kernel)
        try d.start()
        #expect(d.eventually { d.vm("gone") != nil })
        let info = try #require(d.vm("gone"))
        let exit = info["last_exit"] as? [String: Any]
        #expect(info["state"] as? String == "failed" && (exit?["message"] as? String ?? "").contains("not restored"), "\(info)")
        #expect((exit?["message"] as? String ?? "").contains("No such file"), "\(exit ?? [:])")
        #expect(d.api("POST", "/v1/vms/gone/actions/start").status == 409)
        #expect(FileManager.default.fileExists(atPath: record))
        #expect(d.api("DELETE", "/v1/vms/gone").status == 204)
        #expect(!FileManager.default.fileExists(atPath: record))
        #expect(d.stop() == 0)
        try d.start()
        #expect(d.vm("gone") == nil)
    }

    @Test func aDeletedStateDirectoryIsRecreatedWithTheRecordsOfLiveVMs() throws {
        let d = try DaemonFixture()
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("keep", guest: "idle")).status == 201)
        try FileManager.default.removeItem(atPath: d.stateDirectory)
        // The next persistent create finds it gone: recreated, every record written again.
        let created = d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("new", guest: "idle"))
        #expect(created.status == 201, "\(created.body)")
        for name in ["keep", "new"] {
            #expect(FileManager.default.fileExists(atPath: d.stateDirectory + "/vms/0/\(name).json"), "\(name)")
        }
        #expect(d.log.contains("the state directory was deleted under vmmd"))
        // Without a create, the periodic check does the same.
        try FileManager.default.removeItem(atPath: d.stateDirectory)
        #expect(d.eventually(8) { FileManager.default.fileExists(atPath: d.stateDirectory + "/vms/0/keep.json") })
        #expect(d.stop() == 0)
        try d.start()
        #expect(d.eventually { Set(d.vmNames()) == ["keep", "new"] })
    }

    @Test func aDaemonThatCannotStartLeavesNothingBehind() throws {
        let d = try DaemonFixture()
        let other = d.directory.appendingPathComponent("second")
        try FileManager.default.createDirectory(at: other, withIntermediateDirectories: true)
        // Its handle socket is the first daemon's, which is being served.
        let r = runProcess(DaemonFixture.vmmd, ["--socket", other.appendingPathComponent("vmmd.sock").path,
                                                "--handle-socket", d.handleSocket,
                                                "--state-dir", other.appendingPathComponent("state").path])
        #expect(r.status != 0 && r.output.contains("another vmmd is serving"), "\(r.output)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: other.path).isEmpty)
        #expect(d.api("GET", "/v1/version").status == 200)
    }

    @Test func aRestartedVMNoLongerShowsItsOldExit() throws {
        let d = try DaemonFixture()
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("box", guest: "idle")).status == 201)
        let pid = try #require(d.vm("box")?["worker_pid"] as? Int)
        kill(Int32(pid), SIGKILL)
        #expect(d.eventually { d.vm("box")?["state"] as? String == "crashed" })
        #expect((d.vm("box")?["last_exit"] as? [String: Any])?["kind"] as? String == "crashed")
        #expect(d.api("POST", "/v1/vms/box/actions/start").status == 200)
        let info = try #require(d.vm("box"))
        #expect(info["state"] as? String == "running" && info["last_exit"] is NSNull, "\(info)")
        #expect(d.api("POST", "/v1/vms/box/actions/kill").status == 200)
        #expect((d.vm("box")?["last_exit"] as? [String: Any])?["kind"] as? String == "killed")
        #expect(d.api("POST", "/v1/vms/box/actions/start").status == 200)
        #expect(d.vm("box")?["last_exit"] is NSNull)
    }

    /// With no quota configuration, nobody's guests add up to more than the host's RAM.
    @Test func theDefaultQuotaIsTheHostsRAM() throws {
        let d = try DaemonFixture()
        chmod(d.socket, 0o666)
        let ram = (UInt64(sysconf(Int32(_SC_PHYS_PAGES))) * UInt64(sysconf(Int32(_SC_PAGESIZE)))) >> 20
        let huge = #"{"name":"big","kernel":"\#(try TestGuests.path("idle"))","memory_mib":\#(ram + 1)}"#
        let r = d.api("POST", "/v1/vms", json: huge, asUID: 4242)
        #expect(r.status == 429 && r.body.contains("quota_exceeded") && r.body.contains(#""field":"memory_mib""#), "\(r.body)")
        #expect(d.vmNames(asUID: 4242).isEmpty)
        // The configuration can raise it (the request then goes on to the next check).
        let config = try DaemonFixture.writeConfig(#"{"quotas": {"uids": {"4242": {"memory_mib": \#(ram * 4)}}}}"#)
        defer { try? FileManager.default.removeItem(atPath: config) }
        let raised = try DaemonFixture(config: config)
        chmod(raised.socket, 0o666)
        let tooBig = #"{"name":"big","kernel":"/nonexistent","memory_mib":\#(ram + 1)}"#
        #expect(raised.api("POST", "/v1/vms", json: tooBig, asUID: 4242).status == 422)
    }

    @Test func vmmctlTakesGlobalOptionsFirstAndFailsOneWay() throws {
        let d = try DaemonFixture()
        let before = runProcess(DaemonFixture.vmmctl, ["--socket", d.socket, "list"])
        #expect(before.status == 0 && before.stdout.hasPrefix("NAME"), "\(before.output)")
        #expect(runProcess(DaemonFixture.vmmctl, ["--json", "--socket=\(d.socket)", "list"]).stdout.contains(#""vms""#))
        // No daemon: status 2, a clean message.
        let none = runProcess(DaemonFixture.vmmctl, ["list", "--socket", d.directory.appendingPathComponent("none.sock").path])
        #expect(none.status == 2, "\(none.output)")
        #expect(none.output.hasSuffix("none.sock: No such file or directory\n"), "\(none.output)")
        // A refusal: status 1, "message (code)", whichever command.
        for command in [["info", "nope"], ["console", "nope", "--no-follow"], ["console", "nope"], ["destroy", "nope"], ["start", "nope"]] {
            let r = d.ctl(command)
            #expect(r.status == 1 && r.all == "vmmctl: no VM named 'nope' (not_found)\n", "\(command): \(r.status) \(r.all)")
        }
    }
}
