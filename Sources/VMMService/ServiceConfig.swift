import VMMAPI

/// How the service runs: where things are, and what the daemon's configuration file
/// declares (system VMs, later quotas).
public struct ServiceConfig: Sendable {
    /// Persistent VM records live under `stateDirectory/vms`.
    public var stateDirectory: String
    /// The `vmm-worker` executable.
    public var workerExecutable: String
    /// VMs that belong to no client: created when the daemon starts.
    public var systemVMs: [CreateVMRequest] = []
    /// How long a worker may take to build its machine.
    public var readyTimeoutSeconds = 30

    public init(stateDirectory: String, workerExecutable: String) {
        self.stateDirectory = stateDirectory
        self.workerExecutable = workerExecutable
    }
}
