import Foundation
import Testing

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
}
