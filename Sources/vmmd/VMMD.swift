import ArgumentParser
import Foundation
import KVM
import Logging
import NIOPosix
import ServiceLifecycle
import VMMAPI
import VMMService

@main
struct VMMD: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmmd",
        abstract: "The swift-vmm control daemon: named VMs for permitted users over HTTP/JSON on a Unix socket.",
        discussion: """
        Every VM runs in a vmm-worker process of its own; vmmd is the only process that opens \
        /dev/kvm. Clients: `vmmctl --socket PATH ...`, or `curl --unix-socket PATH http://vmm/v1/vms`. \
        The API contract is docs/api/openapi.yaml.
        """)

    @Option(help: "The API socket.")
    var socket: String = "/run/vmm/vmmd.sock"

    @Option(help: "Where persistent VMs are recorded.")
    var stateDir: String = "/var/lib/vmm"

    @Option(help: "Configuration file (JSON): system VMs.")
    var config: String?

    @Option(help: "The vmm-worker executable (default: next to vmmd).")
    var worker: String?

    @Option(help: "The KVM device.")
    var device: String = "/dev/kvm"

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "vmmd")
        let metrics = DaemonMetrics()
        metrics.bootstrap()

        let daemonConfig: DaemonConfig
        do {
            daemonConfig = try config.map(DaemonConfig.load) ?? DaemonConfig()
        } catch {
            throw ValidationError("cannot read the configuration \(config ?? ""): \(error)")
        }
        let workerPath = worker ?? Self.siblingExecutable("vmm-worker")
        guard access(workerPath, X_OK) == 0 else { throw ValidationError("no vmm-worker executable at \(workerPath)") }
        let socketDir = (socket as NSString).deletingLastPathComponent
        if !socketDir.isEmpty { try? FileManager.default.createDirectory(atPath: socketDir, withIntermediateDirectories: true) }

        let kvm = try KVMSystem(path: device)
        var serviceConfig = ServiceConfig(stateDirectory: stateDir, workerExecutable: workerPath)
        serviceConfig.systemVMs = daemonConfig.systemVMs
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let service = try VMService(config: serviceConfig, kvm: kvm, group: group, logger: logger)
        let server = APIServer(socketPath: socket, service: service, group: group, metrics: metrics, logger: logger)
        let services = ServiceGroup(configuration: .init(
            services: [.init(service: server)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await services.run()
        try await group.shutdownGracefully()
    }

    /// `name` in the directory of this executable.
    static func siblingExecutable(_ name: String) -> String {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return ((me as NSString).deletingLastPathComponent as NSString).appendingPathComponent(name)
    }
}
