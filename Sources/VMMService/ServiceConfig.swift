#if canImport(Glibc)
import Glibc
#endif
import VMMAPI
import WorkerProtocol

/// How the service runs: where things are, and what the daemon's configuration file
/// declares (system VMs, later quotas).
public struct ServiceConfig: Sendable {
    /// Persistent VM records live under `stateDirectory/vms`.
    public var stateDirectory: String
    /// The `vmm-worker` executable.
    public var workerExecutable: String
    /// The identity workers drop to before their guest runs (see the README's security
    /// section). Defaults to the daemon's own, which is right only for an unprivileged daemon.
    public var workerUID: UInt32 = getuid()
    public var workerGID: UInt32 = getgid()
    /// Enables the test-only hooks (e.g. asking a worker to make a forbidden system call).
    public var testHooks = false
    /// Per-user limits.
    public var quotas = QuotaPolicy.defaults
    /// VMs that belong to no client: created when the daemon starts.
    public var systemVMs: [CreateVMRequest] = []
    /// How long a worker may take to build its machine.
    public var readyTimeoutSeconds = 30
    /// What the daemon's probe VMs found about this host, for the workers' setups.
    public var hostFacts = HostFactsSlot()
    /// The level workers log at (`WorkerSetup.logLevel`): the daemon's own.
    public var workerLogLevel = "info"

    public init(stateDirectory: String, workerExecutable: String) {
        self.stateDirectory = stateDirectory
        self.workerExecutable = workerExecutable
    }
}
