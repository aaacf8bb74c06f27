import ArgumentParser
import CSys
import CUserDB
import FoundationEssentials
import KVM
import Logging
import NIOPosix
import ServiceLifecycle
import VMMAPI
import VMM
import VMMService
import WorkerProtocol

/// vmmd's command line through ArgumentParser: help, usage and errors, and any line the
/// fast parse leaves (`VMMDMain`). Its defaults are `DaemonOptions`'.
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
    var socket: String = DaemonOptions.defaults.socket

    @Option(help: "The socket that hands /dev/kvm descriptors to library users (default: next to --socket, vmmd-handle.sock).")
    var handleSocket: String?

    @Option(help: "Where persistent VMs are recorded.")
    var stateDir: String = DaemonOptions.defaults.stateDir

    @Option(help: "Configuration file (JSON): system VMs and quotas (see the README).")
    var config: String?

    @Option(help: "The vmm-worker executable (default: next to vmmd).")
    var worker: String?

    @Option(help: "The KVM device.")
    var device: String = DaemonOptions.defaults.device

    @Option(help: "The user workers run as once sandboxed (default when root: vmm-worker if it exists, else nobody).")
    var workerUser: String?

    @Flag(help: "Enable test-only hooks (POST /v1/vms/NAME/test/forbidden-syscall). Never in production.")
    var testHooks = DaemonOptions.defaults.testHooks

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = DaemonOptions.defaults.logLevel

    /// The parsed options as the plain struct the fast parse also fills.
    var options: DaemonOptions {
        DaemonOptions(socket: socket, handleSocket: handleSocket, stateDir: stateDir, config: config, worker: worker,
                      device: device, workerUser: workerUser, testHooks: testHooks, logLevel: logLevel)
    }

    func run() async throws { try await options.run() }

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
        return PathName.join(PathName.directory(of: me), name)
    }
}
