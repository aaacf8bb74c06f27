import CSys
import Foundation
import KVM
import Testing
import VMMClient
import VMM
import VMMAPI

/// vmmd as real processes: the daemon on a temporary socket, curl and vmmctl as clients,
/// workers on /dev/kvm.
@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct DaemonTests {
    @Test func createListInfoConsoleDestroy() throws {
        let d = try DaemonFixture()
        let created = d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("web", guest: "hello", extra: #","cmdline":"from vmmd""#))
        #expect(created.status == 201, "\(created.body)")
        #expect(d.vmNames() == ["web"])
        #expect(d.eventually { (d.vm("web")?["state"] as? String) == "stopped" })
        let info = try #require(d.vm("web"))
        #expect(info["owner_uid"] as? Int == 0 && info["lifetime"] as? String == "persistent")
        #expect((info["worker_pid"] as? Int ?? 0) > 0 && info["boot_format"] as? String == "PVH ELF")
        let exit = try #require(info["last_exit"] as? [String: Any])
        #expect(exit["kind"] as? String == "poweroff" && exit["status"] as? Int == 0)
        #expect(d.api("GET", "/v1/vms/web/console").body == "Hello from a swift-vmm guest!\ncmdline: from vmmd\n")

        // vmmctl sees the same.
        let list = d.ctl(["list"])
        #expect(list.status == 0 && list.stdout.contains("web") && list.stdout.contains("poweroff (0)"))
        #expect(d.ctl(["console", "web", "--no-follow"]).stdout.contains("cmdline: from vmmd"))

        #expect(d.api("DELETE", "/v1/vms/web").status == 204)
        #expect(d.vmNames().isEmpty)
        #expect(d.api("GET", "/v1/vms/web").status == 404)
        #expect(d.stop() == 0)
    }

    /// SIGTERM with connections in every state (just accepted, just closed, idle, half a
    /// request) ends vmmd cleanly: shutdown closes them before its event loops stop. The
    /// fixture runs vmmd in NIO's strict mode, where a task for a stopped loop crashes it;
    /// before, a connection's set-up hopping onto a stopped loop did in 4 of 40 such stops.
    @Test func sigtermWithClientsConnectedEndsCleanly() throws {
        for _ in 0 ..< 10 {
            let d = try DaemonFixture()
            let idle = csys_connect_unix(d.socket)
            let partial = csys_connect_unix(d.socket)
            _ = "GET /v1/vers".withCString { write(partial, $0, strlen($0)) }
            let fresh = (0 ..< 4).map { _ in csys_connect_unix(d.socket) }
            for fd in fresh.prefix(2) where fd >= 0 { close(fd) }
            #expect(d.stop() == 0, "vmmd log:\n\(d.log)")
            for fd in [idle, partial] + fresh.suffix(2) where fd >= 0 { close(fd) }
        }
    }

    @Test func actionsMoveTheVMThroughItsStates() throws {
        let d = try DaemonFixture()
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("box", guest: "idle", extra: #","start":false"#)).status == 201)
        #expect(d.vm("box")?["state"] as? String == "created")
        func act(_ a: String) -> (Int, String?) {
            let r = d.api("POST", "/v1/vms/box/actions/\(a)")
            let state = (try? JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [String: Any])?["state"] as? String
            return (r.status, state)
        }
        #expect(act("start") == (200, "running"))
        #expect(act("pause") == (200, "paused"))
        #expect(act("pause").0 == 409)
        #expect(act("resume") == (200, "running"))
        #expect(act("reset") == (200, "running"))
        #expect(d.eventually { d.api("GET", "/v1/vms/box/console").body == "idle\nidle\n" })
        #expect(act("kill") == (200, "stopped"))
        #expect((d.vm("box")?["last_exit"] as? [String: Any])?["kind"] as? String == "killed")
        #expect(act("start") == (200, "running"))
        #expect(act("poweroff") == (200, "stopped"))
        #expect((d.vm("box")?["last_exit"] as? [String: Any])?["kind"] as? String == "poweroff")
        #expect(d.api("POST", "/v1/vms/box/actions/fly").status == 404)
        #expect(d.api("GET", "/v1/vms/box/actions/start").status == 405)
        let stats = d.api("GET", "/v1/vms/box/stats")
        #expect(stats.status == 200 && stats.body.contains(#""kvm""#) && stats.body.contains("exits_io"))
    }

    @Test func connectionLifetimeEndsWithTheConnection() async throws {
        let d = try DaemonFixture()
        let connection = try await APIConnection.connect(socketPath: d.socket)
        let body = Array(try DaemonFixture.createBody("conn", guest: "idle", lifetime: "connection").utf8)
        let created = try await connection.request(.POST, "/v1/vms", body: body)
        #expect(created.status == 201, "\(created.text)")
        // Still there while the connection stays open, across other requests on it.
        try await Task.sleep(nanoseconds: 300_000_000)
        #expect(d.vmNames() == ["conn"])
        #expect(try await connection.request(.GET, "/v1/vms/conn").status == 200)
        await connection.close()
        #expect(d.eventually(1) { d.vmNames().isEmpty }, "the VM outlived its connection")
    }

    @Test func vmmctlCreateWithConnectionLifetimeStaysAttached() throws {
        let d = try DaemonFixture()
        let ctl = try TestProcess(DaemonFixture.vmmctl, ["create", "att", "--kernel", try TestGuests.path("echo"), "--memory", "16",
                                                         "--lifetime", "connection", "--socket", d.socket], discardStderr: true)
        #expect(d.eventually { ctl.text.contains("echo ready") }, "attached output: \(ctl.text)")
        // Keystrokes reach the guest and its echo comes back on the same terminal.
        ctl.write("abc")
        #expect(d.eventually { ctl.text.contains("echo ready\nabc") }, "attached output: \(ctl.text)")
        // Ctrl-] detaches: vmmctl ends, the connection closes, the VM goes.
        ctl.write("\u{1D}")
        #expect(ctl.wait(10) == 0)
        #expect(d.eventually(1) { d.vmNames().isEmpty })
    }

    @Test func processLifetimeEndsWithTheProcess() throws {
        let d = try DaemonFixture()
        // curl is the creating process: it exits right after the answer.
        let r = d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("proc", guest: "idle", lifetime: "process"))
        #expect(r.status == 201, "\(r.body)")
        #expect(d.eventually(1) { d.vmNames().isEmpty }, "the VM outlived its creator")
        #expect(d.log.contains("creator exited"))
    }

    @Test func persistentVMSurvivesADaemonRestart() throws {
        let d = try DaemonFixture()
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("keep", guest: "idle")).status == 201)
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("gone", guest: "idle", lifetime: "connection")).status == 201)
        let record = d.stateDirectory + "/vms/0/keep.json"
        #expect(FileManager.default.fileExists(atPath: record))
        #expect(d.stop() == 0)
        // The workers died with the daemon.
        #expect(runProcess("/usr/bin/pgrep", ["-f", "vmm-worker --parent \(d.pid)"]).stdout.isEmpty)
        try d.start()
        #expect(d.eventually { d.vmNames() == ["keep"] })
        #expect(d.eventually { (d.vm("keep")?["state"] as? String) == "running" })
        #expect(d.api("DELETE", "/v1/vms/keep").status == 204)
        #expect(!FileManager.default.fileExists(atPath: record))
    }

    @Test func anotherUserCanNeitherSeeNorTouchMyVM() throws {
        let d = try DaemonFixture()
        chmod(d.socket, 0o666)
        let other: UInt32 = 4242
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("mine", guest: "idle")).status == 201)
        #expect(d.vmNames(asUID: other).isEmpty)
        for (method, path) in [("GET", "/v1/vms/mine"), ("DELETE", "/v1/vms/mine"), ("POST", "/v1/vms/mine/actions/kill"),
                               ("GET", "/v1/vms/mine/console"), ("GET", "/v1/vms/mine?owner=0")] {
            let r = d.api(method, path, asUID: other)
            #expect(r.status == 404 && r.body.contains("not_found"), "\(method) \(path) as uid \(other): \(r.status)")
        }
        #expect(d.vm("mine")?["state"] as? String == "running")
        // The other user's own VM, with the same name: names are per owner. Root sees both.
        let theirs = d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("mine", guest: "hello"), asUID: other)
        #expect(theirs.status == 201, "\(theirs.body)")
        #expect(d.vmNames() == ["mine", "mine"])
        #expect(d.vm("mine", query: "?owner=\(other)")?["owner_uid"] as? Int == Int(other))
        // Files are opened with the caller's permissions.
        let secret = d.directory.appendingPathComponent("secret.elf").path
        _ = FileManager.default.createFile(atPath: secret, contents: Data(try TestGuests.image("hello")), attributes: [.posixPermissions: 0o600])
        let denied = d.api("POST", "/v1/vms", json: #"{"name":"steal","kernel":"\#(secret)"}"#, asUID: other)
        #expect(denied.status == 422 && denied.body.contains("Permission denied") && denied.body.contains("image_rejected"))
        // vmmctl as that user.
        #expect(d.ctl(["destroy", "mine", "--owner", "0"], asUID: other).status == 1)
        #expect(d.ctl(["destroy", "mine"], asUID: other).status == 0)
        #expect(d.vmNames() == ["mine"])
    }

    /// Workers log at the daemon's `--log-level` (WorkerSetup.logLevel): the emulation
    /// assist's info line, which every worker on this project's hosts prints, is in the
    /// log at the default level and not at `warning`.
    @Test func workersLogAtTheDaemonsLevel() throws {
        guard HostEmulation.probe(try KVMSystem()).refusesInstructions else { return }   // no assist: no such line
        for (arguments, expectLine) in [([String](), true), (["--log-level", "warning"], false)] {
            let d = try DaemonFixture(arguments: arguments)
            #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("quiet", guest: "hello")).status == 201)
            #expect(d.eventually { (d.vm("quiet")?["state"] as? String) == "stopped" })
            #expect(d.stop() == 0)
            #expect(d.log.contains("emulation assist on") == expectLine, "\(arguments): \(d.log)")
        }
    }

    /// vmmd's fast parse (DaemonOptions.fastParse) takes the plain command lines and leaves
    /// everything else to ArgumentParser; the debug binary parses the fast ones both ways
    /// and exits 70 on any difference. Each line names a missing worker, so the daemon
    /// stops with a usage error before it opens anything.
    @Test func fastParseOfVMMDAgreesWithArgumentParser() throws {
        let w = ["--worker", "/nonexistent/vmm-worker"]
        let fast: [[String]] = [
            w, w + ["--socket", "/nonexistent/a.sock", "--state-dir=/nonexistent/state", "--log-level", "warning"],
            w + ["--handle-socket", "/nonexistent/h.sock", "--device", "/nonexistent/kvm", "--worker-user", "nobody", "--test-hooks"],
            ["--config=/nonexistent/config.json"] + w,
        ]
        let left: [[String]] = [
            w + ["--help"], w + ["--bogus"], w + ["--socket", "a", "--socket", "b"], w + ["--test-hooks=1"], w + ["extra"],
            w + ["--socket"], w + ["--state-dir", ""], w + ["-h"], w + ["--log-level", "-x"],
        ]
        for (arguments, expectFast) in fast.map({ ($0, true) }) + left.map({ ($0, false) }) {
            let r = runProcess(DaemonFixture.vmmd, arguments, environment: ["VMMD_TRACE_PARSE": "1"])
            #expect(r.status != 70 && !r.output.contains("internal error"), "\(arguments): \(r.output)")
            #expect(r.output.contains("vmmd: fast parse") == expectFast, "\(arguments): \(r.output)")
            #expect([0, 64].contains(r.status), "\(arguments): status \(r.status) \(r.output)")
        }
    }

    /// `GET /v1/vms` reuses each VM's JSON while its VMInfo is unchanged (VMListEncoder):
    /// the answer must stay what JSONEncoder writes for the whole list, follow every change
    /// and every caller's view.
    @Test func listAnswerIsJSONEncodersAndFollowsEveryChange() throws {
        let d = try DaemonFixture()
        chmod(d.socket, 0o666)
        let other: UInt32 = 4242
        func list(asUID uid: UInt32? = nil) throws -> (body: String, vms: [VMInfo]) {
            let r = d.api("GET", "/v1/vms", asUID: uid)
            #expect(r.status == 200)
            let decoded = try JSONDecoder().decode(VMList.self, from: Data(r.body.utf8))
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            #expect(String(decoding: try encoder.encode(decoded), as: UTF8.self) + "\n" == r.body)
            return (r.body, decoded.vms)
        }
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("a", guest: "idle", extra: #","start":false"#)).status == 201)
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("b", guest: "idle")).status == 201)
        let first = try list()
        #expect(first.vms.map(\.name) == ["a", "b"] && first.vms[0].state == .created)
        #expect(try list().body == first.body)
        #expect(d.api("POST", "/v1/vms/a/actions/start").status == 200)
        #expect(try list().vms.map(\.state) == [.running, .running])
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("c", guest: "idle"), asUID: other).status == 201)
        #expect(try list(asUID: other).vms.map(\.name) == ["c"])
        #expect(try list().vms.map(\.name) == ["a", "b", "c"])
        #expect(d.api("DELETE", "/v1/vms/b").status == 204)
        #expect(d.api("POST", "/v1/vms/c/actions/kill", asUID: other).status == 200)
        let theirs = try list(asUID: other).vms
        #expect(theirs.map(\.name) == ["c"] && theirs[0].lastExit?.kind == "killed")
        let all = try list().vms
        #expect(all.map(\.name) == ["a", "c"] && all[1].state == .stopped)
    }

    @Test(arguments: [
        (#"{"name":"a","kernel":"/k","bogus":1}"#, 400, "unknown_field", "bogus"),
        (#"{"name":"a","kernel":"/k","flags":4}"#, 400, "reserved_nonzero", "flags"),
        (#"{"name":"a","kernel":"/k","reserved":1}"#, 400, "reserved_nonzero", "reserved"),
        (#"{"name":"a","kernel":"/k","lifetime":"forever"}"#, 400, "invalid_field", "lifetime"),
        (#"{"name":"a","kernel":"/k","lifetime":"system"}"#, 400, "invalid_field", "lifetime"),
        (#"{"name":"../etc","kernel":"/k"}"#, 400, "invalid_field", "name"),
        (#"{"name":"","kernel":"/k"}"#, 400, "invalid_field", "name"),
        (#"{"name":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","kernel":"/k"}"#, 400, "invalid_field", "name"),
        (#"{"name":"a","kernel":"/k","memory_mib":99999999999}"#, 400, "invalid_field", "memory_mib"),
        (#"{"name":"a","kernel":"/k","vcpus":0}"#, 400, "invalid_field", "vcpus"),
        (#"{"name":"a","kernel":"/k","vcpus":"two"}"#, 400, "invalid_field", "vcpus"),
        (#"{"name":"a","kernel":"relative/path"}"#, 400, "invalid_field", "kernel"),
        (#"{"name":"a"}"#, 400, "invalid_field", "kernel"),
        (#"{"name":"a","kernel":"/nonexistent"}"#, 422, "image_rejected", "kernel"),
        (#"{"name":"a","kernel":"/etc/passwd"}"#, 422, "image_rejected", "kernel"),
        (#"{"name":"a","kernel":"/k","memory_mib":null}"#, 400, "invalid_field", "memory_mib"),
        (#"{"name":"a","kernel":"/k","initrd":null}"#, 400, "invalid_field", "initrd"),
        (#"{"name":"a","kernel":"/proc/self/fd/0"}"#, 422, "image_rejected", "kernel"),
        (#"{"name":"a","kernel":"/k","cpu_template":"fastest"}"#, 400, "invalid_field", "cpu_template"),
        (#"not json"#, 400, "invalid_json", ""),
        (#"[1,2]"#, 400, "invalid_json", ""),
        (#"{"name":"a","name":"b","kernel":"/k"}"#, 400, "invalid_field", "name"),
        (#"{"name":"a","kernel":"/k","memory_mib":-1}"#, 400, "invalid_field", "memory_mib"),
        (#"{"name":"a","kernel":"/k","memory_mib":2.5}"#, 400, "invalid_field", "memory_mib"),
        (#"{"name":"a","kernel":"/k","vcpus":1e300}"#, 400, "invalid_field", "vcpus"),
        (#"{"name":"a","kernel":"/k","flags":18446744073709551616}"#, 400, "invalid_field", "flags"),
    ])
    func badCreateRequestsAreRefusedWithTheirCode(body: String, status: Int, code: String, field: String) throws {
        let d = try Self.shared()
        let r = d.api("POST", "/v1/vms", json: body, record: "/v1/vms")
        #expect(r.status == status, "\(body) -> \(r.status) \(r.body)")
        let error = (try? JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [String: Any])?["error"] as? [String: Any]
        #expect(error?["code"] as? String == code, "\(body) -> \(r.body)")
        if !field.isEmpty { #expect(error?["field"] as? String == field, "\(body) -> \(r.body)") }
        #expect(d.vmNames().isEmpty, "a refused request left a VM behind")
    }

    /// `GET /v1/vms/{name}?wait_for=STATE[,STATE]` answers when the VM gets there (at once if it
    /// is there), after `timeout_ms` otherwise, 404 once it is destroyed; its query is
    /// checked as strictly as the rest. `vmmctl wait` is the same request.
    @Test func waitForAnswersWhenTheStateComes() throws {
        let d = try DaemonFixture()
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("w", guest: "idle", extra: #","start":false"#)).status == 201)
        func state(_ r: (status: Int, body: String)) -> String? {
            (try? JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [String: Any])?["state"] as? String
        }
        #expect(state(d.api("GET", "/v1/vms/w?wait_for=created")) == "created")
        #expect(state(d.api("GET", "/v1/vms/w?timeout_ms=5000")) == "created", "a bound on no wait answers at once")
        var t0 = Date()
        #expect(state(d.api("GET", "/v1/vms/w?wait_for=running&timeout_ms=300")) == "created")
        #expect(Date().timeIntervalSince(t0) >= 0.3, "answered before its timeout")
        // Timeouts shorter than the time it takes to start waiting still end the wait.
        t0 = Date()
        for _ in 0 ..< 20 { #expect(state(d.api("GET", "/v1/vms/w?wait_for=running&timeout_ms=1")) == "created") }
        #expect(Date().timeIntervalSince(t0) < 10)
        // A waiter in the background, then the change it waits for.
        final class Answer: @unchecked Sendable {
            let lock = NSLock()
            var value: (status: Int, body: String) = (0, "")
        }
        func waiter(_ query: String) -> (DispatchSemaphore, () -> (status: Int, body: String)) {
            let done = DispatchSemaphore(value: 0)
            let answer = Answer()
            DispatchQueue.global().async {
                let r = d.api("GET", "/v1/vms/w?" + query)
                answer.lock.lock(); answer.value = r; answer.lock.unlock()
                done.signal()
            }
            return (done, { answer.lock.lock(); defer { answer.lock.unlock() }; return answer.value })
        }
        var (done, answer) = waiter("wait_for=running&timeout_ms=20000")
        usleep(200_000)
        #expect(done.wait(timeout: .now()) == .timedOut, "answered before the VM ran")
        t0 = Date()
        #expect(d.api("POST", "/v1/vms/w/actions/start").status == 200)
        #expect(done.wait(timeout: .now() + 10) == .success && state(answer()) == "running")
        #expect(Date().timeIntervalSince(t0) < 5)
        (done, answer) = waiter("wait_for=stopped,crashed")
        #expect(d.api("POST", "/v1/vms/w/actions/kill").status == 200)
        #expect(done.wait(timeout: .now() + 10) == .success && state(answer()) == "stopped")
        #expect(state(d.api("GET", "/v1/vms/w?wait_for=running,stopped")) == "stopped", "any of several")
        let r = runProcess(DaemonFixture.vmmctl, ["wait", "--socket", d.socket, "w", "crashed", "stopped", "--timeout", "1"])
        #expect(r.status == 0 && r.output.contains("stopped"), "\(r.output)")
        let late = runProcess(DaemonFixture.vmmctl, ["wait", "--socket", d.socket, "w", "paused", "--timeout", "0.2"])
        #expect(late.status == 1, "vmmctl wait past its timeout: \(late.output)")
        (done, answer) = waiter("wait_for=paused&timeout_ms=20000")
        usleep(100_000)
        t0 = Date()
        #expect(d.api("DELETE", "/v1/vms/w").status == 204)
        #expect(done.wait(timeout: .now() + 25) == .success && answer().status == 404, "\(answer())")
        #expect(Date().timeIntervalSince(t0) < 5, "the destroyed VM's waiter waited out its timeout")
        for bad in ["wait_for=flying", "wait_for=", "wait_for=stopped,", "wait_for=stopped,stopped", "wait_for=,stopped", "timeout_ms=60001", "wait_for=running&timeout_ms=60001",
                    "wait_for=running&timeout_ms=-1", "wait_for=running&timeout_ms=007", "wait_for=running&colour=red"] {
            #expect(d.api("GET", "/v1/vms/w?" + bad).status == 400, "\(bad)")
        }
        #expect(d.api("DELETE", "/v1/vms/w?wait_for=stopped").status == 400)
    }

    @Test func badPathsMethodsAndQueries() throws {
        let d = try Self.shared()
        #expect(d.api("GET", "/v2/vms").status == 404)
        #expect(d.api("PUT", "/v1/vms").status == 405)
        #expect(d.api("GET", "/v1/vms/a/console?follow=maybe").status == 400)
        let unknown = d.api("GET", "/v1/vms/a?colour=red")
        #expect(unknown.status == 400 && unknown.body.contains("unknown_field") && unknown.body.contains(#""field":"colour""#))
        #expect(d.api("GET", "/v1/vms/a?owner=nobody").status == 400)
        let big = d.directory.appendingPathComponent("big.json")
        try Data(repeating: 0x20, count: 2 << 20).write(to: big)
        #expect(d.api("POST", "/v1/vms", data: "@" + big.path).status == 413)
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("dup", guest: "idle")).status == 201)
        let again = d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("dup", guest: "idle"))
        #expect(again.status == 409 && again.body.contains("name_taken"))
        #expect(d.api("DELETE", "/v1/vms/dup").status == 204)
    }

    /// The daemon holds every VM's guest memory; /proc/self/fd/N would reach it if the
    /// image opener followed magic links.
    @Test func imagesCannotReachTheDaemonsOwnDescriptors() throws {
        let d = try DaemonFixture()
        chmod(d.socket, 0o666)
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("victim", guest: "idle")).status == 201)
        for fd in 0 ..< 64 {
            for path in ["/proc/self/fd/\(fd)", "/dev/fd/\(fd)", "/proc/\(d.pid)/fd/\(fd)"] {
                let body = #"{"name":"thief","kernel":"\#(try TestGuests.path("idle"))","initrd":"\#(path)","memory_mib":16}"#
                let r = d.api("POST", "/v1/vms", json: body, asUID: 4242)
                #expect(r.status == 422, "\(path) -> \(r.status) \(r.body)")
            }
        }
        #expect(d.vmNames(asUID: 4242).isEmpty)
    }

    /// Many creates at once all succeed. A smoke test for the daemon's concurrency: the
    /// race it once lost (a worker's `ready` handled before the spawn call returned, then
    /// overwritten) showed up in about 1 create in 100 under this kind of load.
    @Test func concurrentCreatesAllSucceed() throws {
        let d = try DaemonFixture()
        let failures = Collected()
        DispatchQueue.concurrentPerform(iterations: 8) { client in
            for i in 0 ..< 12 {
                let name = "c\(client)-\(i)"
                let r = d.api("POST", "/v1/vms", json: (try? DaemonFixture.createBody(name, guest: "hello")) ?? "")
                if r.status != 201 { failures.add(Array("\(name): \(r.status) \(r.body)\n".utf8)) }
                d.api("DELETE", "/v1/vms/\(name)")
            }
        }
        #expect(failures.text.isEmpty, "\(failures.text)")
        #expect(d.vmNames().isEmpty)
    }

    /// Creates and destroys racing on the same names leave no VM and no worker behind.
    @Test func racingCreatesAndDestroysLeaveNothingBehind() throws {
        let d = try DaemonFixture()
        let names = (0 ..< 6).map { "race\($0)" }
        let group = DispatchGroup()
        for name in names {
            for action in ["create", "delete", "delete"] {
                DispatchQueue.global().async(group: group) {
                    if action == "create" {
                        d.api("POST", "/v1/vms", json: (try? DaemonFixture.createBody(name, guest: "idle")) ?? "")
                    } else {
                        usleep(UInt32.random(in: 0 ..< 40_000))
                        d.api("DELETE", "/v1/vms/\(name)")
                    }
                }
            }
        }
        group.wait()
        for name in names where d.vm(name) != nil { d.api("DELETE", "/v1/vms/\(name)") }
        #expect(d.vmNames().isEmpty)
        #expect(d.eventually { runProcess("/usr/bin/pgrep", ["-f", "vmm-worker --parent \(d.pid)"]).stdout.isEmpty },
                "workers left: \(runProcess("/usr/bin/pgrep", ["-af", "vmm-worker --parent \(d.pid)"]).stdout)")
    }

    @Test func killedWorkerLeavesACrashedVMAndNoLeaks() throws {
        let d = try DaemonFixture()
        // Warm up (NIO opens its own descriptors lazily), then take the baseline.
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("warm", guest: "hello")).status == 201)
        #expect(d.api("DELETE", "/v1/vms/warm").status == 204)
        let baseline = d.settledDescriptorCount

        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("victim", guest: "idle")).status == 201)
        let pid = try #require(d.vm("victim")?["worker_pid"] as? Int)
        kill(Int32(pid), SIGKILL)
        #expect(d.eventually { (d.vm("victim")?["state"] as? String) == "crashed" })
        let exit = try #require(d.vm("victim")?["last_exit"] as? [String: Any])
        #expect(exit["kind"] as? String == "crashed" && exit["signal"] as? Int == 9 && exit["status"] as? Int == 137)
        // No zombie: the worker was reaped.
        #expect(!FileManager.default.fileExists(atPath: "/proc/\(pid)"))
        // start brings up a new worker on the same guest memory.
        let restarted = d.api("POST", "/v1/vms/victim/actions/start")
        #expect(restarted.status == 200 && restarted.body.contains(#""state":"running""#), "\(restarted.body)")
        #expect(d.api("DELETE", "/v1/vms/victim").status == 204)
        #expect(d.eventually { d.descriptorCount == baseline }, "descriptors: \(d.descriptorCount), baseline \(baseline)")
    }

    @Test func consoleFollowStreamsAndInputReachesTheGuest() async throws {
        let d = try DaemonFixture()
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("echo", guest: "echo")).status == 201)
        let connection = try await APIConnection.connect(socketPath: d.socket)
        let seen = Collected()
        let follower = Task { try await connection.stream(.GET, "/v1/vms/echo/console?follow=true") { seen.add($0) } }
        #expect(d.eventually { seen.text.contains("echo ready") })
        #expect(d.api("POST", "/v1/vms/echo/console", data: "hi!").status == 204)
        #expect(d.eventually { seen.text.contains("echo ready\nhi!") }, "streamed: \(seen.text)")
        #expect(d.api("POST", "/v1/vms/echo/console", data: "q").status == 204)
        #expect(d.eventually { (d.vm("echo")?["state"] as? String) == "stopped" })
        #expect(d.api("DELETE", "/v1/vms/echo").status == 204)
        // Destroying the VM ends the stream.
        let result = try await follower.value
        #expect(result.status == 200 && seen.text.hasSuffix("q\nbye\n"))
    }

    @Test func systemVMsComeFromTheConfigAndOnlyRootTouchesThem() throws {
        let config = FileManager.default.temporaryDirectory.appendingPathComponent("vmmd-config-\(getpid()).json")
        defer { try? FileManager.default.removeItem(at: config) }
        try Data(#"{"system_vms":[{"name":"infra","kernel":"\#(try TestGuests.path("idle"))","memory_mib":16}]}"#.utf8).write(to: config)
        let d = try DaemonFixture(config: config.path)
        chmod(d.socket, 0o666)
        #expect(d.eventually { d.vm("infra", query: "?owner=system")?["state"] as? String == "running" })
        let info = try #require(d.vm("infra", query: "?owner=system"))
        #expect(info["owner_uid"] is NSNull && info["lifetime"] as? String == "system")
        #expect(d.vmNames(asUID: 4242).isEmpty)
        #expect(d.api("DELETE", "/v1/vms/infra?owner=system", asUID: 4242).status == 404)
        #expect(d.api("POST", "/v1/vms/infra/actions/pause?owner=system").status == 200)
        #expect(d.api("DELETE", "/v1/vms/infra?owner=system").status == 204)
    }

    /// PR_SET_PDEATHSIG fires when the *thread* that spawned a worker exits; pool
    /// threads retire after ~5 idle seconds. A worker must outlive that.
    @Test func workersOutliveIdleDaemonThreads() throws {
        let d = try DaemonFixture()
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("long", guest: "idle")).status == 201)
        sleep(7)
        #expect(d.vm("long")?["state"] as? String == "running", "\(d.vm("long") ?? [:])")
    }

    @Test func sigtermShutsDownCleanly() throws {
        let d = try DaemonFixture()
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("a", guest: "idle", lifetime: "persistent")).status == 201)
        let worker = try #require(d.vm("a")?["worker_pid"] as? Int)
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("b", guest: "idle")).status == 201)
        #expect(d.stop() == 0)
        #expect(!FileManager.default.fileExists(atPath: d.socket))
        #expect(!FileManager.default.fileExists(atPath: "/proc/\(worker)"))
        #expect(d.log.contains("vmmd stopped"))
    }

    @Test func metricsVersionAndCapabilities() throws {
        let d = try Self.shared()
        #expect(d.api("GET", "/v1/version").body.contains(#""api":"v1""#))
        let caps = d.api("GET", "/v1/capabilities")
        #expect(caps.status == 200 && caps.body.contains("USER_MEMORY"))
        let metrics = d.api("GET", "/metrics")
        #expect(metrics.status == 200 && metrics.body.contains("vmmd_http_requests_total") && metrics.body.contains("vmmd_vms{state=\"running\"}"))
    }

    /// Every endpoint's answers, checked against docs/api/openapi.yaml by a real
    /// validator (openapi-spec-validator / openapi-schema-validator).
    @Test func responsesMatchTheOpenAPIContract() throws {
        let d = try DaemonFixture()
        _ = ContractRecorder.shared.drain()
        d.api("GET", "/v1/version", record: "/v1/version")
        d.api("GET", "/v1/capabilities", record: "/v1/capabilities")
        d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("c1", guest: "idle", extra: #","start":false"#), record: "/v1/vms")
        d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("c1", guest: "idle"), record: "/v1/vms")
        d.api("POST", "/v1/vms", json: #"{"name":"c2","kernel":"/etc/passwd"}"#, record: "/v1/vms")
        d.api("POST", "/v1/vms", json: #"{"name":"c2","kernel":"/k","x":1}"#, record: "/v1/vms")
        let vsock = d.directory.appendingPathComponent("c3.sock").path
        d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("c3", guest: "idle", extra:
            #","start":false,"vsock":{"cid":3,"socket":"\#(vsock)"}"#), record: "/v1/vms")
        d.api("GET", "/v1/vms", record: "/v1/vms")
        d.api("GET", "/v1/vms/c1", record: "/v1/vms/{name}")
        d.api("GET", "/v1/vms/c1?wait_for=created&timeout_ms=0", record: "/v1/vms/{name}")
        d.api("GET", "/v1/vms/c1?wait_for=stopped,crashed&timeout_ms=0", record: "/v1/vms/{name}")
        d.api("GET", "/v1/vms/c1?wait_for=sleeping", record: "/v1/vms/{name}")
        d.api("GET", "/v1/vms/nope", record: "/v1/vms/{name}")
        for action in ["start", "pause", "resume", "reset", "kill", "kill"] {
            d.api("POST", "/v1/vms/c1/actions/\(action)", record: "/v1/vms/{name}/actions/{action}")
        }
        d.api("POST", "/v1/vms/c1/actions/start", record: "/v1/vms/{name}/actions/{action}")
        d.api("GET", "/v1/vms/c1/stats", record: "/v1/vms/{name}/stats")
        d.api("POST", "/v1/vms/c1/console", data: "x", record: "/v1/vms/{name}/console")
        d.api("GET", "/v1/vms/c1", record: "/v1/vms/{name}")
        d.api("GET", "/v1/vms", record: "/v1/vms")
        d.api("DELETE", "/v1/vms/c1", record: "/v1/vms/{name}")
        d.api("DELETE", "/v1/vms/c1", record: "/v1/vms/{name}")
        let responses = d.directory.appendingPathComponent("responses.jsonl")
        try Data(ContractRecorder.shared.drain().utf8).write(to: responses)
        let r = runProcess("/usr/bin/env", ["python3", packageRoot.appendingPathComponent("scripts/check-openapi.py").path,
                                            packageRoot.appendingPathComponent("docs/api/openapi.yaml").path, responses.path])
        #expect(r.status == 0, "\(r.output)")
        #expect(r.output.contains("valid OpenAPI") && r.output.contains("0 problems"))
    }

    /// One daemon for the tests that leave nothing behind.
    private static let sharedDaemon = Result { try DaemonFixture(shared: true) }
    static func shared() throws -> DaemonFixture { try sharedDaemon.get() }
}

/// Bytes gathered from a stream on another thread.
final class Collected: @unchecked Sendable {
    private let lock = NSLock()
    private var bytes: [UInt8] = []
    func add(_ chunk: [UInt8]) { lock.lock(); bytes += chunk; lock.unlock() }
    var text: String { lock.lock(); defer { lock.unlock() }; return String(decoding: bytes, as: UTF8.self) }
}
