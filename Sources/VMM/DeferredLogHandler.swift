import Logging
import Synchronization

/// The handler of the default `MachineConfig.logger` and `RestoreOptions.logger`, and of
/// the loggers vmmctl and the worker make: the one `Logger(label:)` would make (whatever
/// `LoggingSystem.bootstrap` chose), made when something is first logged rather than
/// when the logger is.
///
/// Why: the first `Logger(label:)` of a process sets up swift-log's factory and metadata
/// provider, ~0.1 ms in a fresh process, a tenth of a restore's own time; most machines
/// never log. Setting the log level or metadata does not make it: the changes are kept
/// and applied, in order, to the handler when it is made; a level set here also answers
/// `logLevel` (which every log call asks first), so a call below it makes nothing.
/// Value semantics are kept: copies share the handler until one of them is changed.
public struct DeferredLogHandler: LogHandler {
    private typealias Change = @Sendable (inout any LogHandler) -> Void

    /// One configuration: the label, the changes made to it so far, and its handler once
    /// made (with the changes applied).
    private final class Box: Sendable {
        let label: String
        let changes: [Change]
        let level: Logger.Level?
        private let made: Mutex<(any LogHandler)?>

        init(label: String, changes: [Change], level: Logger.Level?, made handler: (any LogHandler)?) {
            self.label = label
            self.changes = changes
            self.level = level
            made = Mutex(handler)
        }

        /// The handler, if it has been made.
        var existing: (any LogHandler)? { made.withLock { $0 } }

        var handler: any LogHandler {
            made.withLock { made in
                if let made { return made }
                var handler = Logger(label: label).handler
                for change in changes { change(&handler) }
                made = handler
                return handler
            }
        }
    }

    private var box: Box

    /// A handler labelled `label`, made by `LoggingSystem` at its first use.
    public init(label: String) { box = Box(label: label, changes: [], level: nil, made: nil) }

    /// A logger labelled `label` whose handler is made at its first use.
    public static func logger(label: String) -> Logger {
        Logger(label: label, factory: { DeferredLogHandler(label: $0) })
    }

    /// Changes this copy only: applied now if the handler exists, kept for it otherwise.
    private mutating func update(level: Logger.Level? = nil, _ change: @escaping Change) {
        if var handler = box.existing {
            change(&handler)
            box = Box(label: box.label, changes: [], level: nil, made: handler)
        } else {
            box = Box(label: box.label, changes: box.changes + [change], level: level ?? box.level, made: nil)
        }
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
        get { box.level ?? box.handler.logLevel }
        set { update(level: newValue) { $0.logLevel = newValue } }
    }

    public var metadataProvider: Logger.MetadataProvider? {
        get { box.handler.metadataProvider }
        set { update { $0.metadataProvider = newValue } }
    }
}
