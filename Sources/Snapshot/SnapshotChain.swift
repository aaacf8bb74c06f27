#if canImport(Glibc)
import Glibc
#endif

/// One snapshot of a chain: its state file, parsed and checked, and its memory file,
/// open (the layer owns the descriptor).
public final class SnapshotLayer: @unchecked Sendable {
    // @unchecked: immutable after init; the descriptor is closed once, in deinit.
    public let state: StateFile
    public let memory: MemoryDescription
    public let memoryFD: Int32
    /// The state file, when the opener kept it open (to hand it on); -1 otherwise.
    public let stateFD: Int32
    /// Where it came from (a directory), for messages.
    public let label: String

    /// Takes ownership of `memoryFD` and `stateFD` (closed here on failure). Checks that the memory file
    /// is a regular file at least as long as the state file says: a mapping past its end
    /// would fault (SIGBUS) on the first touch.
    public init(state: StateFile, memoryFD: Int32, label: String, stateFD: Int32 = -1) throws(SnapshotError) {
        do throws(SnapshotError) {
            memory = try MemoryDescription(try state.require(MemoryDescription.sectionName))
            var st = stat()
            guard fstat(memoryFD, &st) == 0 else { throw SnapshotError.system(operation: "fstat(\(label)/\(SnapshotFiles.memory))", errno: errno) }
            guard (st.st_mode & S_IFMT) == S_IFREG else { throw SnapshotError.invalidState("\(label)/\(SnapshotFiles.memory) is not a regular file") }
            guard UInt64(st.st_size) >= memory.fileSize else {
                throw SnapshotError.truncated("\(label)/\(SnapshotFiles.memory) (\(st.st_size) of \(memory.fileSize) bytes)")
            }
        } catch {
            close(memoryFD)
            if stateFD >= 0 { close(stateFD) }
            throw error
        }
        self.state = state
        self.memoryFD = memoryFD
        self.stateFD = stateFD
        self.label = label
    }

    deinit {
        close(memoryFD)
        if stateFD >= 0 { close(stateFD) }
    }
}

/// A snapshot and the snapshots it was taken on top of, base first: restoring it gives
/// the base's memory with each diff's pages laid over it in order, and the top's state.
public struct SnapshotChain: Sendable {
    /// Longest chain followed (a loop of parents ends here too).
    public static let maxLength = 64

    /// Base (a full snapshot) first, the snapshot to restore last.
    public let layers: [SnapshotLayer]

    public var top: SnapshotLayer { layers[layers.count - 1] }

    /// The machine the top snapshot describes.
    public let machine: MachineDescription

    /// Sections a diff leaves to the snapshots under it: the boot images (the kernel and
    /// initrd a reboot reloads), which never change while a machine lives and would
    /// otherwise make every diff as large as the kernel.
    /// (An array: a `Set<String>` here cost every fresh restoring process ~0.3 ms to
    /// instantiate on first use, for two names.)
    public static let inheritedSections: [String] = ["boot.kernel", "boot.initrd"]

    /// The section `name` of the newest layer that has it, for the inherited sections;
    /// the top's own for any other.
    public func section(_ name: String) -> SnapshotSection? {
        guard Self.inheritedSections.contains(name) else { return top.state.section(name) }
        var index = layers.count
        while index > 0 {
            index -= 1
            if let section = layers[index].state.section(name) { return section }
        }
        return nil
    }

    /// Checks the links: the first layer is full, every other one a diff whose parent is
    /// the layer before it (by ID), all with the same memory layout.
    public init(layers: [SnapshotLayer]) throws(SnapshotError) {
        guard let base = layers.first, let top = layers.last else { throw .invalidState("an empty snapshot chain") }
        guard layers.count <= Self.maxLength else { throw .invalidState("a chain of \(layers.count) snapshots; at most \(Self.maxLength)") }
        guard !base.memory.isDiff else {
            throw .invalidState("\(base.label) is a diff snapshot, but its parent \(base.memory.parent?.path ?? "") was not given")
        }
        // Indexes, not zip(layers, layers.dropFirst()): the zip's generic types cost a fresh
        // restoring process ~0.1 ms to instantiate, also for a chain of one.
        for i in 1 ..< max(layers.count, 1) {
            let parent = layers[i - 1], child = layers[i]
            guard let link = child.memory.parent else {
                throw .invalidState("\(child.label) is a full snapshot, not a diff on top of \(parent.label)")
            }
            guard link.id == parent.state.id else {
                throw .mismatch("\(child.label) was taken on top of snapshot \(link.id), but \(parent.label) is snapshot \(parent.state.id)")
            }
            guard child.memory.segments == parent.memory.segments, child.memory.fileSize == parent.memory.fileSize else {
                throw .mismatch("\(child.label) and its parent \(parent.label) lay out guest memory differently")
            }
        }
        machine = try MachineDescription(try top.state.require(MachineDescription.sectionName))
        self.layers = layers
    }

    /// Opens the snapshot in `directory` and every parent it names (a relative parent
    /// path is taken from the child's directory). `open(path)` opens a file read-only and
    /// returns its descriptor or -errno: plain open(2) in a CLI, a caller's permissions in
    /// a daemon, which also keeps the state files open (`keepStateFiles`) to hand them on.
    public static func open(directory: String, keepStateFiles: Bool = false,
                            using open: (String) -> Int32) throws(SnapshotError) -> SnapshotChain {
        var layers: [SnapshotLayer] = []
        var dir = directory
        var seen: [SnapshotID] = []   // at most maxLength: no Set (see init(layers:))
        while true {
            guard layers.count < maxLength else { throw .invalidState("\(directory): a chain longer than \(maxLength) snapshots") }
            let statePath = dir + "/" + SnapshotFiles.state
            let stateFD = open(statePath)
            guard stateFD >= 0 else { throw .system(operation: "open(\(statePath))", errno: -stateFD) }
            let bytes: [UInt8]
            do throws(SnapshotError) { bytes = try SnapshotFileIO.readAll(stateFD, what: statePath) } catch {
                close(stateFD)
                throw error
            }
            let state: StateFile
            do throws(SnapshotError) { state = try StateFile.parse(bytes, what: statePath) } catch {
                close(stateFD)
                throw error
            }
            if !keepStateFiles { close(stateFD) }
            let kept = keepStateFiles ? stateFD : -1
            guard !seen.contains(state.id) else {
                if kept >= 0 { close(kept) }
                throw .invalidState("\(dir): the chain of parents loops")
            }
            seen.append(state.id)
            let memoryPath = dir + "/" + SnapshotFiles.memory
            let memoryFD = open(memoryPath)
            guard memoryFD >= 0 else {
                if kept >= 0 { close(kept) }
                throw .system(operation: "open(\(memoryPath))", errno: -memoryFD)
            }
            let layer = try SnapshotLayer(state: state, memoryFD: memoryFD, label: dir, stateFD: kept)
            layers.append(layer)
            guard let parent = layer.memory.parent else { break }
            dir = parent.path.hasPrefix("/") ? parent.path : dir + "/" + parent.path
        }
        return try SnapshotChain(layers: layers.reversed())
    }

    /// `open(2)` read-only and close-on-exec, as `SnapshotChain.open` wants it.
    public static func openReadOnly(_ path: String) -> Int32 {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        return fd >= 0 ? fd : -errno
    }

    /// Which layer defines each page, newest first: page ranges of each diff layer (top
    /// first), then the base for everything else.
    public var diffLayers: [(layer: SnapshotLayer, pages: PageRanges)] {
        layers.dropFirst().map { ($0, $0.memory.pages ?? PageRanges()) }
    }
}

/// The relative path from directory `from` to directory `to` (both absolute and
/// normalised by the caller), for a diff to name its parent so that the pair can move
/// together; `to` itself when either is not absolute.
public func relativePath(from: String, to: String) -> String {
    guard from.hasPrefix("/"), to.hasPrefix("/") else { return to }
    let a = from.split(separator: "/"), b = to.split(separator: "/")
    var common = 0
    while common < a.count, common < b.count, a[common] == b[common] { common += 1 }
    let up = Array(repeating: "..", count: a.count - common)
    let parts = up + b[common...].map(String.init)
    return parts.isEmpty ? "." : parts.joined(separator: "/")
}
