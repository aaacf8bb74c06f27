import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A progress bar with bytes and rate on stderr, for writing or copying more than
/// `threshold` bytes — and nothing at all when stderr is not a terminal (a log, a pipe,
/// a test), so that output stays clean.
final class ProgressBar: Sendable {
    /// Below this, an operation is quick enough to need no bar.
    static let threshold: UInt64 = 64 << 20

    let label: String
    private let enabled: Bool
    private let start = DispatchTime.now()
    private let state = Mutex<(lastDraw: UInt64, drawn: Bool)>((0, false))

    init(_ label: String) {
        self.label = label
        enabled = isatty(STDERR_FILENO) == 1
    }

    /// `done` of `total` bytes; redrawn at most every 100 ms.
    func update(_ done: UInt64, _ total: UInt64) {
        guard enabled, total > Self.threshold else { return }
        let now = DispatchTime.now().uptimeNanoseconds
        let draw = state.withLock { s -> Bool in
            guard done >= total || now - s.lastDraw >= 100_000_000 else { return false }
            s.lastDraw = now
            s.drawn = true
            return true
        }
        guard draw else { return }
        let seconds = max(Double(now - start.uptimeNanoseconds) / 1e9, 1e-6)
        let width = 30
        let filled = total == 0 ? width : Int(Double(width) * Double(done) / Double(total))
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let line = "\r\(label) [\(bar)] \(Self.size(done)) / \(Self.size(total))  \(Self.size(UInt64(Double(done) / seconds)))/s "
        _ = line.withCString { write(STDERR_FILENO, $0, strlen($0)) }
    }

    /// Ends the bar's line (when one was drawn).
    func finish() {
        guard state.withLock({ $0.drawn }) else { return }
        _ = "\n".withCString { write(STDERR_FILENO, $0, 1) }
    }

    /// `value` with one decimal ("12.3"), without Foundation's String(format:).
    static func oneDecimal(_ value: Double) -> String {
        let tenths = Int((max(0, value) * 10).rounded())
        return String(tenths / 10) + "." + String(tenths % 10)
    }

    static func size(_ bytes: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes), unit = 0
        while value >= 1024, unit < units.count - 1 { value /= 1024; unit += 1 }
        return unit == 0 ? "\(bytes) B" : String(Int(value * 10) / 10) + "." + String(Int(value * 10) % 10) + " " + units[unit]
    }
}
