import ArgumentParser
import Logging

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
        """,
        subcommands: [Run.self, Demo.self, Caps.self, CPUTemplates.self]
    )

    /// Log lines (including guests' `log` hypercalls) go to stderr.
    static let bootstrapLogging: Void = LoggingSystem.bootstrap(StreamLogHandler.standardError)

}
