import Logging
import Testing
import VMM

/// The default loggers' handler keeps Logger's value semantics while it defers making
/// the real handler: changes before and after it is made stay with the copy they were
/// made to, in the order they were made.
struct DeferredLogHandlerTests {
    @Test func copiesKeepTheirOwnLevelAndMetadata() {
        let a = DeferredLogHandler.logger(label: "deferred-test")
        var b = a
        b.logLevel = .critical
        b[metadataKey: "vm"] = "one"
        b[metadataKey: "vm"] = "two"        // applied in order when the handler is made
        #expect(b.logLevel == .critical)
        #expect(a.logLevel != .critical)
        #expect(b[metadataKey: "vm"] == "two")   // makes b's handler
        #expect(a[metadataKey: "vm"] == nil)
        var c = b                            // a copy of a made handler
        c.logLevel = .debug
        c[metadataKey: "vm"] = "three"
        #expect(b.logLevel == .critical && b[metadataKey: "vm"] == "two")
        #expect(c.logLevel == .debug && c[metadataKey: "vm"] == "three")
        b.debug("below the level: nothing is written, nothing breaks")
    }
}
