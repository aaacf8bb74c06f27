import ArgumentParser
import Logging

@main
struct VMMCtl: AsyncParsableCommand {
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
                      Create.self, List.self, Info.self, Start.self, Pause.self, Resume.self, Reset.self,
                      PowerOff.self, Kill.self, Destroy.self, Console.self, Stats.self, SnapshotVM.self, GDB.self]
    )

    /// `vmmctl --socket S list` works as `vmmctl list --socket S` does.
    static func main() async {
        await main(ClientOptions.movingLeadingOptions(Array(CommandLine.arguments.dropFirst())))
    }

    /// Log lines (including guests' `log` hypercalls) go to stderr.
    static let bootstrapLogging: Void = LoggingSystem.bootstrap(StreamLogHandler.standardError)

}
