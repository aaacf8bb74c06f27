import CSys
import Snapshot
import VMMAPI
import WorkerProtocol
#if canImport(Glibc)
import Glibc
#endif

extension WorkerSetup {
    /// The setup's snapshot parts: dirty-page tracking, and a restore from the `layers`
    /// snapshots whose files lead the setup's images.
    func withSnapshot(_ request: CreateVMRequest, layers: Int) -> WorkerSetup {
        var setup = self
        setup.trackDirtyPages = request.trackDirtyPages
        if let restore = request.restoreFrom {
            setup.restore = Restore(layers: UInt32(layers), copy: restore.memory == .copy, advanceClock: restore.clock == .advance)
            setup.hasInitrd = false
        }
        return setup
    }
}

extension VMService {
    /// Opens the snapshot a restore names, and the snapshots below it, with `opener`'s
    /// permissions (as images are opened). Returns the request with the machine's shape
    /// filled in from the snapshot — so that the quota counts what will run — and the
    /// chain's files, a state file and a memory file per snapshot, base first.
    func openSnapshot(for request: CreateVMRequest, as opener: Caller) async throws(APIError) -> (CreateVMRequest, [Int32]) {
        guard let restore = request.restoreFrom else { return (request, []) }
        let path = restore.path
        let opened = await CallerFiles.perform(as: opener, field: "restore_from.path", discard: { _ in }) { () -> Result<SnapshotChain, APIError> in
            do {
                return .success(try SnapshotChain.open(directory: path, keepStateFiles: true) { csys_open_image($0) })
            } catch {
                return .failure(APIError(.imageRejected, "restore_from \(path): \(error)", field: "restore_from.path"))
            }
        }
        let chain = try opened.get()
        let m = chain.machine
        var filled = request
        filled.memoryMiB = m.memoryMiB
        filled.vcpus = m.cpus
        filled.cmdline = m.commandLine
        filled.cpuTemplate = m.cpuTemplate
        filled.debugExit = m.debugExit
        filled.hypercalls = m.hypercalls
        filled.noReboot = !m.rebootOnReset
        filled.tripleFault = m.rebootOnTripleFault ? .reboot : .stop
        filled.disks = m.disks.map { DiskRequest(path: $0.path, readOnly: $0.readOnly, serial: $0.serial, direct: $0.direct) }
        filled.rng = m.rng
        filled.trackDirtyPages = m.trackDirtyPages || restore.memory == .copyOnWrite
        filled.kernel = ""
        // The host ends of network and vsock devices: the request's (a clone's own), or
        // the snapshot's.
        if request.net.isEmpty {
            filled.net = m.networks.map { n in
                NetRequest(tap: n.tap, mac: n.mac.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":"))
            }
        } else if request.net.count != m.networks.count {
            throw APIError(.invalidField, "net: the snapshot's VM has \(m.networks.count) network devices", field: "net")
        }
        if request.vsock == nil {
            filled.vsock = m.vsock.map { VsockRequest(cid: $0.cid, socket: $0.path) }
        } else if m.vsock == nil {
            throw APIError(.invalidField, "vsock: the snapshot's VM has no vsock device", field: "vsock")
        }
        try filled.validate()
        try Self.checkTemplate(filled.cpuTemplate)
        try checkVCPUs(filled.vcpus)
        var fds: [Int32] = []
        for layer in chain.layers {
            let state = dup(layer.stateFD), memory = dup(layer.memoryFD)
            guard state >= 0, memory >= 0 else {
                for fd in fds + [state, memory] where fd >= 0 { close(fd) }
                throw APIError(.internalError, "dup: \(String(cString: strerror(errno)))")
            }
            fds += [state, memory]
        }
        return (filled, fds)
    }

    /// `PUT /v1/vms/{name}/snapshot`: pauses the VM, has its worker write a snapshot
    /// into a directory created with the caller's permissions, and resumes it (unless
    /// asked to leave it paused). A failed snapshot leaves no files behind.
    public func snapshot(_ request: SnapshotRequest, of name: String, owner: OwnerSelector?, caller: Caller) async throws(APIError) -> SnapshotInfo {
        try request.validate()
        let vm = try lookup(name, owner: owner, caller: caller)
        if vm.key.owner == .system && !caller.isRoot { throw APIError(.forbidden, "system VMs can only be changed by root") }
        await vm.operations.lock()
        defer { vm.operations.unlock() }
        guard !vm.isDestroying else { throw APIError(.notFound, "no VM named '\(name)'") }
        let phase = vm.phase
        guard phase == .running || phase == .paused, let worker = vm.state.withLock({ $0.worker }) else {
            throw APIError(.invalidState, "cannot snapshot \(name): it is \(phase.rawValue); a snapshot is of a running or paused VM")
        }
        var parentPath = ""
        if request.diff {
            guard let last = vm.state.withLock({ $0.lastSnapshot }) else {
                throw APIError(.invalidState, "\(name) has no snapshot before this one: take a full one first", field: "diff")
            }
            guard vm.request.trackDirtyPages else {
                throw APIError(.invalidState, "\(name) does not track dirty pages (create it with track_dirty_pages, or restore it copy-on-write)", field: "diff")
            }
            parentPath = relativePath(from: request.path, to: last)
        }
        let files = try await SnapshotFilesAsCaller.create(request.path, as: caller)
        let started = realtime()
        let report: Result<SnapshotReport, APIError> = await withCheckedContinuation { c in
            let busy = vm.state.withLock { s -> Bool in
                guard s.snapshotWaiter == nil else { return true }
                s.snapshotWaiter = c
                return false
            }
            guard !busy else { return c.resume(returning: .failure(APIError(.invalidState, "\(name) is already writing a snapshot"))) }
            do {
                try worker.sendDescriptors(files.descriptors)
                worker.send(.snapshot(SnapshotCommand(diff: request.diff, parentPath: parentPath, stayPaused: request.paused)))
            } catch {
                vm.state.withLock { $0.snapshotWaiter = nil }
                c.resume(returning: .failure(APIError(.internalError, "cannot hand the snapshot's files to the worker: \(error)")))
            }
        }
        files.closeDescriptors()
        switch report {
        case .failure(let error):
            await files.remove(as: caller)
            throw error
        case .success(let r):
            try await files.commit(as: caller)
            vm.state.withLock { $0.lastSnapshot = request.path }
            // The worker's state report came before its answer: the phase is current.
            let parent = r.parent.flatMap { SnapshotID(bytes: $0) }.map { SnapshotInfo.Parent(id: "\($0)", path: parentPath) }
            logger.info("snapshot", metadata: ["vm": "\(vm.key)", "path": "\(request.path)", "kind": "\(parent == nil ? "full" : "diff")"])
            return SnapshotInfo(id: SnapshotID(bytes: r.id).map { "\($0)" } ?? "", path: request.path,
                                kind: parent == nil ? "full" : "diff", parent: parent, memoryBytes: r.memoryBytes,
                                memoryFileBytes: r.memoryFileBytes, stateBytes: r.stateBytes,
                                durationMs: Double(realtime() - started) / 1e6, vm: vm.info())
        }
    }

    private func realtime() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
    }
}

/// A snapshot directory created and filled with its caller's permissions: the
/// directory (new, or empty), and in it the state file under its partial name, the
/// memory file and the manifest, all owned by the caller.
final class SnapshotFilesAsCaller: Sendable {
    let path: String
    let directory: Int32
    let descriptors: [Int32]
    static let names = [SnapshotFiles.partialState, SnapshotFiles.memory, SnapshotFiles.manifest]

    private init(path: String, directory: Int32, descriptors: [Int32]) {
        self.path = path; self.directory = directory; self.descriptors = descriptors
    }

    static func create(_ path: String, as caller: Caller) async throws(APIError) -> SnapshotFilesAsCaller {
        try await CallerFiles.perform(as: caller, field: "path", discard: { $0.closeDescriptors(); close($0.directory) }) {
            let dir = csys_snapshot_directory(path)
            guard dir >= 0 else {
                let why = -dir == ENOTEMPTY ? "is not empty (a snapshot goes into a new or empty directory)"
                    : -dir == EPERM ? "is not somewhere a snapshot may go" : String(cString: strerror(-dir))
                return .failure(APIError(-dir == ENOTEMPTY ? .invalidState : .imageRejected, "path \(path) \(why)", field: "path"))
            }
            var fds: [Int32] = []
            for name in names {
                let fd = csys_create_in(dir, name)
                guard fd >= 0 else {
                    for f in fds { close(f) }
                    for n in names.prefix(fds.count) { unlinkat(dir, n, 0) }
                    close(dir)
                    return .failure(APIError(.imageRejected, "path \(path)/\(name): \(String(cString: strerror(-fd)))", field: "path"))
                }
                fds.append(fd)
            }
            return .success(SnapshotFilesAsCaller(path: path, directory: dir, descriptors: fds))
        }.get()
    }

    func closeDescriptors() { for fd in descriptors { close(fd) } }

    /// Renames the state file into place (the snapshot is complete) and makes it durable.
    func commit(as caller: Caller) async throws(APIError) {
        let dir = directory
        _ = try await CallerFiles.perform(as: caller, field: "path", discard: { _ in }) { () -> Result<Bool, APIError> in
            defer { close(dir) }
            guard renameat(dir, SnapshotFiles.partialState, dir, SnapshotFiles.state) == 0 else {
                return .failure(APIError(.internalError, "renaming the state file into place: \(String(cString: strerror(errno)))"))
            }
            _ = fsync(dir)
            return .success(true)
        }.get()
    }

    /// Removes what a failed snapshot wrote.
    func remove(as caller: Caller) async {
        let dir = directory, path = self.path
        _ = await CallerFiles.perform(as: caller, field: "path", discard: { _ in }) { () -> Result<Bool, APIError> in
            for name in Self.names { unlinkat(dir, name, 0) }
            close(dir)
            rmdir(path)
            return .success(true)
        }
    }
}
