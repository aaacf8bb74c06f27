import CSys
import Foundation
import Devices
import Testing

struct VsockProtocolTests {
    @Test func headerIsFortyFourLittleEndianBytes() throws {
        let h = VsockHeader(sourceCID: 2, destinationCID: 0x1_0000_0003, sourcePort: 1 << 30, destinationPort: 5252,
                            length: 7, op: .readWrite, flags: 3, bufferAllocation: 256 << 10, forwardCount: 0xDEAD_BEEF)
        let bytes = h.bytes
        #expect(bytes.count == 44)
        #expect(bytes[0 ..< 8] == [2, 0, 0, 0, 0, 0, 0, 0])
        #expect(bytes[8 ..< 16] == [3, 0, 0, 0, 1, 0, 0, 0])
        #expect(bytes[28 ..< 32] == [1, 0, 5, 0])          // type STREAM, op RW
        #expect(bytes[40 ..< 44] == [0xEF, 0xBE, 0xAD, 0xDE])
        #expect(VsockHeader(bytes: bytes) == h)
        #expect(VsockHeader(bytes: Array(bytes.prefix(43))) == nil)
        var unknown = bytes
        unknown[30] = 99
        #expect(VsockHeader(bytes: unknown)?.operation == nil)
    }

    @Test func connectLinesAreParsedStrictly() {
        func port(_ s: String) -> UInt32? { VsockHandshake.port(fromLine: Array(s.utf8)) }
        #expect(port("CONNECT 5252") == 5252)
        #expect(port("connect 5252") == 5252)              // Kata writes it in lower case
        #expect(port("Connect 1\r") == 1)
        #expect(port("CONNECT 4294967295") == UInt32.max)
        #expect(port("CONNECT 4294967296") == nil)
        #expect(port("CONNECT -1") == nil && port("CONNECT +5") == nil && port("CONNECT 0x10") == nil)
        #expect(port("CONNECT") == nil && port("CONNECT 1 2") == nil && port("HELLO 5252") == nil && port("") == nil)
        #expect(VsockHandshake.ok(hostPort: 1073741824) == Array("OK 1073741824\n".utf8))
    }

    @Test func guestCIDsOutsideTheUsableRangeAreRefused() throws {
        let path = testSocketPath("cid")
        let backend = try VsockUnixBackend(path: path)
        for cid: UInt64 in [0, 1, 2, 0xFFFF_FFFF, 1 << 40] {
            #expect(throws: DeviceError.self) { try VsockDevice(guestCID: cid, backend: backend) }
        }
        #expect(try VsockDevice(guestCID: 3, backend: backend).configSpace == [3, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test func aStaleSocketIsReplacedAndALiveOneIsNot() throws {
        let path = testSocketPath("stale")
        do {
            let first = try VsockUnixBackend(path: path)
            // A second VMM on the same path while the first listens: refused.
            #expect(throws: DeviceError.self) { try VsockUnixBackend(path: path) }
            _ = first
        }
        // The first one's socket file went with it; a leftover socket file nobody
        // listens on (a VMM that died) is replaced.
        let leftover = TestListenerLeftover(path: path)
        #expect(leftover.exists)
        let again = try VsockUnixBackend(path: path)
        #expect(again.listener >= 0)
    }
}

/// Leaves a socket file at `path` that nobody listens on.
struct TestListenerLeftover {
    let exists: Bool
    init(path: String) {
        let fd = csys_listen_unix(path, 1)
        if fd >= 0 { close(fd) }   // closing keeps the file: a stale socket
        var st = stat()
        exists = lstat(path, &st) == 0
    }
}
