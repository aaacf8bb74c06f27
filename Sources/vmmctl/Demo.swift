import ArgumentParser
import Boot
import VMM

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run the built-in demo guest: it greets on the serial console and powers off.")

    @Option(help: "Command line handed to the demo guest (it prints it back).")
    var cmdline: String = "console=ttyS0 hello=world"

    func run() throws {
        var config = MachineConfig()
        config.memoryMiB = 16
        config.kernel = DemoGuest.image()
        config.commandLine = cmdline
        throw ExitCode(runMachine(config, serial: .stdio))
    }
}
