import Foundation
import Testing
import VMMClient

/// vmmd's HTTP connections as a careless or hostile client uses them: garbage,
/// half-closes, wrong methods, idle and half-sent requests, too many connections.
@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason), .serialized)
struct DaemonConnectionTests {
    @Test func anUnparsableRequestGetsA400AndTheConnectionCloses() throws {
        let d = try DaemonFixture()
        let c = try #require(RawConnection(path: d.socket))
        c.send("\0GARBAGE\r\n\r\n")
        let r = c.receive(for: 3)
        #expect(r.text.hasPrefix("HTTP/1.1 400") && r.text.contains("Connection: close"), "\(r.text)")
        #expect(r.closed, "the connection stayed open after a 400 that said Connection: close")
    }

    /// A `wait_for` whose client went away ends with it, not at its timeout: otherwise a
    /// client opening and dropping connections could pile up a minute of waiters each.
    @Test func aWaitEndsWithItsConnection() throws {
        let d = try DaemonFixture()
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("waited", guest: "idle", extra: #","start":false"#)).status == 201)
        func waiting() -> Int? {
            let line = d.api("GET", "/metrics").body.split(separator: "\n").first { $0.hasPrefix("vmmd_waiting_requests ") }
            return line.flatMap { Double($0.split(separator: " ").last ?? "") }.map { Int($0) }
        }
        #expect(waiting() == 0)
        let connections = try (0 ..< 3).map { _ in try #require(RawConnection(path: d.socket)) }
        for c in connections { c.send("GET /v1/vms/waited?wait_for=running&timeout_ms=60000 HTTP/1.1\r\nHost: vmm\r\n\r\n") }
        #expect(d.eventually(10) { waiting() == 3 }, "waiting: \(waiting() ?? -1)")
        for c in connections { c.close() }
        #expect(d.eventually(10) { waiting() == 0 }, "waiters left after their clients went: \(waiting() ?? -1)")
        // A wait on a live connection still answers when the state comes.
        #expect(d.api("GET", "/v1/vms/waited?wait_for=created&timeout_ms=1000").status == 200)
    }

    @Test func aRequestFollowedByAHalfCloseIsAnsweredThenClosed() throws {
        let d = try DaemonFixture()
        let c = try #require(RawConnection(path: d.socket))
        c.send("GET /v1/version HTTP/1.1\r\nHost: vmm\r\n\r\n")
        c.shutdownWrite()
        let r = c.receive(for: 3)
        #expect(r.text.hasPrefix("HTTP/1.1 200") && r.text.contains(#""api":"v1""#), "\(r.text)")
        #expect(r.closed)

        // An answer that takes a while (a create waits for its worker), and a
        // connection-lifetime VM: it is created, answered, and goes with the connection.
        for (name, lifetime) in [("half", "persistent"), ("halfconn", "connection")] {
            let body = try DaemonFixture.createBody(name, guest: "idle", lifetime: lifetime)
            let c = try #require(RawConnection(path: d.socket))
            c.send("POST /v1/vms HTTP/1.1\r\nHost: vmm\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
            c.shutdownWrite()
            let r = c.receive(for: 10)
            #expect(r.text.hasPrefix("HTTP/1.1 201") && r.text.contains(#""name":"\#(name)""#), "\(r.text)")
            #expect(r.closed)
        }
        #expect(d.eventually(2) { d.vmNames() == ["half"] })
    }

    @Test func aMethodNotAllowedSaysWhichAre() throws {
        let d = try DaemonFixture()
        for (method, path, allow) in [("PUT", "/v1/vms", "GET, POST"), ("DELETE", "/v1/version", "GET"),
                                      ("PATCH", "/v1/vms/a", "GET, DELETE"), ("GET", "/v1/vms/a/actions/start", "POST"),
                                      ("PUT", "/v1/vms/a/console", "GET, POST")] {
            let r = runProcess("/usr/bin/curl", ["-s", "-i", "--unix-socket", d.socket, "-X", method, "http://vmm" + path])
            #expect(r.stdout.hasPrefix("HTTP/1.1 405") && r.stdout.contains("Allow: \(allow)\r\n"), "\(method) \(path): \(r.stdout)")
        }
    }

    /// Opens `count` connections to `socket` as `uid`, sends a request on each, prints
    /// "ANSWERED REFUSED", and holds them all until its stdin closes.
    static let holder = """
        import socket, sys
        path, n = sys.argv[1], int(sys.argv[2])
        conns = []
        for i in range(n):
            s = socket.socket(socket.AF_UNIX); s.connect(path); conns.append(s)
        answered = refused = 0
        for s in conns:
            try: s.sendall(b"GET /v1/version HTTP/1.1\\r\\nHost: vmm\\r\\n\\r\\n")
            except OSError: pass
        for s in conns:
            s.settimeout(5)
            try: data = s.recv(4096)
            except OSError: data = b""
            if data.startswith(b"HTTP/1.1 200"): answered += 1
            elif data.startswith(b"HTTP/1.1 429") or not data: refused += 1
        print(answered, refused, flush=True)
        sys.stdin.read()
        """

    @Test func oneUserCannotLockOthersOut() throws {
        let config = try DaemonFixture.writeConfig(#"{"connections": {"per_uid": 8, "non_root_total": 10, "request_seconds": 2}}"#)
        defer { try? FileManager.default.removeItem(atPath: config) }
        let d = try DaemonFixture(config: config)
        chmod(d.socket, 0o666)
        let holder = try TestProcess(setprivUID: 4242, "/usr/bin/python3", ["-c", Self.holder, d.socket, "20"])
        let counts = holder.readLine(timeout: 20)
        #expect(counts == "8 12", "answered and refused of 20 connections: \(counts ?? "none")")
        // While uid 4242 holds its eight: it gets no more, root gets in at once, another
        // user gets the two places left of the ten, and no more.
        #expect(d.api("GET", "/v1/version", asUID: 4242).status != 200)
        let start = Date()
        #expect(d.api("GET", "/v1/version").status == 200)
        #expect(Date().timeIntervalSince(start) < 2)
        let other = try TestProcess(setprivUID: 4343, "/usr/bin/python3", ["-c", Self.holder, d.socket, "3"])
        #expect(other.readLine(timeout: 20) == "2 1")
        other.stop()
        holder.stop()
        #expect(d.eventually { d.api("GET", "/v1/version", asUID: 4242).status == 200 })
    }

    @Test func idleAndHalfSentConnectionsAreClosedButStreamsAndConnectionVMsStay() throws {
        let config = try DaemonFixture.writeConfig(#"{"connections": {"idle_seconds": 1, "request_seconds": 1}}"#)
        defer { try? FileManager.default.removeItem(atPath: config) }
        let d = try DaemonFixture(config: config)
        let idle = try #require(RawConnection(path: d.socket))
        let halfHead = try #require(RawConnection(path: d.socket))
        halfHead.send("GET /v1/version HTTP/1.1\r\nHost")
        let keptAlive = try #require(RawConnection(path: d.socket))
        keptAlive.send("GET /v1/version HTTP/1.1\r\nHost: vmm\r\n\r\n")
        for (c, what) in [(idle, "an idle connection"), (halfHead, "a half-sent head"), (keptAlive, "an idle keep-alive connection")] {
            let r = c.receive(for: 4)
            #expect(r.closed, "\(what) stayed open")
            #expect(c !== halfHead || r.text.isEmpty)
        }
        // A console stream and a connection that holds a connection-lifetime VM outlive
        // the idle timeout. (Raw connections: each request goes out as soon as the
        // connection is up, so a slow test machine cannot make them look idle.)
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("echo", guest: "echo")).status == 201)
        let follower = try #require(RawConnection(path: d.socket))
        follower.send("GET /v1/vms/echo/console?follow=true HTTP/1.1\r\nHost: vmm\r\n\r\n")
        var streamed = ""
        #expect(follower.stream(until: "echo ready", within: 20, after: &streamed), "\(streamed)")
        let holder = try #require(RawConnection(path: d.socket))
        let body = try DaemonFixture.createBody("mine", guest: "idle", lifetime: "connection")
        holder.send("POST /v1/vms HTTP/1.1\r\nHost: vmm\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
        #expect(holder.receive(for: 10, until: "}\n").text.hasPrefix("HTTP/1.1 201"))
        usleep(3_000_000)
        #expect(d.api("POST", "/v1/vms/echo/console", data: "late").status == 204)
        #expect(follower.stream(until: "late", within: 20, after: &streamed), "the stream ended: \(streamed)")
        #expect(d.vmNames().contains("mine"))
        holder.send("GET /v1/vms/mine HTTP/1.1\r\nHost: vmm\r\n\r\n")
        #expect(holder.receive(for: 5, until: "}\n").text.hasPrefix("HTTP/1.1 200"))
        holder.close()
        #expect(d.eventually { !d.vmNames().contains("mine") })
        #expect(d.api("DELETE", "/v1/vms/echo").status == 204)
        // Destroying the VM ends the stream (the last chunk), and then the connection is idle.
        #expect(follower.receive(for: 5, until: "0\r\n\r\n").text.hasSuffix("0\r\n\r\n"))
        #expect(follower.receive(for: 4).closed)
    }

    /// vmmctl's console sends keystrokes on a connection of their own, which vmmd closes
    /// when it sits idle: typing after a pause still reaches the guest.
    @Test func keystrokesAfterAnIdlePauseStillReachTheGuest() throws {
        let config = try DaemonFixture.writeConfig(#"{"connections": {"idle_seconds": 1}}"#)
        defer { try? FileManager.default.removeItem(atPath: config) }
        let d = try DaemonFixture(config: config)
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("echo", guest: "echo")).status == 201)
        let console = try TestProcess(DaemonFixture.vmmctl, ["console", "echo", "--socket", d.socket], discardStderr: true)
        #expect(d.eventually { console.text.contains("echo ready") }, "\(console.text)")
        usleep(2_500_000)
        console.write("abc")
        #expect(d.eventually { console.text.contains("echo ready\nabc") }, "\(console.text)")
        console.write("\u{1D}")
        #expect(console.wait(10) == 0)
    }

    /// The handle socket counts per uid too, and never refuses root.
    @Test func theHandleSocketLimitsEachUserButNotRoot() throws {
        let config = try DaemonFixture.writeConfig(#"{"connections": {"per_uid": 2}}"#)
        defer { try? FileManager.default.removeItem(atPath: config) }
        let d = try DaemonFixture(config: config)
        chmod(d.handleSocket, 0o666)
        let script = """
            import socket, sys
            conns = [socket.socket(socket.AF_UNIX) for _ in range(3)]
            for s in conns: s.connect(sys.argv[1])
            waiting = refused = 0
            for s in conns:
                s.settimeout(1)
                try: data = s.recv(4096)
                except socket.timeout: waiting += 1; continue
                if b"quota_exceeded" in data: refused += 1
            print(waiting, refused, flush=True)
            sys.stdin.read()
            """
        let holder = try TestProcess(setprivUID: 4242, "/usr/bin/python3", ["-c", script, d.handleSocket])
        #expect(holder.readLine(timeout: 20) == "2 1", "\(holder.text)")
        let handle = try VMHandle.open(name: "root", memoryMiB: 16, socketPath: d.handleSocket)
        #expect(d.vm("root")?["state"] as? String == "external")
        handle.close()
        holder.stop()
    }

    /// VMs hold descriptors too: one user's many small VMs, each within its quota, stop
    /// at a share of the daemon's descriptors, and root can still create.
    @Test func oneUsersVMsCannotTakeEveryDescriptor() throws {
        let d = try DaemonFixture(launcher: ["/usr/bin/prlimit", "--nofile=160:160"])
        chmod(d.socket, 0o666)
        var created = 0
        var refusal = ""
        for i in 0 ..< 60 {
            let r = d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("v\(i)", guest: "idle"), asUID: 4242)
            if r.status == 201 { created += 1; continue }
            refusal = r.body
            break
        }
        #expect(created > 5 && refusal.contains("quota_exceeded") && refusal.contains("descriptors"), "\(created) created, then \(refusal)")
        #expect(d.descriptorCount < 160)
        #expect(d.api("POST", "/v1/vms", json: try DaemonFixture.createBody("root", guest: "idle")).status == 201)
        #expect(d.api("GET", "/v1/version").status == 200)
    }
}
