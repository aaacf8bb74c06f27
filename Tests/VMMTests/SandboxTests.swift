import Foundation
import Testing
import VMMClient
import VMMAPI

/// Issue "workers in a sandbox": what a worker may do, reboots that keep guest memory,
/// quotas, and brokered /dev/kvm handles for unprivileged library users.
@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct SandboxTests {
    static let otherUID: UInt32 = 4242

    @Test func workerRunsUnprivilegedUnderSeccompWithOnlyItsDescriptors() throws {
        let d = try DaemonFixture()
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("box", guest: "idle")).status == 201)
        let pid = try #require(d.vm("box")?["worker_pid"] as? Int)
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        func field(_ name: String) -> [String] {
            status.split(separator: "\n").first { $0.hasPrefix(name + ":") }?
                .dropFirst(name.count + 1).split(whereSeparator: { $0 == "\t" || $0 == " " }).map(String.init) ?? []
        }
        #expect(field("NoNewPrivs") == ["1"])
        #expect(field("Seccomp") == ["2"])
        // vmmd runs as root here, so workers run as nobody (or a vmm-worker user).
        let uid = try #require(field("Uid").first.flatMap(UInt32.init))
        #expect(uid != 0 && Set(field("Uid")).count == 1, "Uid: \(field("Uid"))")
        #expect(field("Groups").isEmpty)
        // Descriptors: stdio, the control link, the descriptor channel (a snapshot's files
        // come on it), /dev/kvm, KVM's own, the memfd. Nothing else.
        let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")
        var sockets = 0
        for fd in fds {
            let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)")) ?? ""
            if !["0", "1", "2", "3"].contains(fd), target.hasPrefix("socket:") { sockets += 1; continue }
            let ok = ["0", "1", "2", "3"].contains(fd) || target == "/dev/kvm" || target.hasPrefix("anon_inode:kvm")
                || target.hasPrefix("/memfd:vmm:box:")
            #expect(ok, "fd \(fd) -> \(target)")
        }
        #expect(sockets == 1, "the descriptor channel and no other socket")
        // It still does its job: pause, resume, statistics, reset.
        #expect(d.api("POST", "/v1/vms/box/actions/pause").status == 200)
        #expect(d.api("POST", "/v1/vms/box/actions/resume").status == 200)
        #expect(d.api("GET", "/v1/vms/box/stats").status == 200)
        #expect(d.api("POST", "/v1/vms/box/actions/reset").status == 200)
        #expect(d.eventually { d.api("GET", "/v1/vms/box/console").body == "idle\nidle\n" })
        #expect(d.vm("box")?["state"] as? String == "running")
    }

    @Test func aForbiddenSystemCallKillsTheWorkerAndIsReported() throws {
        let d = try DaemonFixture(arguments: ["--test-hooks"])
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("bad", guest: "idle")).status == 201)
        #expect(d.api("POST", "/v1/vms/bad/test/forbidden-syscall").status == 204)
        #expect(d.eventually { d.vm("bad")?["state"] as? String == "crashed" })
        let exit = try #require(d.vm("bad")?["last_exit"] as? [String: Any])
        #expect(exit["signal"] as? Int == Int(SIGSYS))
        #expect((exit["message"] as? String ?? "").contains("sandbox forbids"))
        // Without --test-hooks the hook does not exist.
        let plain = try DaemonFixture()
        #expect(plain.api("POST", "/v1/vms", json: try DaemonFixture.createBody("bad", guest: "idle")).status == 201)
        #expect(plain.api("POST", "/v1/vms/bad/test/forbidden-syscall").status == 404)
    }

    /// glibc's malloc used to read /sys/devices/system/cpu/online the first time a
    /// thread needed a ninth arena: with enough vCPU threads the sandbox killed the
    /// worker (SIGSYS). Every count, several times, up to the most this host allows.
    @Test func workersSurviveTheirSandboxAtEveryVCPUCount() throws {
        let d = try DaemonFixture()
        let caps = try #require(try JSONSerialization.jsonObject(with: Data(d.api("GET", "/v1/capabilities").body.utf8)) as? [String: Any])
        let apiMax = try #require(caps["max_vcpus"] as? Int)
        let kvmMax = ((caps["kvm"] as? [[String: Any]]) ?? []).first { $0["name"] as? String == "KVM_CAP_MAX_VCPUS" }?["value"] as? Int
        #expect(apiMax == min(254, kvmMax ?? 254))
        let counts = [1, 2, 12, 64, apiMax]
        for round in 0 ..< 3 {
            for n in counts {
                let r = d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("v\(n)-\(round)", guest: "hello", extra: #","vcpus":\#(n)"#))
                #expect(r.status == 201, "\(n) vCPUs: \(r.body)")
            }
        }
        for round in 0 ..< 3 {
            for n in counts {
                let name = "v\(n)-\(round)"
                #expect(d.eventually(10) { d.vm(name)?["state"] as? String != "running" })
                let exit = d.vm(name)?["last_exit"] as? [String: Any]
                #expect(exit?["kind"] as? String == "poweroff", "\(n) vCPUs, round \(round): \(exit ?? [:])")
                d.api("DELETE", "/v1/vms/\(name)")
            }
        }
        let tooMany = d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("many", guest: "hello", extra: #","vcpus":\#(apiMax + 1)"#))
        #expect(tooMany.status == 400 && tooMany.body.contains(#""field":"vcpus""#))
    }

    /// The log handler's timestamps used to load /etc/localtime on every line: a
    /// guest's `log` hypercall killed its worker.
    @Test func aGuestsLogHypercallDoesNotTripTheSandbox() throws {
        let d = try DaemonFixture()
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("log", guest: "hypercall", extra: #","hypercalls":true"#)).status == 201)
        #expect(d.eventually { d.vm("log")?["state"] as? String != "running" })
        let exit = d.vm("log")?["last_exit"] as? [String: Any]
        #expect(exit?["kind"] as? String == "poweroff", "\(exit ?? [:])")
        #expect(d.log.contains("hello from the guest log"))
    }

    /// With the split irqchip, a guest that unmasks an IOAPIC entry makes its worker
    /// publish the entry as an MSI route (KVM_SET_GSI_ROUTING): the filter killed the
    /// worker of every Linux guest through vmmd.
    @Test func aGuestProgrammingTheIOAPICDoesNotTripTheSandbox() throws {
        let d = try DaemonFixture()
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("irq", guest: "uart-irq")).status == 201)
        // The guest unmasks IOAPIC pin 4 before it prints "ready", then waits for input.
        #expect(d.eventually(30) { d.api("GET", "/v1/vms/irq/console").body.contains("uart-irq: ready") })
        #expect(d.vm("irq")?["state"] as? String == "running", "\(d.vm("irq")?["last_exit"] ?? "")")
        #expect(d.api("DELETE", "/v1/vms/irq").status == 204)
    }

    @Test func rebootsKeepTheSameGuestMemory() throws {
        let d = try DaemonFixture()
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("keep", guest: "idle")).status == 201)
        let before = try #require(d.workerAndMemfd("keep"))
        // A reset reboots in place: same worker, same memfd, the guest runs again.
        #expect(d.api("POST", "/v1/vms/keep/actions/reset").status == 200)
        #expect(d.eventually { d.api("GET", "/v1/vms/keep/console").body == "idle\nidle\n" })
        let inPlace = try #require(d.workerAndMemfd("keep"))
        #expect(inPlace.pid == before.pid && inPlace.inode == before.inode)
        // A new worker (after this one died) maps the memfd the daemon kept.
        kill(Int32(before.pid), SIGKILL)
        #expect(d.eventually { d.vm("keep")?["state"] as? String == "crashed" })
        #expect(d.api("POST", "/v1/vms/keep/actions/start").status == 200)
        #expect(d.eventually { d.api("GET", "/v1/vms/keep/console").body == "idle\nidle\nidle\n" })
        let restarted = try #require(d.workerAndMemfd("keep"))
        #expect(restarted.pid != before.pid && restarted.inode == before.inode)

        // The guest's own resets reboot it too: i8042, and a triple fault under the reboot policy.
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("i8042", guest: "reset")).status == 201)
        #expect(d.eventually { d.api("GET", "/v1/vms/i8042/console").body == "resetting\nrebooted\n" })
        #expect(d.eventually { (d.vm("i8042")?["last_exit"] as? [String: Any])?["kind"] as? String == "poweroff" })
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("tf", guest: "triple", extra: #","triple_fault":"reboot""#)).status == 201)
        #expect(d.eventually { d.api("GET", "/v1/vms/tf/console").body.components(separatedBy: "triple\n").count > 3 })
        #expect(d.vm("tf")?["state"] as? String == "running")
        #expect(d.api("DELETE", "/v1/vms/tf").status == 204)
    }

    @Test func quotasRefuseWithoutHalfCreating() throws {
        let config = try DaemonFixture.writeConfig("""
            {"quotas": {"default": {"vms": 1}, "uids": {"\(Self.otherUID)": {"vms": 2, "memory_mib": 40, "vcpus": 3}}}}
            """)
        defer { try? FileManager.default.removeItem(atPath: config) }
        let d = try DaemonFixture(config: config)
        chmod(d.socket, 0o666)
        let u = Self.otherUID
        func create(_ name: String, memory: Int = 16, cpus: Int = 1, asUID: UInt32? = u) -> (Int, String) {
            let body = #"{"name":"\#(name)","kernel":"\#((try? TestGuests.path("idle")) ?? "")","memory_mib":\#(memory),"vcpus":\#(cpus)}"#
            let r = d.api("POST", "/v1/vms", json: body, asUID: asUID)
            return (r.status, r.body)
        }
        #expect(create("a").0 == 201)
        #expect(create("b").0 == 201)
        let baseline = d.settledDescriptorCount
        let third = create("c")
        #expect(third.0 == 429 && third.1.contains("quota_exceeded") && third.1.contains("may hold 2 VMs"), "\(third.1)")
        #expect(d.api("DELETE", "/v1/vms/b", asUID: u).status == 204)
        let memory = create("c", memory: 32)
        #expect(memory.0 == 429 && memory.1.contains(#""field":"memory_mib""#), "\(memory.1)")
        let cpus = create("c", cpus: 3)
        #expect(cpus.0 == 429 && cpus.1.contains(#""field":"vcpus""#), "\(cpus.1)")
        #expect(create("c").0 == 201)
        // Nothing half-created: exactly a and c, and no descriptor kept for the refusals.
        #expect(d.vmNames(asUID: u) == ["a", "c"])
        #expect(d.eventually { d.descriptorCount <= baseline + 6 }, "descriptors \(d.descriptorCount), baseline \(baseline)")
        // Root is not limited; other users get the default quota.
        #expect(create("r1", asUID: nil).0 == 201 && create("r2", asUID: nil).0 == 201)
        #expect(create("x1", asUID: 4343).0 == 201)
        #expect(create("x2", asUID: 4343).0 == 429)
    }

    @Test func unprivilegedUserRunsAVMInItsOwnProcessThroughAHandle() throws {
        let d = try DaemonFixture()
        chmod(d.handleSocket, 0o666)
        chmod(d.socket, 0o666)
        let example = packageRoot.appendingPathComponent(".build/debug/vmm-handle-example").path
        try #require(FileManager.default.isExecutableFile(atPath: example), "vmm-handle-example is not built")
        let p = try TestProcess(setprivUID: Self.otherUID, example,
                                ["--kernel", try TestGuests.path("echo"), "--name", "mine", "--memory", "16", "--socket", d.handleSocket])
        #expect(d.eventually { p.text.contains("echo ready") }, "\(p.text)")
        #expect(p.text.contains("uid \(Self.otherUID) cannot open /dev/kvm"))
        // The daemon has the name, under that uid, running elsewhere; its owner sees it.
        let info = try #require(d.vm("mine", query: "?owner=\(Self.otherUID)"))
        #expect(info["state"] as? String == "external" && info["owner_uid"] as? Int == Int(Self.otherUID))
        #expect(info["worker_pid"] as? Int != nil && info["lifetime"] as? String == "connection")
        #expect(d.vmNames(asUID: Self.otherUID) == ["mine"])
        // A second handle for the same name is refused.
        let again = d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("mine", guest: "idle"), asUID: Self.otherUID)
        #expect(again.status == 409)
        // The guest ends; the process exits; the name is gone.
        p.write("q")
        #expect(p.wait(10) == 0, "\(p.text)")
        #expect(p.text.contains("vm 'mine' ended: guest powered off"))
        #expect(d.eventually(1) { d.vmNames(asUID: Self.otherUID).isEmpty })
    }

    @Test(arguments: [
        (#"{"name":"h","bogus":1}"#, "unknown_field"),
        (#"{"name":"h","reserved":7}"#, "reserved_nonzero"),
        (#"{"name":"h","flags":1}"#, "reserved_nonzero"),
        (#"{"name":"../h"}"#, "invalid_field"),
        (#"{"name":"h","memory_mib":0}"#, "invalid_field"),
        (#"{"name":"h","name":"i"}"#, "invalid_field"),
        (#"{"name":"h","memory_mib":-1}"#, "invalid_field"),
        (#"not json"#, "invalid_json"),
    ])
    func handleRequestsFollowTheABIRules(line: String, code: String) throws {
        let d = try Self.shared()
        do {
            _ = try VMHandle.open(requestLine: Array(line.utf8), socketPath: d.handleSocket)
            Issue.record("\(line) was granted")
        } catch let error as APIError {
            #expect(error.code.rawValue == code, "\(line) -> \(error)")
        }
        #expect(d.vmNames().isEmpty)
    }

    @Test func handleFromTheLibraryIsHeldUntilClosed() throws {
        let d = try Self.shared()
        let handle = try VMHandle.open(name: "lib", memoryMiB: 16, socketPath: d.handleSocket)
        #expect(handle.name == "lib" && handle.ownerUID == 0)
        #expect((try? handle.kvm.apiVersion()) == 12)
        #expect(d.vm("lib")?["state"] as? String == "external")
        #expect(throws: APIError.self) { _ = try VMHandle.open(name: "lib", socketPath: d.handleSocket) }
        handle.close()
        #expect(d.eventually(1) { d.vm("lib") == nil })
    }

    private static let sharedDaemon = Result { try DaemonFixture(shared: true) }
    static func shared() throws -> DaemonFixture { try sharedDaemon.get() }
}

/// The README's table of allowed system calls is the worker's own policy.
@Test func readmeListsTheSandboxPolicy() throws {
    let worker = packageRoot.appendingPathComponent(".build/debug/vmm-worker").path
    let printed = runProcess(worker, ["--print-policy"])
    #expect(printed.status == 0)
    let readme = try String(contentsOf: packageRoot.appendingPathComponent("README.md"), encoding: .utf8)
    for line in printed.stdout.split(separator: "\n") {
        #expect(readme.contains(line), "README is missing: \(line)")
    }
}

/// The worker's compiled seccomp program, run by a classic-BPF interpreter here for
/// every system call number (and the x32 and foreign-architecture cases) with argument
/// values on both sides of each rule: it must decide exactly what its rules say.
@Test func seccompProgramDecidesExactlyWhatThePolicySays() throws {
    let worker = packageRoot.appendingPathComponent(".build/debug/vmm-worker").path
    let printed = runProcess(worker, ["--print-filter"])
    try #require(printed.status == 0, "vmm-worker --print-filter: \(printed.output)")
    var program: [(code: UInt16, jt: Int, jf: Int, k: UInt32)] = []
    var rules: [UInt32: [String]] = [:]
    for line in printed.stdout.split(separator: "\n") {
        let f = line.split(separator: " ").map(String.init)
        if f.first == "insn", f.count == 5, let code = UInt16(f[1]), let jt = Int(f[2]), let jf = Int(f[3]), let k = UInt32(f[4]) {
            program.append((code, jt, jf, k))
        } else if f.first == "rule", f.count >= 3, let nr = UInt32(f[1]) {
            rules[nr] = Array(f.dropFirst(2))
        } else {
            Issue.record("unreadable line: \(line)")
        }
    }
    let kill: UInt32 = 0x8000_0000, allow: UInt32 = 0x7FFF_0000, x86_64: UInt32 = 0xC000_003E
    func run(nr: UInt32, arch: UInt32, args: [UInt32]) -> UInt32? {
        var a: UInt32 = 0, pc = 0
        while pc < program.count {
            let i = program[pc]
            switch i.code {
            case 0x20:   // ld [k]
                switch i.k {
                case 0: a = nr
                case 4: a = arch
                case let k where k >= 16 && (k - 16) % 8 == 0 && (k - 16) / 8 < 6: a = args[Int((k - 16) / 8)]
                default: return nil
                }
                pc += 1
            case 0x06: return i.k
            case 0x05: pc += 1 + Int(i.k)
            case 0x15: pc += 1 + (a == i.k ? i.jt : i.jf)
            case 0x35: pc += 1 + (a >= i.k ? i.jt : i.jf)
            case 0x45: pc += 1 + (a & i.k != 0 ? i.jt : i.jf)
            default: return nil
            }
        }
        return nil   // ran off the end: the kernel refuses such a program
    }
    func expected(nr: UInt32, args: [UInt32]) -> UInt32 {
        guard let rule = rules[nr], let kind = rule.first else { return kill }
        let n = rule.dropFirst().compactMap { UInt32($0) }
        switch kind {
        case "allow": return allow
        case "fail": return 0x0005_0000 | (n[0] & 0xFFFF)
        case "in": return n.dropFirst().contains(args[Int(n[0])]) ? allow : kill
        case "has": return args[Int(n[0])] & n[1] == n[1] ? allow : kill
        case "lacks": return args[Int(n[0])] & n[1] == 0 ? allow : kill
        default: return 0
        }
    }
    // Argument sets: zeros, all ones, and each rule's values and masks (and each of them
    // with its low bit flipped) in the rule's own slot with the others empty or full, and
    // in every other slot only: a program that reads the wrong argument decides wrongly.
    var argumentSets: [[UInt32]] = [Array(repeating: 0, count: 6), Array(repeating: .max, count: 6)]
    for rule in rules.values where rule.count >= 3 {
        guard let slot = Int(rule[1]), (0 ..< 6).contains(slot) else { continue }
        for v in rule.dropFirst(2).compactMap({ UInt32($0) }) {
            for value in [v, v ^ 1] {
                for others: UInt32 in [0, .max] {
                    var args = Array(repeating: others, count: 6)
                    args[slot] = value
                    argumentSets.append(args)
                }
                var elsewhere = Array(repeating: value, count: 6)
                elsewhere[slot] = value ^ 1
                argumentSets.append(elsewhere)
            }
        }
    }
    var checked = 0
    for nr in Array(0 ..< 600) + [0x4000_0000, 0x4000_0001, 0xFFFF_FFFF] {
        for args in argumentSets {
            let got = run(nr: UInt32(nr), arch: x86_64, args: args)
            let want = nr >= 0x4000_0000 ? kill : expected(nr: UInt32(nr), args: args)
            if got != want { Issue.record("nr \(nr) args \(args): program says \(got.map { String($0, radix: 16) } ?? "nothing"), policy \(String(want, radix: 16))") }
            checked += 1
        }
    }
    #expect(run(nr: 0, arch: 0x4000_0003, args: Array(repeating: 0, count: 6)) == kill)   // i386
    #expect(rules.count > 40 && checked > 10_000)
}
