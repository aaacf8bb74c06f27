import NIOCore
import Synchronization

/// The API connections open now, so that shutdown can close them and wait for them before
/// the event loops stop. A connection still finishing on one loop after another has shut
/// down hops onto the stopped loop (a connection's set-up ends on the listener's loop):
/// NIO reports "Cannot schedule tasks on an EventLoop that has already shut down", which
/// its strict mode, and "future SwiftNIO versions", make a crash. SIGTERM right after a
/// client connected met it in 4 of 40 starts.
final class OpenConnections: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    /// Keeps `channel` until it closes.
    func add(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        channels.withLock { $0[key] = channel }
        channel.closeFuture.whenComplete { [weak self] _ in _ = self?.channels.withLock { $0.removeValue(forKey: key) } }
    }

    /// Closes every connection and returns once all have closed and every loop of `group`
    /// has run what their closing queued. Call it after the listener has closed: first a
    /// pass through each loop, so that a connection accepted just before is registered.
    func closeAll(on group: any EventLoopGroup) async {
        await Self.drain(group)
        let open = channels.withLock { Array($0.values) }
        for channel in open { channel.close(promise: nil) }
        for channel in open { try? await channel.closeFuture.get() }
        await Self.drain(group)
    }

    /// One task through each loop of `group`, in turn.
    static func drain(_ group: any EventLoopGroup) async {
        for loop in group.makeIterator() { try? await loop.submit {}.get() }
    }
}
