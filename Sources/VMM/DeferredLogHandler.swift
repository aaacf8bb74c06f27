import Logging
import Synchronization

/// The handler of the default `MachineConfig.logger` and `RestoreOptions.logger`: the
/// one `Logger(label:)` would make (whatever `LoggingSystem.bootstrap` chose), made when
/// the logger is first used rather than when the configuration is.
///
/// Why: the first `Logger(label:)` of a process sets up swift-log's factory and metadata
/// provider, ~0.1 ms in a fresh process, a tenth of a restore's own time; most machines
/// never log. Value semantics are kept: copies share the handler until one of them is
/// configured (log level, metadata), which gives that copy its own.
public struct DeferredLogHandler: LogHandler {
    private final class Box: Sendable {
        let label: String
        let made = Mutex<(any LogHandler)?>(nil)

        init(label: String, handler: (any LogHandler)? = nil) {
            self.label = label
            made.withLock { $0 = handler }
        }

        var handler: any LogHandler {
            made.withLock { made in
                if let made { return made }
                let handler = Logger(label: label).handler
                made = handler
                return handler
            }
        }
    }

    private var box: Box

    public init(label: String) { box = Box(label: label) }

    /// A logger labelled `label` whose handler is made at its first use.
    public static func logger(label: String) -> Logger {
        Logger(label: label, factory: { DeferredLogHandler(label: $0) })
    }

    /// Changes the handler of this copy only (copy on write).
    private mutating func update(_ change: (inout any LogHandler) -> Void) {
        var handler = box.handler
        change(&handler)
        box = Box(label: box.label, handler: handler)
    }

    public func log(event: LogEvent) { box.handler.log(event: event) }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { box.handler[metadataKey: key] }
        set { update { $0[metadataKey: key] = newValue } }
    }

    public var metadata: Logger.Metadata {
        get { box.handler.metadata }
        set { update { $0.metadata = newValue } }
    }

    public var logLevel: Logger.Level {
        get { box.handler.logLevel }
        set { update { $0.logLevel = newValue } }
    }

    public var metadataProvider: Logger.MetadataProvider? {
        get { box.handler.metadataProvider }
        set { update { $0.metadataProvider = newValue } }
    }
}
