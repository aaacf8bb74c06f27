import ArgumentParser
import Dispatch
import Logging
#if canImport(Glibc)
import Glibc
#endif

@main
struct VMMCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmmctl",
        abstract: "Run and manage KVM virtual machines with swift-vmm.",
        discussion: """
        Exit status of `run` and `demo`: 0 when the guest powers off; (value << 1) | 1 when it \
        writes value to the debug-exit port (as QEMU's isa-debug-exit); 2 reset with --no-reboot; \
        4 halted for good; 6 triple fault; 8 KVM internal error; 10 VMM error (including an \
        image or option refused before the guest ran); 12 killed.

        The daemon commands (create, list, info, start, ..., destroy, console, stats) talk to \
        vmmd over its socket (--socket, default /run/vmm/vmmd.sock). They exit 1 when vmmd \
        refuses a request (the message names the error code) and 2 when vmmd cannot be reached.
        """,
        subcommands: [Run.self, Demo.self, Caps.self, CPUTemplates.self, FoldSnapshot.self,
                      Create.self, List.self, Info.self, Wait.self, Start.self, Pause.self, Resume.self, Reset.self,
                      PowerOff.self, Kill.self, Destroy.self, Console.self, Stats.self, SnapshotVM.self, GDB.self]
    )

    /// `vmmctl --socket S list` works as `vmmctl list --socket S` does.
    ///
    /// Every subcommand names itself (`commandName`): otherwise ArgumentParser derives
    /// each name from `String(describing:)` of the type, dynamic casts that scan every
    /// protocol conformance of this static binary, the larger part of `vmmctl run`'s
    /// start-up CPU time.
    ///
    /// The root is synchronous on purpose: `run`, `demo`, `caps` and the others that need
    /// no daemon run on the main thread, and no concurrency runtime or thread pool is
    /// started for them. Only the daemon commands (`AsyncParsableCommand`s) get one.
    static func main() {
        unblockTerminatingSignals()
        let all = CommandLine.arguments
        if all.count > 1, all[1] == "run", let request = RunRequest.fastParse(all[2...]) {
            #if DEBUG
            checkFastParse(request, Array(all[2...]))
            #endif
            do { try request.run() } catch { finish(error) }
            Glibc.exit(0)
        }
        let arguments = Array(all.dropFirst())
        let command: any ParsableCommand
        do {
            command = try parseRunAlone(arguments) ?? parseAsRoot(ClientOptions.movingLeadingOptions(arguments))
        } catch {
            exit(withError: error)
        }
        guard let asyncCommand = command as? any AsyncParsableCommand else {
            var command = command
            do { try command.run() } catch { finish(error) }
            exit()
        }
        let box = CommandBox(asyncCommand)
        Task.detached {
            do { try await box.command.run() } catch { finish(error) }
            exit()
        }
        dispatchMain()
    }

    /// Ends the process for a command's error. An `ExitCode` (how `run` returns its
    /// guest's status) exits at once: ArgumentParser's `exit(withError:)` first renders
    /// the root command's usage for any error, even one it then does not print, which
    /// reflects over every subcommand's options (~0.15 ms of a small guest's 5 ms run).
    static func finish(_ error: any Error) -> Never {
        if let code = error as? ExitCode { Glibc.exit(code.rawValue) }
        exit(withError: error)
    }

    /// `vmmctl run ...` that `RunRequest.fastParse` left to ArgumentParser, parsed with `Run` as
    /// the root command: the root parse would also reflect over every other subcommand's
    /// arguments (for completion scripts and passthrough checks), about a fifth of a small
    /// guest's whole run. Help requests and anything `Run` refuses take the root parse, so
    /// usage and error messages are the root's.
    static func parseRunAlone(_ arguments: [String]) -> Run? {
        guard arguments.first == "run" else { return nil }
        let rest = Array(arguments.dropFirst())
        guard !rest.contains(where: { $0 == "help" || $0 == "-h" || $0.hasPrefix("--help") || $0.hasPrefix("--generate-completion")
                                      || $0.hasPrefix("--experimental") }) else { return nil }
        return try? Run.parse(rest)
    }

    #if DEBUG
    /// Debug builds (the tests' binary) parse every command line `RunRequest.fastParse` takes
    /// through ArgumentParser too, and end with status 70 (EX_SOFTWARE) when the two
    /// requests differ in any field, so that every test running `vmmctl run` checks the
    /// fast parse. `VMMCTL_TRACE_PARSE=1` says which parser took the command line.
    static func checkFastParse(_ request: RunRequest, _ arguments: [String]) {
        if getenv("VMMCTL_TRACE_PARSE") != nil { printError("vmmctl: fast parse") }
        let fast = String(describing: request)
        var expected = "a refusal"
        if let parsed = (try? Run.parse(arguments))?.request {
            expected = String(describing: parsed)
        }
        guard fast != expected else { return }
        printError("vmmctl: internal error: the fast parse of run \(arguments) differs from ArgumentParser's\n  fast: \(fast)\n  ArgumentParser: \(expected)")
        Glibc.exit(70)
    }
    #endif

    /// Log lines (including guests' `log` hypercalls) go to stderr.
    static let bootstrapLogging: Void = LoggingSystem.bootstrap(StreamLogHandler.standardError)
}

/// Carries the parsed daemon command into its task (it runs there alone).
private final class CommandBox: @unchecked Sendable {
    var command: any AsyncParsableCommand
    init(_ command: any AsyncParsableCommand) { self.command = command }
}

/// A process can start with signals blocked: posix_spawn from a thread that blocks them
/// (test runners' and thread pools' threads do) passes the mask on, and exec keeps it.
/// `vmmctl run` relies on the default action of SIGTERM, SIGINT, SIGHUP and SIGQUIT to
/// end (its VM goes with the process), so it unblocks them before any thread starts:
/// with them blocked, a `kill` stayed pending and the VM ran on.
func unblockTerminatingSignals() {
    var set = sigset_t()
    sigemptyset(&set)
    for signal in [SIGTERM, SIGINT, SIGHUP, SIGQUIT] { sigaddset(&set, signal) }
    pthread_sigmask(SIG_UNBLOCK, &set, nil)
}
