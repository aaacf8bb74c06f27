#if canImport(Glibc)
import Glibc
#endif
import KVM

/// `HostEmulation`'s answer, KVM_GET_SUPPORTED_CPUID's and (for vmmd) `GuestDebugSupport`'s
/// kept between processes, so that a short-lived VMM process (`vmmctl run`) or a daemon
/// start does not pay for them each time: on this project's hosts the probe is a second
/// VM creation and a 10 ms wait for a `vmcall` that never returns, the CPUID walk executes
/// CPUID once per leaf in the host kernel (~0.3 ms, a tenth of a small guest's whole run,
/// on this virtualised host), and the guest-debug probe is one more VM (~4 ms of CPU, a
/// fifth of a daemon's start: as the host's only VM it also has KVM flip static keys).
///
/// What the host's KVM does cannot change while the same kernel runs with the same KVM
/// modules loaded, so an entry names the boot (`/proc/sys/kernel/random/boot_id`), the
/// kernel release and the sysfs inode of each loaded KVM module (a reloaded module gets
/// a new one); an entry for anything else is ignored and replaced. A probe that did not
/// finish is never stored. The file must belong to the caller and be writable by nobody
/// else, in a directory only the caller can write.
///
/// The file: the key's lines, the emulation flags (`HostEmulation.flags`), then, when it
/// was stored, `debug` and `GuestDebugSupport.bits` in hex, then one line per supported
/// CPUID entry, its seven `CPUIDEntry.words` in hex.
public struct HostEmulationCache: Sendable {
    public let path: String
    /// What the entry must name to be believed (`hostKey()` for this host).
    public let key: String

    /// What an entry holds.
    public struct Entry: Equatable, Sendable {
        public var emulation: HostEmulation
        /// KVM_GET_SUPPORTED_CPUID's entries; empty when they were not stored.
        public var supportedCPUID: [CPUIDEntry]
        /// The guest-debug probe's answer; nil when it was not stored.
        public var guestDebug: GuestDebugSupport?

        public init(emulation: HostEmulation, supportedCPUID: [CPUIDEntry] = [], guestDebug: GuestDebugSupport? = nil) {
            self.emulation = emulation
            self.supportedCPUID = supportedCPUID
            self.guestDebug = guestDebug
        }
    }

    /// Larger than any real entry (KVM has ~80 CPUID entries, ~60 bytes each).
    static let maximumSize = 64 << 10

    public init(path: String, key: String) {
        self.path = path
        self.key = key
    }

    /// The caller's cache, with this host's key: `/run/swift-vmm/NAME` for root,
    /// `$XDG_RUNTIME_DIR/swift-vmm-NAME` for others; nil without either. NAME is
    /// `host-emulation` for `vmmctl run`; vmmd keeps its own (`vmmd-host-emulation`),
    /// whose probe waits longer before it calls a `vmcall` hung.
    public static func standard(name: String = "host-emulation") -> HostEmulationCache? {
        guard let key = hostKey() else { return nil }
        if getuid() == 0 {
            let dir = "/run/swift-vmm"
            if mkdir(dir, 0o700) != 0 && errno != EEXIST { return nil }
            guard privateDirectory(dir) else { return nil }
            return HostEmulationCache(path: dir + "/" + name, key: key)
        }
        guard let runtime = getenv("XDG_RUNTIME_DIR").map({ String(cString: $0) }), runtime.hasPrefix("/"),
              privateDirectory(runtime) else { return nil }
        return HostEmulationCache(path: runtime + "/swift-vmm-" + name, key: key)
    }

    /// The stored entry, if it is this host's, well formed, and the file is the caller's alone.
    public func load() -> Entry? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG, st.st_uid == getuid(),
              st.st_mode & 0o022 == 0, st.st_size < Self.maximumSize else { return nil }
        // Parsed as bytes: split into Strings, the ~80 lines cost 0.1 ms of `vmmctl run`.
        guard let bytes = Self.readBytes(fd) else { return nil }
        let head = Array(key.utf8) + [UInt8(ascii: "\n")]
        guard bytes.starts(with: head) else { return nil }
        // The flags line, the debug line if there is one, then one line per CPUID entry
        // (no newline after the last).
        var emulation: HostEmulation?
        var debug: GuestDebugSupport?
        var cpuid: [CPUIDEntry] = []
        var start = head.count
        let debugTag = Array("debug ".utf8)
        while start <= bytes.count {
            let end = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.count
            let line = bytes[start ..< end]
            if emulation == nil {
                guard let flags = HostEmulation(flags: String(decoding: line, as: UTF8.self)) else { return nil }
                emulation = flags
            } else if debug == nil, cpuid.isEmpty, line.starts(with: debugTag) {
                guard let words = Self.hexWords(line.dropFirst(debugTag.count)), words.count == 1,
                      words[0] < 1 << GuestDebugSupport.bitCount else { return nil }
                debug = GuestDebugSupport(bits: words[0])
            } else {
                guard let entry = Self.hexWords(line).flatMap(CPUIDEntry.init(words:)) else { return nil }
                cpuid.append(entry)
            }
            start = end + 1
        }
        guard let emulation else { return nil }
        return Entry(emulation: emulation, supportedCPUID: cpuid, guestDebug: debug)
    }

    /// Stores `entry` for this host (atomically: a new file renamed over the old); an
    /// answer with a probe error is not stored. Failures leave no entry behind.
    public func store(_ entry: Entry) {
        guard entry.emulation.probeError == nil, entry.guestDebug?.probeError == nil else { return }
        let temporary = path + ".\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { return }
        let cpuid = entry.supportedCPUID.map { $0.words.map { String($0, radix: 16) }.joined(separator: " ") }
        let debug = entry.guestDebug.map { ["debug " + String($0.bits, radix: 16)] } ?? []
        let bytes = Array(([key, entry.emulation.flags] + debug + cpuid).joined(separator: "\n").utf8)
        let written = bytes.count < Self.maximumSize ? write(fd, bytes, bytes.count) : -1
        close(fd)
        if written != bytes.count || rename(temporary, path) != 0 { unlink(temporary) }
    }

    /// This boot, kernel and set of loaded KVM modules; nil when any of it is unreadable.
    public static func hostKey() -> String? {
        guard let bootID = readText("/proc/sys/kernel/random/boot_id"),
              let release = readText("/proc/sys/kernel/osrelease") else { return nil }
        // Appended piece by piece: `[String].joined` is not specialized here, and its first
        // use in a process costs ~0.25 ms of witness lookups (a cold `vmmctl run` is ~6 ms).
        var key = "swift-vmm host-emulation 3\n" + bootID.filter { $0 != "\n" } + "\n" + release.filter { $0 != "\n" } + "\n"
        var first = true
        for module in ["kvm", "kvm_intel", "kvm_amd", "kvm_pvm"] {
            var st = stat()
            guard stat("/sys/module/" + module, &st) == 0 else { continue }
            key += (first ? "" : " ") + module + ":" + String(st.st_ino)
            first = false
        }
        return key
    }

    private static func readText(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        return readText(fd)
    }

    /// The space-separated hexadecimal 32-bit words of `line`; nil if any field is not one.
    /// One pass over the bytes: `split` is generic code whose first use costs a cold
    /// `vmmctl run` ~0.04 ms of witness lookups.
    static func hexWords(_ line: ArraySlice<UInt8>) -> [UInt32]? {
        var words: [UInt32] = []
        var word: UInt32 = 0, digits = 0
        for c in line {
            let digit: UInt8
            switch c {
            case UInt8(ascii: " "):
                if digits > 0 { words.append(word) }
                word = 0
                digits = 0
                continue
            case UInt8(ascii: "0") ... UInt8(ascii: "9"): digit = c - UInt8(ascii: "0")
            case UInt8(ascii: "a") ... UInt8(ascii: "f"): digit = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A") ... UInt8(ascii: "F"): digit = c - UInt8(ascii: "A") + 10
            default: return nil
            }
            guard digits < 8 else { return nil }
            word = word << 4 | UInt32(digit)
            digits += 1
        }
        if digits > 0 { words.append(word) }
        return words
    }

    private static func readText(_ fd: Int32) -> String? {
        readBytes(fd).map { String(decoding: $0, as: UTF8.self) }
    }

    private static func readBytes(_ fd: Int32) -> [UInt8]? {
        var text: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1024)
        while text.count < maximumSize {
            let n = read(fd, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { return nil }
            if n == 0 { break }
            text += chunk[..<n]
        }
        return text
    }

    /// A directory the caller owns and nobody else may write into.
    private static func privateDirectory(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR && st.st_uid == getuid() && st.st_mode & 0o022 == 0
    }
}

extension HostEmulation {
    /// The three findings as one line (`HostEmulationCache`'s entry): the names of those set.
    public var flags: String {
        [(refusesInstructions, "refuses-instructions"), (syscallBroken, "syscall-broken"), (hypercallsHang, "hypercalls-hang")]
            .filter(\.0).map(\.1).joined(separator: " ")
    }

    /// From `flags`; nil when it names something unknown.
    public init?(flags: String) {
        self.init()
        for word in flags.split(separator: " ") {
            switch word {
            case "refuses-instructions": refusesInstructions = true
            case "syscall-broken": syscallBroken = true
            case "hypercalls-hang": hypercallsHang = true
            default: return nil
            }
        }
    }
}
