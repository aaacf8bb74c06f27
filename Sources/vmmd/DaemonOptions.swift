import ArgumentParser
import CSys
import FoundationEssentials
import KVM
import Logging
import LongOptions
import NIOPosix
import ServiceLifecycle
import VMM
import VMMService
import WorkerProtocol

/// vmmd's options as plain values: what both parsers produce, and what the daemon runs
/// from. The fast parse (`fastParse`) fills one without ArgumentParser's reflection over
/// `VMMD` (~2 ms of CPU, an eighth of the daemon's start to a listening socket).
struct DaemonOptions: Equatable, LongOptionFillable {
    var socket = "/run/vmm/vmmd.sock"
    var handleSocket: String?
    var stateDir = "/var/lib/vmm"
    var config: String?
    var worker: String?
    var device = "/dev/kvm"
    var workerUser: String?
    var testHooks = false
    var logLevel = "info"

    static let defaults = DaemonOptions()

    /// The fast parse (`fastParse`, `LongOptions.scan`) takes the plain command lines;
    /// help, anything unknown or repeated goes to ArgumentParser.
    mutating func setFlag(_ option: Substring) -> Bool {
        guard option == "test-hooks" else { return false }
        testHooks = true
        return true
    }

    mutating func set(option: Substring, to value: String) -> Bool {
        switch option {
        case "socket": socket = value
        case "handle-socket": handleSocket = value
        case "state-dir": stateDir = value
        case "config": config = value
        case "worker": worker = value
        case "device": device = value
        case "worker-user": workerUser = value
        case "log-level": logLevel = value
        default: return false
        }
        return true
    }
}

extension DaemonOptions {
    /// Starts the daemon and serves until SIGTERM/SIGINT.
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
        let workerPath = worker ?? VMMD.siblingExecutable("vmm-worker")
        guard access(workerPath, X_OK) == 0 else { throw ValidationError("no vmm-worker executable at \(workerPath)") }
        let handles = handleSocket ?? PathName.join(PathName.directory(of: socket), "vmmd-handle.sock")
        // Another vmmd on either socket: refuse before creating anything (socket files,
        // directories, the state directory), so that the failed start leaves nothing.
        do {
            try APIServer.removeStaleSocket(socket)
            try APIServer.removeStaleSocket(handles)
        } catch {
            throw ValidationError("\(error)")
        }
        let socketDir = PathName.directory(of: socket)
        if !socketDir.isEmpty { try? FileManager.default.createDirectory(atPath: socketDir, withIntermediateDirectories: true) }

        let kvm = try KVMSystem(path: device)
        var serviceConfig = ServiceConfig(stateDirectory: stateDir, workerExecutable: workerPath)
        serviceConfig.systemVMs = daemonConfig.systemVMs
        serviceConfig.quotas = daemonConfig.quotas
        serviceConfig.testHooks = testHooks
        serviceConfig.workerLogLevel = level.rawValue
        (serviceConfig.workerUID, serviceConfig.workerGID) = try VMMD.workerIdentity(workerUser)
        logger.info("workers run as", metadata: ["uid": "\(serviceConfig.workerUID)", "gid": "\(serviceConfig.workerGID)"])
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let service = try VMService(config: serviceConfig, kvm: kvm, group: group, logger: logger)
        VMMD.raiseDescriptorLimit(logger: logger)
        let facts = serviceConfig.hostFacts
        let server = APIServer(socketPath: socket, handleSocketPath: handles, service: service, group: group,
                               metrics: metrics, logger: logger, limits: daemonConfig.connections) {
            // The probe VMs every worker would otherwise run at its start, once, here.
            let cache = HostFacts.daemonCache(device: device)
            let probe = try? HostThread(name: "host-probe") {
                guard let (found, fromCache) = HostFacts.probe(kvm, cache: cache) else {
                    logger.warning("host probe incomplete: each worker probes for itself")
                    return
                }
                facts.set(found)
                let earlier = "this boot's earlier vmmd (\(cache?.path ?? ""))"
                logger.info("host probed for the workers", metadata: [
                    "emulation": "\(HostEmulation(bits: found.emulation))", "cpuid_entries": "\(found.supportedCPUID.count)",
                    "guest_debug": "\(GuestDebugSupport(bits: found.debug))",
                    "emulation_from": .string(fromCache.emulation ? earlier : "a probe VM"),
                    "guest_debug_from": .string(fromCache.debug ? earlier : "a probe VM")])
                if !(fromCache.emulation && fromCache.debug), let cache {
                    found.remember(in: cache, kvm: kvm, confirmingHang: !fromCache.emulation)
                }
            }
            if let probe { probe.detach() } else { logger.warning("cannot start the host probe: each worker probes for itself") }
        }
        let services = ServiceGroup(configuration: .init(
            services: [.init(service: server)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await services.run()
        try await group.shutdownGracefully()
    }

}
