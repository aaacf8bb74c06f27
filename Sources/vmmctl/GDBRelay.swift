import ArgumentParser
import CSys
import Foundation
import KVM
#if canImport(Glibc)
import Glibc
#endif

/// `vmmctl gdb NAME`: joins stdin/stdout to a vmmd VM's GDB stub, for
/// `target remote | vmmctl gdb NAME` in gdb.
struct GDB: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gdb",
        abstract: "Connect gdb to a VM's debugger stub (run by gdb: target remote | vmmctl gdb NAME).",
        discussion: """
        stdin and stdout carry the GDB remote protocol to the VM's worker; vmmd relays the bytes \
        and checks only that you own the VM. Attaching stops the guest; when gdb detaches or \
        goes away its breakpoints are removed and the guest runs on. See docs/debugging.md.
        """)

    @OptionGroup var options: ClientOptions
    @Argument var name: String

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let fd = csys_connect_unix(options.socket)
        guard fd >= 0 else { clientFail("cannot reach vmmd at \(options.socket): \(String(cString: strerror(-fd)))", status: 2) }
        let request = "GET \(vmPath(name, options, "/gdb")) HTTP/1.1\r\nHost: vmmd\r\nConnection: Upgrade\r\nUpgrade: gdb-remote\r\n\r\n"
        guard Self.writeAll(fd, Array(request.utf8)) else { clientFail("vmmd closed the connection", status: 2) }
        let (head, rest) = Self.readHead(fd)
        guard let head else { clientFail("vmmd closed the connection", status: 2) }
        let statusLine = head.split(separator: "\r\n").first.map(String.init) ?? ""
        guard statusLine.split(separator: " ").dropFirst().first == "101" else {
            clientFail(Self.errorMessage(head: head, body: rest, fd: fd) ?? "vmmd refused: \(statusLine)")
        }
        if !rest.isEmpty, !Self.writeAll(STDOUT_FILENO, rest) { return }
        // The guest's replies on this thread, gdb's packets on another.
        try HostThread(name: "gdb-in") {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = read(STDIN_FILENO, &buffer, buffer.count)
                if n < 0 && errno == EINTR { continue }
                guard n > 0, Self.writeAll(fd, Array(buffer[0 ..< n])) else { break }
            }
            shutdown(fd, Int32(SHUT_WR))  // gdb is gone: the daemon detaches it
        }.detach()
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0, Self.writeAll(STDOUT_FILENO, Array(buffer[0 ..< n])) else { break }
        }
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let rest = Array(bytes[offset...])
            let n = write(fd, rest, rest.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            offset += n
        }
        return true
    }

    /// The response head (up to the blank line) and whatever came after it.
    static func readHead(_ fd: Int32) -> (String?, [UInt8]) {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1024)
        let end = Array("\r\n\r\n".utf8)
        while data.count < 64 << 10 {
            let n = read(fd, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return (nil, []) }
            data += buffer[0 ..< n]
            if let range = data.firstRange(of: end) {
                return (String(decoding: data[..<range.lowerBound], as: UTF8.self), Array(data[range.upperBound...]))
            }
        }
        return (nil, [])
    }

    /// The API error's message from a refusal's JSON body.
    static func errorMessage(head: String, body: [UInt8], fd: Int32) -> String? {
        let length = head.split(separator: "\r\n").compactMap { line -> Int? in
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "content-length" else { return nil }
            return Int(parts[1].trimmingCharacters(in: .whitespaces))
        }.first ?? 0
        var data = body
        var buffer = [UInt8](repeating: 0, count: 4096)
        while data.count < min(length, 1 << 20) {
            let n = read(fd, &buffer, buffer.count)
            guard n > 0 else { break }
            data += buffer[0 ..< n]
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(data)) as? [String: Any],
              let error = object["error"] as? [String: Any], let message = error["message"] as? String else { return nil }
        return "\(message)" + ((error["code"] as? String).map { " (\($0))" } ?? "")
    }
}
