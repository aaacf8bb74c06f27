import Boot
import CSys
import KVM
import Logging
import Metrics
import NIOCore
import Synchronization
import VMMAPI
import WorkerProtocol
#if canImport(Glibc)
import Glibc
#endif

/// Everything the daemon knows: the named VMs per owner, their lifetimes and workers.
///
/// The HTTP layer parses a request into a route and calls one method here with the
/// caller's identity; nothing else reaches a VM. Every method enforces ownership: a VM
/// of another user is reported exactly as a VM that does not exist.
public final class VMService: Sendable {
    let config: ServiceConfig
    let kvm: KVMSystem
    let group: EventLoopGroup
    let logger: Logger
    let watcher: ProcessWatcher
    let spawner: WorkerSpawner
    let store: StateStore
    /// The VMs, and the names (with sizes) reserved by creations in progress: one lock,
    /// so that the name check, the quota check and the reservation are one step.
    private struct Registry {
        var vms: [VMKey: ManagedVM] = [:]
        var reserved: [VMKey: (memoryMiB: UInt64, vcpus: Int)] = [:]

        func usage(of owner: Owner) -> Usage {
            var u = Usage()
            for vm in vms.values where vm.key.owner == owner { u.add(memoryMiB: vm.request.memoryMiB, vcpus: vm.request.vcpus) }
            for (key, size) in reserved where key.owner == owner { u.add(memoryMiB: size.memoryMiB, vcpus: size.vcpus) }
            return u
        }
    }
    private let registry = Mutex(Registry())

    let createdCounter = Counter(label: "vmmd_vms_created_total")
    let destroyedCounter = Counter(label: "vmmd_vms_destroyed_total")
    let crashCounter = Counter(label: "vmmd_worker_crashes_total")
    let failedCreates = Counter(label: "vmmd_vm_create_failures_total")

    public init(config: ServiceConfig, kvm: KVMSystem, group: EventLoopGroup, logger: Logger) throws {
        self.config = config
        self.kvm = kvm
        self.group = group
        self.logger = logger
        self.watcher = try ProcessWatcher()
        self.spawner = try WorkerSpawner()
        self.store = try StateStore(directory: config.stateDirectory)
    }

    // MARK: - Lookup

    /// The VM `name` as `caller` means it, or not_found.
    func lookup(_ name: String, owner selector: OwnerSelector?, caller: Caller) throws(APIError) -> ManagedVM {
        let owner: Owner
        switch selector {
        case nil: owner = .user(caller.uid)
        case .uid(let uid)?: owner = .user(uid)
        case .system?: owner = .system
        }
        let notFound = APIError(.notFound, "no VM named '\(name)'")
        // Another user's VM is indistinguishable from a missing one.
        guard caller.isRoot || owner == .user(caller.uid) else { throw notFound }
        guard let vm = registry.withLock({ $0.vms[VMKey(owner: owner, name: name)] }) else { throw notFound }
        return vm
    }

    public func list(caller: Caller) -> [VMInfo] {
        registry.withLock { Array($0.vms.values) }
            .filter { caller.isRoot || $0.key.owner == .user(caller.uid) }
            .sorted { ($0.key.owner.uid ?? UInt32.max, $0.key.name) < ($1.key.owner.uid ?? UInt32.max, $1.key.name) }
            .map { $0.info() }
    }

    public func info(_ name: String, owner: OwnerSelector?, caller: Caller) throws(APIError) -> VMInfo {
        try lookup(name, owner: owner, caller: caller).info()
    }

    /// `GET /v1/vms/{name}?wait_for=STATE[,STATE...]`: the VM's info as soon as it is in
    /// one of `states`, or after `milliseconds` in whatever state it is then; not found
    /// once it is destroyed. A client that follows a VM (a guest that runs to its end:
    /// `stopped,crashed`) asks once instead of polling.
    public func waitFor(_ name: String, states wanted: [VMState], milliseconds: Int, owner: OwnerSelector?,
                        caller: Caller) async throws(APIError) -> VMInfo {
        let deadline = ContinuousClock.now + .milliseconds(milliseconds)
        while true {
            let vm = try lookup(name, owner: owner, caller: caller)
            guard !vm.isDestroying else { throw APIError(.notFound, "no VM named '\(name)'") }
            // The generation before the state is read: a change in between ends the wait.
            let generation = vm.generation
            let info = vm.info()
            let left = deadline - ContinuousClock.now
            guard !wanted.contains(info.state), left > .zero, !Task.isCancelled else { return info }
            let (seconds, attoseconds) = left.components
            _ = await vm.waitForChange(after: generation, milliseconds: Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000) + 1)
        }
    }

    /// Requests waiting for a VM to change (`wait_for`), over every VM (for /metrics).
    public func waitingRequests() -> Int {
        registry.withLock({ Array($0.vms.values) }).reduce(0) { $0 + $1.changeWaiterCount }
    }

    /// How many VMs are in each state (for /metrics).
    public func stateCounts() -> [VMState: Int] {
        var counts: [VMState: Int] = [:]
        for vm in registry.withLock({ Array($0.vms.values) }) { counts[vm.phase, default: 0] += 1 }
        return counts
    }

    // MARK: - Create

    /// `POST /v1/vms`: reserves the name, opens the images as the caller, creates the
    /// guest memory, starts a worker and waits for its machine to be built (so a bad
    /// image is reported here), then starts the guest if asked.
    public func create(_ request: CreateVMRequest, caller: Caller, connection: ConnectionToken?) async throws(APIError) -> VMInfo {
        try request.validate()
        try Self.checkTemplate(request.cpuTemplate)
        try checkVCPUs(request.vcpus)
        return try await create(request, owner: .user(caller.uid), lifetime: request.lifetime, opener: caller,
                                connection: connection, persist: request.lifetime == .persistent)
    }

    func create(_ given: CreateVMRequest, owner: Owner, lifetime: Lifetime, opener: Caller,
                connection: ConnectionToken?, persist: Bool, createdAt: String? = nil) async throws(APIError) -> VMInfo {
        // A restore's shape is its snapshot's: known only once the snapshot is open.
        var (request, snapshotFiles) = try await openSnapshot(for: given, as: opener)
        let handedOver = Mutex(false)
        defer { if !handedOver.withLock({ $0 }) { for fd in snapshotFiles { close(fd) } } }
        // A MAC chosen here is part of the VM from now on (and of its persisted record).
        for i in request.net.indices where request.net[i].mac == nil { request.net[i].mac = Self.randomMAC() }
        let key = VMKey(owner: owner, name: request.name)
        // Name and quota first, before anything is opened or allocated: a refused
        // request leaves nothing behind. (The descriptor count reads /proc: outside the lock.)
        if case .user(let uid) = owner { try DescriptorBudget.checkUnprivileged(uid: uid) }
        try registry.withLock { r throws(APIError) in
            guard r.vms[key] == nil, r.reserved[key] == nil else {
                throw APIError(.nameTaken, "a VM named '\(request.name)' already exists", field: "name")
            }
            if case .user(let uid) = owner, uid != 0 {
                try r.usage(of: owner).check(adding: request.memoryMiB, vcpus: request.vcpus,
                                             against: config.quotas.quota(for: uid), uid: uid)
            }
            r.reserved[key] = (request.memoryMiB, request.vcpus)
        }
        let vm: ManagedVM
        do throws(APIError) {
            var paths = request.restoreFrom == nil ? [(field: "kernel", path: request.kernel)] : []
            if let initrd = request.initrd { paths.append((field: "initrd", path: initrd)) }
            var files = paths.map { ($0.field, $0.path, CallerFiles.Kind.image) }
            for (i, disk) in request.disks.enumerated() {
                files.append(("disks[\(i)].path", disk.path, .disk(readOnly: disk.readOnly, direct: disk.direct)))
            }
            for (i, network) in request.net.enumerated() { files.append(("net[\(i)].tap", network.tap, .tap)) }
            if let vsock = request.vsock { files.append(("vsock.socket", vsock.socket, .vsockListener)) }
            let images = snapshotFiles + (try await CallerFiles.open(files, as: opener))
            handedOver.withLock { $0 = true }
            let memory: GuestMemoryFiles
            let copyOnWrite = request.restoreFrom.map { $0.memory == .copyOnWrite } ?? false
            switch Result(catching: { copyOnWrite ? GuestMemoryFiles.none() : try GuestMemoryFiles(vmName: request.name, memoryMiB: request.memoryMiB) }) {
            case .success(let m): memory = m
            case .failure(let e):
                for fd in images { close(fd) }
                if let vsock = request.vsock { CallerFiles.removeSocket(vsock.socket, as: opener) }
                throw APIError(.internalError, "cannot create \(request.memoryMiB) MiB of guest memory: \(e)")
            }
            vm = ManagedVM(key: key, request: request, lifetime: lifetime, opener: opener,
                           backing: .worker(memory: memory, images: images), createdAt: createdAt ?? Timestamp.now())
        } catch {
            registry.withLock { _ = $0.reserved.removeValue(forKey: key) }
            throw error
        }
        // Everything else on this VM (a DELETE, its connection or creator going away)
        // waits until the creation has finished, one way or the other.
        await vm.operations.lock()
        defer { vm.operations.unlock() }
        registry.withLock { r in
            r.reserved[key] = nil
            r.vms[key] = vm
        }
        do throws(APIError) {
            if let connection, lifetime == .connection { bind(vm, to: connection) }
            if lifetime == .process { try watchCreator(of: vm, pid: opener.pid) }
            try await spawnWorker(for: vm)
            if persist {
                try checkStateDirectory()
                try store.save(StateStore.Record(request: request, opener: opener, createdAt: vm.createdAt))
            }
        } catch {
            failedCreates.increment()
            await destroyLocked(vm)
            throw error
        }
        createdCounter.increment()
        logger.info("created VM", metadata: ["vm": "\(key)", "lifetime": "\(lifetime.rawValue)", "pid": "\(vm.info().workerPID ?? 0)"])
        if request.start {
            let generation = vm.generation
            vm.state.withLock { $0.worker }?.send(.start)
            _ = await vm.waitForChange(after: generation)
        }
        return vm.info()
    }

    /// A locally administered unicast MAC in QEMU's 52:54:00 prefix.
    static func randomMAC() -> String {
        ([0x52, 0x54, 0x00] + (0 ..< 3).map { _ in UInt8.random(in: 0 ... 255) })
            .map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
    }

    /// A CPU template name the worker will understand.
    static func checkTemplate(_ name: String) throws(APIError) {
        guard CPUTemplate.all.contains(where: { $0.name == name }) else {
            throw APIError(.invalidField, "cpu_template must be one of: \(CPUTemplate.all.map(\.name).joined(separator: ", "))",
                           field: "cpu_template")
        }
    }

    /// The most vCPUs a VM may have here: the API's limit, or this host's KVM's
    /// (KVM_CAP_MAX_VCPUS) when that is lower.
    var maxVCPUs: Int {
        let host = Int(kvm.check(.maxVCPUs))
        return host > 0 ? min(host, CreateVMRequest.maxVCPUs) : CreateVMRequest.maxVCPUs
    }

    func checkVCPUs(_ vcpus: Int) throws(APIError) {
        guard vcpus <= maxVCPUs else {
            throw APIError(.invalidField, "vcpus must be at most \(maxVCPUs) on this host (KVM_CAP_MAX_VCPUS)", field: "vcpus")
        }
    }

    /// Starts a worker for `vm` and waits until its machine is built. The caller holds
    /// `vm.operations`.
    func spawnWorker(for vm: ManagedVM) async throws(APIError) {
        guard let (memory, images) = vm.workerResources else {
            throw APIError(.invalidState, "\(vm.key.name) runs in its owner's process, not in a worker")
        }
        guard !vm.isDestroying else { throw APIError(.notFound, "no VM named '\(vm.key.name)'") }
        // The link's close must kill this worker, not whichever one the VM has by then.
        let spawned = SpawnedWorker()
        // A vsock device gets a broker link of its own for the connections its guest opens.
        var broker: (daemon: Int32, worker: Int32)?
        if vm.request.vsock != nil {
            do { broker = try VsockBrokerServer.pair() } catch { throw APIError(.internalError, "\(error)") }
        }
        defer { if let broker { close(broker.worker) } }   // the worker has its copy once spawned
        vm.workerStarting()
        let worker: WorkerProcess
        do {
            worker = try await WorkerProcess.spawn(
                executable: config.workerExecutable, spawner: spawner,
                setup: vm.setup(memory: memory, sandboxUID: config.workerUID, sandboxGID: config.workerGID,
                               hostFacts: config.hostFacts.value, logLevel: config.workerLogLevel),
                descriptors: [kvm.rawDescriptor] + memory.descriptors + images + (broker.map { [$0.worker] } ?? []), group: group,
                onMessage: { [weak vm] in vm?.handle($0) },
                onClose: { [weak vm] why in
                    // The link is gone: make sure the process is too, so the pidfd fires.
                    if let why, let vm { vm.state.withLock { $0.setupFailure = $0.setupFailure ?? why } }
                    spawned.worker.withLock { $0 }?.kill()
                })
        } catch {
            if let broker { close(broker.daemon) }
            vm.state.withLock { s in
                s.readiness = .failure(APIError(.internalError, "cannot start a worker: \(error)"))
                if s.lastExit == nil || s.phase == .creating { s.phase = .crashed }
            }
            throw APIError(.internalError, "cannot start a worker: \(error)")
        }
        spawned.worker.withLock { $0 = worker }
        vm.workerStarted(worker)
        if let broker, let vsock = vm.request.vsock { VsockBrokerServer.serve(fd: broker.daemon, socket: vsock.socket, as: vm.opener) }
        watcher.watch(worker.pidfd) { [weak self, weak vm] in
            // The process is gone, but its last messages (a setup failure, the final
            // console bytes) may still sit in the socket: let the link drain to EOF
            // first, with a bound in case it does not close by itself.
            let channel = worker.channel
            let drained = channel.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
            channel.closeFuture.whenComplete { [weak self, weak vm] _ in
                drained.cancel()
                guard let vm else {
                    _ = worker.reapAndRelease()
                    return
                }
                vm.workerExited(worker)
                if vm.phase == .crashed, !vm.isDestroying {
                    self?.crashCounter.increment()
                    self?.logger.warning("worker crashed", metadata: ["vm": "\(vm.key)", "exit": "\(vm.info().lastExit?.message ?? "")"])
                }
            }
        }
        let timeout = Task { [config] in
            try await Task.sleep(nanoseconds: UInt64(config.readyTimeoutSeconds) * 1_000_000_000)
            worker.kill()
        }
        defer { timeout.cancel() }
        do {
            try await vm.waitUntilReady()
        } catch let error as APIError {
            throw error
        } catch {
            throw APIError(.internalError, "\(error)")
        }
    }

    private func watchCreator(of vm: ManagedVM, pid: Int32) throws(APIError) {
        let pidfd = pid > 0 ? csys_pidfd_open(pid) : -1
        guard pidfd >= 0 else {
            throw APIError(.invalidState, "the creating process (pid \(pid)) cannot be watched; it may have exited", field: "lifetime")
        }
        let token = watcher.watch(pidfd) { [weak self, weak vm] in
            guard let self, let vm else { return }
            self.logger.info("creator exited: destroying", metadata: ["vm": "\(vm.key)", "pid": "\(pid)"])
            Task { await self.destroy(vm) }
        }
        vm.state.withLock { s in
            s.creatorPidfd = pidfd
            s.creatorWatch = token
        }
    }

    // MARK: - Brokered handles

    /// Records a VM its owner will run in-process with a brokered /dev/kvm descriptor:
    /// name and quota checked and reserved as for a create, lifetime `connection` (the
    /// handle connection `connection`, which the broker watches).
    func openHandle(_ request: HandleRequest, caller: Caller, connection: HandleConnection) throws(APIError) -> ManagedVM {
        try request.validate()
        try checkVCPUs(request.vcpus)
        let create = request.asCreateRequest
        let key = VMKey(owner: .user(caller.uid), name: request.name)
        try DescriptorBudget.checkUnprivileged(uid: caller.uid)
        let vm = ManagedVM(key: key, request: create, lifetime: .connection, opener: caller,
                           backing: .handle(connection: connection, clientPID: caller.pid))
        try registry.withLock { r throws(APIError) in
            guard r.vms[key] == nil, r.reserved[key] == nil else {
                throw APIError(.nameTaken, "a VM named '\(request.name)' already exists", field: "name")
            }
            if caller.uid != 0 {
                try r.usage(of: key.owner).check(adding: create.memoryMiB, vcpus: create.vcpus,
                                                 against: config.quotas.quota(for: caller.uid), uid: caller.uid)
            }
            r.vms[key] = vm
        }
        createdCounter.increment()
        return vm
    }

    // MARK: - Connection lifetime

    private let connectionVMs = Mutex<[ConnectionID: [VMKey]]>([:])

    /// Ties `vm` to its creating connection. If that connection has already closed (it
    /// can while the creation runs), the VM goes as soon as the creation is over.
    private func bind(_ vm: ManagedVM, to connection: ConnectionToken) {
        connectionVMs.withLock { $0[connection.id, default: []].append(vm.key) }
        // The token is marked closed before connectionClosed() takes the list: either
        // that call sees this binding, or this check sees the mark.
        if connection.isClosed { Task { await self.destroy(vm) } }
    }

    /// Whether `connection` holds `connection`-lifetime VMs (it must not be timed out).
    public func holdsVMs(_ connection: ConnectionToken) -> Bool {
        connectionVMs.withLock { !($0[connection.id] ?? []).isEmpty }
    }

    /// The API connection closed: its `connection`-lifetime VMs go with it.
    public func connectionClosed(_ connection: ConnectionToken) async {
        connection.markClosed()
        let keys = connectionVMs.withLock { $0.removeValue(forKey: connection.id) } ?? []
        for key in keys {
            guard let vm = registry.withLock({ $0.vms[key] }) else { continue }
            logger.info("connection closed: destroying", metadata: ["vm": "\(key)"])
            await destroy(vm)
        }
    }

    // MARK: - Destroy

    /// `DELETE /v1/vms/{name}`: kills the worker, frees memory and files, forgets the VM.
    public func destroy(_ name: String, owner: OwnerSelector?, caller: Caller) async throws(APIError) {
        let vm = try lookup(name, owner: owner, caller: caller)
        if vm.key.owner == .system && !caller.isRoot { throw APIError(.forbidden, "system VMs can only be changed by root") }
        await destroy(vm)
    }

    func destroy(_ vm: ManagedVM) async {
        await vm.operations.lock()
        defer { vm.operations.unlock() }
        await destroyLocked(vm)
    }

    /// `destroy` for a caller that holds `vm.operations`.
    private func destroyLocked(_ vm: ManagedVM) async {
        await vm.killWorkerAndWait()
        guard remove(vm) else { return }
        if vm.lifetime == .persistent { store.delete(owner: vm.key.owner, name: vm.key.name) }
        destroyedCounter.increment()
        logger.info("destroyed VM", metadata: ["vm": "\(vm.key)"])
    }

    /// Forgets `vm` and frees what it holds; false if it was already gone.
    @discardableResult
    private func remove(_ vm: ManagedVM) -> Bool {
        let removed = registry.withLock { r -> Bool in
            guard r.vms[vm.key] === vm else { return false }
            r.vms[vm.key] = nil
            return true
        }
        guard removed else { return false }
        // The watch goes before release() closes the pidfd.
        if let token = vm.state.withLock({ $0.creatorWatch }) { watcher.unwatch(token) }
        connectionVMs.withLock { map in
            for (c, keys) in map { map[c] = keys.filter { $0 != vm.key } }
        }
        vm.release()
        return true
    }

    // MARK: - Actions

    /// `POST /v1/vms/{name}/actions/{action}`; returns the VM's state afterwards.
    public func perform(_ action: VMAction, on name: String, owner: OwnerSelector?, caller: Caller) async throws(APIError) -> VMInfo {
        let vm = try lookup(name, owner: owner, caller: caller)
        if vm.key.owner == .system && !caller.isRoot { throw APIError(.forbidden, "system VMs can only be changed by root") }
        await vm.operations.lock()
        defer { vm.operations.unlock() }
        guard !vm.isDestroying else { throw APIError(.notFound, "no VM named '\(name)'") }
        let phase = vm.phase
        func refuse() -> APIError {
            APIError(.invalidState, "cannot \(action.rawValue) \(name): it is \(phase.rawValue)")
        }
        let message: DaemonMessage
        switch (action, phase) {
        case (.start, .created), (.start, .stopped): message = .start
        case (.start, .crashed), (.reset, .crashed):
            try await spawnWorker(for: vm)
            message = .start
        case (.pause, .running): message = .pause
        case (.resume, .paused): message = .resume
        case (.reset, .running), (.reset, .paused), (.reset, .created), (.reset, .stopped): message = .reset
        case (.poweroff, .running), (.poweroff, .paused): message = .powerOff
        case (.kill, .running), (.kill, .paused): message = .kill
        default: throw refuse()
        }
        let generation = vm.generation
        guard let worker = vm.state.withLock({ $0.worker }) else { throw refuse() }
        worker.send(message)
        if await vm.waitForChange(after: generation) == nil {
            throw APIError(.internalError, "the worker did not carry out \(action.rawValue) in time")
        }
        logger.info("action", metadata: ["vm": "\(vm.key)", "action": "\(action.rawValue)", "state": "\(vm.phase.rawValue)"])
        return vm.info()
    }

    // MARK: - Console and statistics

    /// The console output kept so far.
    public func consoleOutput(_ name: String, owner: OwnerSelector?, caller: Caller) throws(APIError) -> [UInt8] {
        try lookup(name, owner: owner, caller: caller).console.snapshot
    }

    /// Follows the console: `onData` gets the backlog, then new output, then nil when
    /// the VM is destroyed. Returns a function that stops following.
    public func followConsole(_ name: String, owner: OwnerSelector?, caller: Caller,
                              onData: @escaping @Sendable ([UInt8]?) -> Void) throws(APIError) -> @Sendable () -> Void {
        let vm = try lookup(name, owner: owner, caller: caller)
        guard let token = vm.console.follow(onData) else { throw APIError(.notFound, "no VM named '\(name)'") }
        return { [weak vm] in vm?.console.unfollow(token) }
    }

    /// Sends `bytes` to the guest's COM1.
    public func consoleInput(_ name: String, owner: OwnerSelector?, caller: Caller, bytes: [UInt8]) throws(APIError) {
        let vm = try lookup(name, owner: owner, caller: caller)
        if vm.key.owner == .system && !caller.isRoot { throw APIError(.forbidden, "system VMs can only be changed by root") }
        guard let worker = vm.state.withLock({ $0.phase == .creating ? nil : $0.worker }) else {
            throw APIError(.invalidState, "\(name) has no running worker (state \(vm.phase.rawValue))")
        }
        worker.send(.consoleInput(bytes))
    }

    /// KVM's statistics and the VMM's counters, from the worker.
    public func statistics(_ name: String, owner: OwnerSelector?, caller: Caller) async throws(APIError) -> StatsInfo {
        let vm = try lookup(name, owner: owner, caller: caller)
        let lines: [StatisticLine]
        do { lines = try await vm.statistics() } catch let e as APIError { throw e } catch { throw APIError(.internalError, "\(error)") }
        var scopes: [String: [String: [String: UInt64]]] = [:]
        for l in lines { scopes[l.scope, default: [:]][l.source, default: [:]][l.name] = l.value }
        return StatsInfo(name: name, scopes: scopes)
    }

    /// Test hook: asks the worker to make a system call its sandbox forbids (it should
    /// die of SIGSYS). 404 unless the daemon runs with test hooks.
    public func testForbiddenSyscall(_ name: String, owner: OwnerSelector?, caller: Caller) throws(APIError) {
        guard config.testHooks else { throw APIError(.noRoute, "no such endpoint (test hooks are off)") }
        let vm = try lookup(name, owner: owner, caller: caller)
        guard let worker = vm.state.withLock({ $0.worker }) else { throw APIError(.invalidState, "\(name) has no worker") }
        worker.send(.attemptForbiddenCall)
    }

    public func capabilities() -> CapabilitiesInfo {
        CapabilitiesInfo(kvmAPIVersion: (try? kvm.apiVersion()) ?? 0,
                         kvm: kvm.capabilities().map { .init(name: $0.0.name, value: $0.1) },
                         maxVCPUs: maxVCPUs, maxMemoryMiB: CreateVMRequest.maxMemoryMiB)
    }

    // MARK: - Daemon start and stop

    /// Re-creates the persistent VMs recorded in the state directory and the system VMs
    /// of the configuration. Failures are logged, not fatal: one bad record must not
    /// keep the daemon (and every other VM) down.
    public func restore() async {
        startStateChecks()
        for record in store.load(logger: logger) {
            do {
                _ = try await create(record.request, owner: .user(record.opener.uid), lifetime: .persistent,
                                     opener: record.opener, connection: nil, persist: false, createdAt: record.createdAt)
                logger.info("restored persistent VM", metadata: ["vm": "\(record.request.name)", "uid": "\(record.opener.uid)"])
            } catch {
                logger.error("cannot restore persistent VM", metadata: ["vm": "\(record.request.name)", "error": "\(error)"])
                // Shown as failed, with the reason, so that its owner can see it and
                // destroy it (with its record), rather than a 404 that comes back later.
                let key = VMKey(owner: .user(record.opener.uid), name: record.request.name)
                let vm = ManagedVM.unrestored(key: key, request: record.request, opener: record.opener,
                                              createdAt: record.createdAt, why: error.message)
                registry.withLock { r in if r.vms[key] == nil, r.reserved[key] == nil { r.vms[key] = vm } }
            }
        }
        for request in config.systemVMs {
            do {
                try request.validate()
                try Self.checkTemplate(request.cpuTemplate)
                try checkVCPUs(request.vcpus)
                _ = try await create(request, owner: .system, lifetime: .system, opener: .daemon,
                                     connection: nil, persist: false)
                logger.info("started system VM", metadata: ["vm": "\(request.name)"])
            } catch {
                logger.error("cannot start system VM", metadata: ["vm": "\(request.name)", "error": "\(error)"])
            }
        }
    }

    // MARK: - State directory

    /// How often the state directory is checked for having gone missing.
    static let stateCheckInterval = TimeAmount.seconds(5)
    private let stateCheck = Mutex<RepeatedTask?>(nil)

    /// Recreates the state directory if it was deleted under the running daemon, and
    /// writes again the records of every persistent VM it holds (they went with it):
    /// otherwise those VMs would silently not come back at the next start. Runs before
    /// each record is written and every `stateCheckInterval`.
    func checkStateDirectory() throws(APIError) {
        guard try store.ensureDirectories() else { return }
        let persistent = registry.withLock { $0.vms.values.filter { $0.lifetime == .persistent } }
        logger.error("the state directory was deleted under vmmd: recreated it, writing the records of its persistent VMs again",
                     metadata: ["directory": "\(store.directory)", "vms": "\(persistent.count)"])
        for vm in persistent where !vm.isDestroying {
            try store.save(StateStore.Record(request: vm.request, opener: vm.opener, createdAt: vm.createdAt))
        }
    }

    private func startStateChecks() {
        let task = group.next().scheduleRepeatedTask(initialDelay: Self.stateCheckInterval, delay: Self.stateCheckInterval) { [weak self] _ in
            guard let self else { return }
            do { try self.checkStateDirectory() } catch {
                self.logger.critical("persistent VMs cannot be recorded", metadata: ["error": "\(error)"])
            }
        }
        stateCheck.withLock { $0 = task }
    }

    /// Stops every worker. Persistent records stay, so those VMs come back next start.
    public func shutdown() async {
        stateCheck.withLock { t -> RepeatedTask? in defer { t = nil }; return t }?.cancel()
        let vms = registry.withLock { r -> [ManagedVM] in defer { r.vms = [:] }; return Array(r.vms.values) }
        for vm in vms {
            await vm.operations.lock()
            await vm.killWorkerAndWait()
            vm.release()
            vm.operations.unlock()
        }
        watcher.shutdown()
        spawner.shutdown()
    }
}

/// The worker a spawn produced, for callbacks created before it existed.
final class SpawnedWorker: Sendable {
    let worker = Mutex<WorkerProcess?>(nil)
}

extension VMService {
    /// One virtio device counter of one VM, for /metrics.
    public struct DeviceCounter: Sendable, Hashable {
        public let vm: String
        public let owner: String
        public let device: String
        public let counter: String
        public let value: UInt64
    }

    /// The virtio device counters of every VM whose worker answers (asked all at once;
    /// a worker that does not answer within its statistics timeout is left out).
    public func deviceCounters() async -> [DeviceCounter] {
        let vms = registry.withLock { Array($0.vms.values) }.filter { vm in
            vm.state.withLock { $0.worker != nil }
                && (!vm.request.disks.isEmpty || vm.request.rng || !vm.request.net.isEmpty || vm.request.vsock != nil)
        }
        return await withTaskGroup(of: [DeviceCounter].self) { group in
            for vm in vms {
                group.addTask {
                    guard let lines = try? await vm.statistics() else { return [] }
                    let owner = vm.key.owner.uid.map(String.init) ?? "system"
                    return lines.filter { $0.source == "virtio" }.map {
                        DeviceCounter(vm: vm.key.name, owner: owner, device: $0.scope, counter: $0.name, value: $0.value)
                    }
                }
            }
            var all: [DeviceCounter] = []
            for await part in group { all += part }
            return all
        }
    }
}
