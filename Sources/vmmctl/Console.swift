import ArgumentParser
import Dispatch
import FoundationEssentials
import Synchronization
import KVM
import NIOHTTP1
import VMMClient
#if canImport(Glibc)
import Glibc
#endif

struct Console: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "console",
        abstract: "Attach to a VM's serial console.",
        discussion: """
        The output so far, then live output; keystrokes go to the guest's COM1. \
        Ctrl-] (0x1d) detaches and leaves the VM running. With --no-follow, print the output \
        kept so far and exit.
        """)

    @OptionGroup var options: ClientOptions
    @Argument var name: String
    @Flag(help: "Print the output so far and exit.") var noFollow = false

    func run() async throws {
        let connection = try await options.connect()
        if noFollow {
            let result: APIResult
            do { result = try await connection.request(.GET, vmPath(name, options, "/console")) } catch { clientFail(error) }
            do { try result.throwIfError() } catch { clientFail(error) }
            writeAll(STDOUT_FILENO, result.body)
            return
        }
        await ConsoleSession(options: options, name: name).attach(over: connection)
    }
}

/// An attached console: output streams from `GET .../console?follow=true`, stdin goes
/// to `POST .../console` on a second connection, Ctrl-] detaches.
struct ConsoleSession {
    let options: ClientOptions
    let name: String

    /// The detach key: Ctrl-] as telnet and virsh use it.
    static let escape: UInt8 = 0x1D

    func attach(over connection: APIConnection) async {
        let terminal = RawTerminal()
        defer { terminal.restore() }
        let input: ConsoleInput
        do { input = ConsoleInput(socket: options.socket, connection: try await APIConnection.connect(socketPath: options.socket)) } catch {
            clientFail(error)
        }
        let inputPath = vmPath(name, options, "/console")
        // Keystrokes on their own thread: read(2) on stdin blocks.
        _ = try? HostThread(name: "console-in") {
            var buffer = [UInt8](repeating: 0, count: 256)
            while true {
                let n = read(STDIN_FILENO, &buffer, buffer.count)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return }
                var bytes = Array(buffer[0 ..< n])
                if let cut = bytes.firstIndex(of: Self.escape) {
                    bytes = Array(bytes[..<cut])
                    if !bytes.isEmpty { input.send(bytes, path: inputPath) }
                    terminal.restore()
                    printError("\r\nvmmctl: detached")
                    exit(0)
                }
                input.send(bytes, path: inputPath)
            }
        }
        do {
            let result = try await connection.stream(.GET, vmPath(name, options, "/console") + (options.owner == nil ? "?" : "&") + "follow=true") { chunk in
                _ = write(STDOUT_FILENO, chunk, chunk.count)
            }
            try result.throwIfError()
            terminal.restore()
            printError("\r\nvmmctl: the console of \(name) ended (the VM was destroyed)")
        } catch {
            terminal.restore()
            clientFail(error)
        }
    }
}

/// The connection keystrokes go out on. vmmd closes a connection that sits idle (a
/// minute, by default), and a console can sit unused for longer: a send that finds its
/// connection closed connects again and sends once more.
final class ConsoleInput: @unchecked Sendable {
    // @unchecked: used by the one keystroke thread only.
    private let socket: String
    private var connection: APIConnection?

    init(socket: String, connection: APIConnection) {
        self.socket = socket; self.connection = connection
    }

    /// Posts keystrokes and waits for the answer, so that they arrive in order.
    func send(_ bytes: [UInt8], path: String) {
        let done = DispatchSemaphore(value: 0)
        Task {
            for _ in 0 ..< 2 {
                do {
                    let c: APIConnection
                    if let connection { c = connection } else { c = try await APIConnection.connect(socketPath: socket) }
                    connection = c
                    _ = try await c.request(.POST, path, body: bytes)
                    break
                } catch {
                    connection = nil
                }
            }
            done.signal()
        }
        done.wait()
    }
}

/// Puts the terminal in raw mode (when stdin is one) and restores it.
final class RawTerminal: @unchecked Sendable {
    // @unchecked: written once in init, restored at most once (`restored`).
    private var saved = termios()
    private let active: Bool
    private let restored = Atomic(false)

    init() {
        guard isatty(STDIN_FILENO) == 1, tcgetattr(STDIN_FILENO, &saved) == 0 else { active = false; return }
        var raw = saved
        cfmakeraw(&raw)
        active = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0
    }

    func restore() {
        guard active, !restored.exchange(true, ordering: .acquiringAndReleasing) else { return }
        tcsetattr(STDIN_FILENO, TCSANOW, &saved)
    }
}
