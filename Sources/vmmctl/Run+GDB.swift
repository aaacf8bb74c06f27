import ArgumentParser
import Debug
import Synchronization
import VMM

/// `--gdb tcp:HOST:PORT|unix:PATH`.
struct GDBEndpointArgument: ExpressibleByArgument {
    let endpoint: GDBEndpoint

    init?(argument: String) {
        guard let endpoint = GDBEndpoint(parsing: argument) else { return nil }
        self.endpoint = endpoint
    }
}

/// Runs `machine` with a gdb stub listening at `endpoint` until the guest stops; with
/// `wait`, the first instruction waits until gdb has attached.
func runUnderDebugger(_ machine: Machine, at endpoint: GDBEndpoint, wait: Bool) throws -> StopReason {
    let server = try GDBServer(endpoint: endpoint, target: MachineTarget(machine: machine)) { printError("vmmctl: \($0)") }
    printError("vmmctl: gdb stub listening on \(server.address)" + (wait ? " (the guest waits for gdb)" : ""))
    if wait {
        // Started paused once the client is attached, so the client sees the first instruction.
        let failure = Mutex<String?>(nil)
        try server.start(afterFirstAttach: {
            do { try machine.start(paused: true) } catch { failure.withLock { $0 = "\(error)" } }
        })
        server.waitForFirstClient()
        if let why = failure.withLock({ $0 }) {
            server.stop()
            throw DebugError("starting the guest under gdb: \(why)")
        }
    } else {
        try machine.start()
        try server.start()
    }
    let reason: StopReason
    do {
        reason = try machine.waitForStop()
    } catch {
        server.stop()
        throw error
    }
    server.machineEnded(reason)
    return reason
}
