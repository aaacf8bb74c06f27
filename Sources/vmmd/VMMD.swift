import ArgumentParser
import CSys
import CUserDB
import Foundation
import KVM
import Logging
import NIOPosix
import ServiceLifecycle
import VMMAPI
import VMM
import VMMService
import WorkerProtocol

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

    @Option(help: "The socket that hands /dev/kvm descriptors to library users (default: next to --socket, vmmd-handle.sock).")
    var handleSocket: String?

    @Option(help: "Where persistent VMs are recorded.")
    var stateDir: String = "/var/lib/vmm"

    @Option(help: "Configuration file (JSON): system VMs and quotas (see the README).")
    var config: String?

    @Option(help: "The vmm-worker executable (default: next to vmmd).")
    var worker: String?

    @Option(help: "The KVM device.")
    var device: String = "/dev/kvm"

    @Option(help: "The user workers run as once sandboxed (default when root: vmm-worker if it exists, else nobody).")
    var workerUser: String?

    @Flag(help: "Enable test-only hooks (POST /v1/vms/NAME/test/forbidden-syscall). Never in production.")
    var testHooks = false

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
        let handles = handleSocket ?? ((socket as NSString).deletingLastPathComponent as NSString).appendingPathComponent("vmmd-handle.sock")
        // Another vmmd on either socket: refuse before creating anything (socket files,
        // directories, the state directory), so that the failed start leaves nothing.
        do {
            try APIServer.removeStaleSocket(socket)
            try APIServer.removeStaleSocket(handles)
        } catch {
            throw ValidationError("\(error)")
        }
        let socketDir = (socket as NSString).deletingLastPathComponent
        if !socketDir.isEmpty { try? FileManager.default.createDirectory(atPath: socketDir, withIntermediateDirectories: true) }

        let kvm = try KVMSystem(path: device)
        var serviceConfig = ServiceConfig(stateDirectory: stateDir, workerExecutable: workerPath)
        serviceConfig.systemVMs = daemonConfig.systemVMs
        serviceConfig.quotas = daemonConfig.quotas
        serviceConfig.testHooks = testHooks
        (serviceConfig.workerUID, serviceConfig.workerGID) = try Self.workerIdentity(workerUser)
        logger.info("workers run as", metadata: ["uid": "\(serviceConfig.workerUID)", "gid": "\(serviceConfig.workerGID)"])
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let service = try VMService(config: serviceConfig, kvm: kvm, group: group, logger: logger)
        Self.raiseDescriptorLimit(logger: logger)
        let facts = serviceConfig.hostFacts
        let server = APIServer(socketPath: socket, handleSocketPath: handles, service: service, group: group,
                               metrics: metrics, logger: logger, limits: daemonConfig.connections) {
            // The probe VMs every worker would otherwise run at its start, once, here.
            Thread.detachNewThread {
                guard let found = HostFacts.probe(kvm) else {
                    logger.warning("host probe incomplete: each worker probes for itself")
                    return
                }
                facts.set(found)
                logger.info("host probed for the workers", metadata: [
                    "emulation": "\(HostEmulation(bits: found.emulation))", "cpuid_entries": "\(found.supportedCPUID.count)"])
            }
        }
        let services = ServiceGroup(configuration: .init(
            services: [.init(service: server)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await services.run()
        try await group.shutdownGracefully()
    }

    /// Every connection and every VM costs descriptors: the soft RLIMIT_NOFILE goes up to
    /// the hard one (systemd's default soft limit is 1024).
    static func raiseDescriptorLimit(logger: Logger) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) != 0 {
            logger.warning("cannot raise the descriptor limit", metadata: ["errno": "\(errno)"])
        }
    }

    /// The uid/gid of `--worker-user`, or the default: a dedicated `vmm-worker` user, else
    /// `nobody`, when vmmd is root; vmmd's own identity otherwise (it cannot drop further).
    static func workerIdentity(_ name: String?) throws -> (UInt32, UInt32) {
        var uid: uid_t = 0, gid: gid_t = 0
        if let name {
            guard csys_user_ids(name, &uid, &gid) == 0 else { throw ValidationError("no user named \(name)") }
            return (uid, gid)
        }
        guard geteuid() == 0 else { return (getuid(), getgid()) }
        for candidate in ["vmm-worker", "nobody"] where csys_user_ids(candidate, &uid, &gid) == 0 {
            return (uid, gid)
        }
        return (65534, 65534)
    }

    /// `name` in the directory of this executable.
    static func siblingExecutable(_ name: String) -> String {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return ((me as NSString).deletingLastPathComponent as NSString).appendingPathComponent(name)
    }
}
