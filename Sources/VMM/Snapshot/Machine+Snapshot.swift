import Devices
import GuestMemory
import KVM
import Snapshot
#if canImport(Glibc)
import Glibc
#endif

/// What `Machine.snapshot` writes.
public struct SnapshotOptions: Sendable {
    public enum Kind: Sendable, Equatable {
        /// Every page that holds data.
        case full
        /// Only the pages that changed since the machine's last snapshot (or the
        /// snapshot it was restored from): needs `MachineConfig.trackDirtyPages` (on for
        /// every machine restored copy-on-write).
        case diff
    }

    public var kind: Kind = .full
    /// For a diff: where its parent is, as the diff records it — relative to the new
    /// snapshot's directory, or absolute. `relativePath(from:to:)` computes it.
    public var parentPath = ""
    /// fdatasync every file before the snapshot counts as written.
    public var sync = true
    /// (bytes of memory looked at, bytes to look at) while the memory file is written.
    public var progress: (@Sendable (UInt64, UInt64) -> Void)?

    public init(kind: Kind = .full, parentPath: String = "") {
        self.kind = kind
        self.parentPath = parentPath
    }
}

/// What a snapshot holds, once written.
public struct SnapshotSummary: Sendable {
    public var id: SnapshotID
    public var parent: SnapshotID?
    public var isDiff: Bool { parent != nil }
    /// Bytes of guest memory written (data pages; the rest of the file is holes).
    public var memoryBytesWritten: UInt64
    public var memoryFileSize: UInt64
    public var stateFileSize: Int
    /// The state file's sections, in order.
    public var sections: [String]
}

/// The open files of a snapshot being written: the state file (under its partial name
/// until the writer renames it), the memory file and the manifest.
public struct SnapshotFileSet: Sendable {
    public var state: Int32
    public var memory: Int32
    public var manifest: Int32
    public init(state: Int32, memory: Int32, manifest: Int32) { self.state = state; self.memory = memory; self.manifest = manifest }
}

extension Machine {
    /// The swift-vmm version snapshots record.
    public static let version = "0.1.0"

    /// Saves this paused machine into `directory` (libvmmapi's snapshot request): the
    /// state file, the memory file and the manifest. The directory is created, or must
    /// be empty; the state file is written under a partial name and renamed last, so a
    /// directory with a `state.bin` holds a complete snapshot.
    public func snapshot(to directory: String, options: SnapshotOptions = SnapshotOptions()) throws -> SnapshotSummary {
        let files = try SnapshotDirectory.create(directory)
        defer { files.close() }
        let summary = try snapshot(into: files.set, options: options)
        try SnapshotDirectory.commit(directory)
        return summary
    }

    /// Saves this paused machine into open files (a daemon opened them as its caller).
    /// The vCPUs must be paused (`pause()`), or never started.
    public func snapshot(into files: SnapshotFileSet, options: SnapshotOptions = SnapshotOptions()) throws -> SnapshotSummary {
        let states = vcpus.map(\.state)
        guard vcpus.allSatisfy(\.isParked) else {
            throw SnapshotError.invalidState("a snapshot needs a paused machine; its vCPUs are \(Set(states.map(\.rawValue)).sorted().joined(separator: ", "))")
        }
        // A debugger's software breakpoints are 0xCC bytes in guest memory, and its
        // single-step and hardware points are state of the session, not of the guest.
        guard !debugger.isAttached else {
            throw SnapshotError.invalidState("a debugger is attached (its breakpoints are in guest memory); detach it first")
        }
        let parent = snapshots.state.withLock { $0.baseline }
        if options.kind == .diff {
            guard config.trackDirtyPages else {
                throw SnapshotError.invalidState("a diff snapshot needs dirty-page tracking, which this machine was built without")
            }
            guard parent != nil else { throw SnapshotError.invalidState("a diff snapshot needs a snapshot before it; take a full one first") }
        }
        // Device work in flight finishes now, and device threads stay off the rings until
        // the snapshot is written: with the vCPUs paused nothing new comes in from the
        // guest, and what the devices wrote is in memory before it is read.
        for device in virtioDevices { device.transport.quiesce() }
        defer { for device in virtioDevices { device.transport.thaw() } }

        var sections = try captureStateSections()
        let id = SnapshotID.random()
        let dirty = try collectDirtyPages()
        let candidates: [[Range<UInt64>]]
        let pages: PageRanges?
        let layout = SnapshotMemory.layout(of: memory)
        if options.kind == .diff {
            candidates = memory.segments.indices.map { PageBitmap.byteRuns(dirty?[$0] ?? [], pages: Int(memory.segments[$0].size / GuestMemory.pageSize)) }
            pages = PageRanges(merging: zip(layout, candidates).flatMap { place, runs in
                runs.map { PageRanges.Run(first: (place.fileOffset + $0.lowerBound) / GuestMemory.pageSize,
                                          count: ($0.upperBound - $0.lowerBound) / GuestMemory.pageSize) }
            })
        } else {
            candidates = try memory.segments.indices.map { try dataCandidates(segment: $0) }
            pages = nil
        }
        let written = try SnapshotMemory.write(memory, candidates: candidates, to: files.memory, progress: options.progress)
        var description = MemoryDescription(segments: layout)
        if options.kind == .diff, let parent {
            description.parent = MemoryDescription.Parent(id: parent, path: options.parentPath)
            description.pages = pages
        }
        let machineDescription = self.description(generation: snapshots.state.withLock { $0.generation })
        sections.insert(machineDescription.section, at: 0)
        sections.insert(description.section, at: 1)
        if options.kind == .full { sections += bootSections }   // a diff's come from the snapshots under it
        let stateFile = StateFile(id: id, sections: sections)
        let bytes = try stateFile.encoded()
        try SnapshotFileIO.writeAll(files.state, bytes, what: SnapshotFiles.state)
        let manifest = SnapshotManifest(id: id, machine: machineDescription, memory: description,
                                        memoryAllocated: written, stateFileSize: bytes.count,
                                        devices: sections.map(\.name).filter { $0.hasPrefix("port.") || $0.hasPrefix("mmio.") })
        try SnapshotFileIO.writeAll(files.manifest, Array(manifest.json.utf8), what: SnapshotFiles.manifest)
        if options.sync {
            for (fd, name) in [(files.memory, SnapshotFiles.memory), (files.state, SnapshotFiles.state), (files.manifest, SnapshotFiles.manifest)] {
                try SnapshotFileIO.sync(fd, what: name)
            }
        }
        snapshots.state.withLock { $0.baseline = id }
        return SnapshotSummary(id: id, parent: description.parent?.id, memoryBytesWritten: written,
                               memoryFileSize: description.fileSize, stateFileSize: bytes.count, sections: sections.map(\.name))
    }

    /// Every component with state, each under its section name: the interrupt
    /// controllers, the PIT, the clock, the hypercall table and every device on the
    /// buses. A device that is not `SnapshotStateful` ends the snapshot, naming it.
    func stateComponents(clock: KVMClock) throws(SnapshotError) -> [(name: String, component: any SnapshotStateful)] {
        var list: [(name: String, component: any SnapshotStateful)] = []
        // KVM's PICs, IOAPIC and PIT; a split irqchip's IOAPIC is a device on the MMIO bus.
        if config.inKernelIRQChip && config.irqchip == .kernel {
            list.append(("irqchip", KVMInterruptControllers(vm: vm)))
            list.append(("pit", KVMPIT(vm: vm)))
        }
        list.append(("clock", clock))
        if let hypercalls { list.append(("hypercalls", HypercallState(registry: hypercalls))) }
        if let emulationAssist { list.append((EmulationAssist.sectionName, emulationAssist)) }
        for (base, _, device) in portIO.registeredDevices {
            guard let s = device.snapshotState else {
                throw .unsupportedDevice("the \(type(of: device)) at port 0x\(String(base, radix: 16))")
            }
            list.append(("port.\(s.snapshotKind)@\(StateFile.hex(UInt64(base)))", s))
        }
        for (base, _, device) in mmio.registeredDevices {
            guard let s = device.snapshotState else {
                throw .unsupportedDevice("the \(type(of: device)) at 0x\(String(base, radix: 16))")
            }
            list.append(("mmio.\(s.snapshotKind)@\(StateFile.hex(base))", s))
        }
        return list
    }

    /// The sections of every vCPU and component.
    private func captureStateSections() throws -> [SnapshotSection] {
        let (indices, xsave) = snapshots.state.withLock { ($0.msrIndices, $0.xsave) }
        let irqchip = config.inKernelIRQChip
        var sections = try vcpus.enumerated().map { i, runner in
            // Read on the vCPU's own thread (VCPURunner.onOwnThread says why).
            let state = try runner.onOwnThread { vcpu in
                try VCPUState.capture(vcpu, hasIRQChip: irqchip, msrIndices: indices, xsave: xsave)
            }
            return state.section(index: i)
        }
        for (name, component) in try stateComponents(clock: KVMClock(vm: vm)) {
            sections.append(try component.snapshotSection(named: name))
        }
        return sections
    }

    /// The kernel and initrd, so that a restored guest can reboot (and a snapshot moves
    /// to a host without the image).
    var bootSections: [SnapshotSection] {
        var list = [SnapshotSection(name: "boot.kernel", version: 1, payload: config.kernel)]
        if let initrd = config.initrd { list.append(SnapshotSection(name: "boot.initrd", version: 1, payload: initrd)) }
        return list
    }

    /// The pages of segment `index` that may hold data, for a full snapshot: what the
    /// memfd has allocated; for memory mapped from a snapshot, what that file holds plus
    /// every page that is no longer the file's.
    private func dataCandidates(segment index: Int) throws(SnapshotError) -> [Range<UInt64>] {
        let segment = memory.segments[index]
        switch segment.backing {
        case .sharedMemfd:
            return try SnapshotFileIO.dataExtents(segment.memfd, from: 0, to: segment.size, what: segment.name)
        case .privateFile(let offset):
            let file = try SnapshotFileIO.dataExtents(segment.memfd, from: offset, to: offset + segment.size, what: segment.name)
                .map { ($0.lowerBound - offset) ..< ($0.upperBound - offset) }
            let pages = Int(segment.size / GuestMemory.pageSize)
            guard let own = snapshots.state.withLock({ $0.sinceRestore })?[index] else {
                throw .invalidState("\(segment.name) is mapped from a snapshot but its changed pages were not tracked")
            }
            var bitmap = own
            PageBitmap.marking(file, pages: pages, into: &bitmap)
            return PageBitmap.byteRuns(bitmap, pages: pages)
        }
    }

    /// The pages written since the last call (KVM's dirty log of each memory slot, plus
    /// the VMM's own writes), per segment; nil without dirty-page tracking. They are also
    /// added to the pages that are no longer the snapshot file's.
    func collectDirtyPages() throws(SnapshotError) -> [[UInt64]]? {
        guard config.trackDirtyPages else { return nil }
        var bitmaps = memory.writeLog.take()
        for (slot, segment) in memory.segments.enumerated() {
            do {
                let log = try vm.dirtyLog(slot: UInt32(slot), pages: Int(segment.size / GuestMemory.pageSize))
                if slot < bitmaps.count { PageBitmap.or(&bitmaps[slot], log) } else { bitmaps.append(log) }
            } catch {
                throw .kvm(part: "the dirty log of \(segment.name)", "\(error)")
            }
        }
        snapshots.state.withLock { s in
            guard var since = s.sinceRestore else { return }
            for i in since.indices where i < bitmaps.count { PageBitmap.or(&since[i], bitmaps[i]) }
            s.sinceRestore = since
        }
        return bitmaps
    }
}
