import FoundationEssentials
import Logging
import VMMAPI
#if canImport(Glibc)
import Glibc
#endif

/// Persistent VM records: one JSON file per VM under `directory/vms/<uid>/<name>.json`,
/// written atomically (temporary file, fsync, rename, fsync of the directory) so that a
/// crash at any point leaves either the old record or the new one, never half of one.
struct StateStore: Sendable {
    struct Record: Codable, Sendable {
        var request: CreateVMRequest
        /// The owner's identity, to re-open the images with the owner's permissions.
        var opener: Caller
        var createdAt: String

        enum CodingKeys: String, CodingKey { case request, opener, createdAt = "created_at" }
    }

    let directory: String
    var vmsDirectory: String { directory + "/vms" }

    init(directory: String) throws {
        self.directory = directory
        _ = try ensureDirectories()
    }

    /// Creates the state directory and `vms` under it when they are missing (someone
    /// deleted them under a running daemon); true when `vms` had to be created.
    func ensureDirectories() throws(APIError) -> Bool {
        var created = false
        for dir in [directory, vmsDirectory] {
            if mkdir(dir, 0o700) == 0 {
                created = created || dir == vmsDirectory
            } else if errno != EEXIST {
                throw APIError(.internalError, "the state directory \(dir) cannot be created: \(String(cString: strerror(errno)))")
            }
        }
        return created
    }

    private func ownerDirectory(_ owner: Owner) -> String {
        vmsDirectory + "/" + (owner.uid.map(String.init) ?? "system")
    }

    func save(_ record: Record) throws(APIError) {
        let dir = ownerDirectory(.user(record.opener.uid))
        guard mkdir(dir, 0o700) == 0 || errno == EEXIST else {
            throw APIError(.internalError, "cannot create \(dir): \(String(cString: strerror(errno)))")
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        guard let data = try? encoder.encode(record) else { throw APIError(.internalError, "cannot encode the VM record") }
        do {
            try AtomicFile.write([UInt8](data), to: dir + "/" + record.request.name + ".json", directory: dir)
        } catch {
            throw APIError(.internalError, "cannot record the VM: \(error)")
        }
    }

    func delete(owner: Owner, name: String) {
        let dir = ownerDirectory(owner)
        unlink(dir + "/" + name + ".json")
        AtomicFile.syncDirectory(dir)
    }

    /// Every readable record. A record that does not parse is logged and skipped.
    func load(logger: Logger) -> [Record] {
        let fm = FileManager.default
        var records: [Record] = []
        for owner in ((try? fm.contentsOfDirectory(atPath: vmsDirectory)) ?? []).sorted() {
            let dir = vmsDirectory + "/" + owner
            for file in ((try? fm.contentsOfDirectory(atPath: dir)) ?? []).sorted() where file.hasSuffix(".json") {
                let path = dir + "/" + file
                do {
                    let data = try Data(contentsOf: URL(fileURLWithPath: path))
                    let record = try decodeRequest(Record.self, from: [UInt8](data))
                    guard String(record.opener.uid) == owner, record.request.name + ".json" == file else {
                        throw APIError(.invalidField, "the record does not match its place")
                    }
                    try record.request.validate()
                    records.append(record)
                } catch {
                    logger.error("skipping unreadable VM record", metadata: ["path": "\(path)", "error": "\(error)"])
                }
            }
        }
        return records
    }
}

/// Crash-safe file replacement.
enum AtomicFile {
    static func write(_ bytes: [UInt8], to path: String, directory: String) throws {
        let temporary = path + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ServiceError.system("open(\(temporary))", errno) }
        var offset = 0
        while offset < bytes.count {
            let chunk = Array(bytes[offset...])
            let n = Glibc.write(fd, chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let e = errno
                close(fd); unlink(temporary)
                throw ServiceError.system("write(\(temporary))", e)
            }
            offset += n
        }
        guard fsync(fd) == 0 else {
            let e = errno
            close(fd); unlink(temporary)
            throw ServiceError.system("fsync(\(temporary))", e)
        }
        close(fd)
        guard rename(temporary, path) == 0 else {
            let e = errno
            unlink(temporary)
            throw ServiceError.system("rename(\(path))", e)
        }
        syncDirectory(directory)
    }

    /// Makes a rename or unlink in `directory` durable.
    static func syncDirectory(_ directory: String) {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        close(fd)
    }
}
