import CSys
#if canImport(Glibc)
import Glibc
#endif

/// An epoll(7) instance: the one wait of an event device's thread, over its queue
/// eventfds, its stop eventfd and its host descriptors (sockets, a tap). Each
/// registration carries a 64-bit token the device chooses; `wait` returns tokens.
public final class EventPoll: @unchecked Sendable {
    // @unchecked: used by one device thread; the descriptor itself is immutable.
    public let fd: Int32
    private var events: [epoll_event]

    /// Readiness bits (epoll_ctl(2)).
    public struct Events: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let readable = Events(rawValue: EPOLLIN.rawValue)
        public static let writable = Events(rawValue: EPOLLOUT.rawValue)
        /// The peer shut its sending side down.
        public static let readHangUp = Events(rawValue: EPOLLRDHUP.rawValue)
        /// Both directions are closed (reported whether asked for or not).
        public static let hangUp = Events(rawValue: EPOLLHUP.rawValue)
        public static let error = Events(rawValue: EPOLLERR.rawValue)
        /// Edge-triggered: reported once per change, until the device has drained the
        /// descriptor to EAGAIN.
        public static let edgeTriggered = Events(rawValue: EPOLLET.rawValue)
    }

    /// `epoll_create1(EPOLL_CLOEXEC)`; `capacity` events per wait.
    public init(capacity: Int = 64) throws {
        fd = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard fd >= 0 else { throw DeviceError.system(operation: "epoll_create1", errno: errno) }
        events = Array(repeating: epoll_event(), count: max(1, capacity))
    }

    deinit { close(fd) }

    /// `EPOLL_CTL_ADD`.
    public func add(_ descriptor: Int32, _ interest: Events, token: UInt64) throws {
        try control(EPOLL_CTL_ADD, descriptor, interest, token, "EPOLL_CTL_ADD")
    }

    /// `EPOLL_CTL_MOD`.
    public func modify(_ descriptor: Int32, _ interest: Events, token: UInt64) throws {
        try control(EPOLL_CTL_MOD, descriptor, interest, token, "EPOLL_CTL_MOD")
    }

    /// `EPOLL_CTL_DEL`; a descriptor that is already gone is not an error (closing one
    /// removes it too).
    public func remove(_ descriptor: Int32) {
        var event = epoll_event()
        _ = epoll_ctl(fd, EPOLL_CTL_DEL, descriptor, &event)
    }

    private func control(_ op: Int32, _ descriptor: Int32, _ interest: Events, _ token: UInt64, _ name: String) throws {
        var event = epoll_event()
        event.events = interest.rawValue
        event.data.u64 = token
        guard epoll_ctl(fd, op, descriptor, &event) == 0 else { throw DeviceError.system(operation: name, errno: errno) }
    }

    /// `epoll_wait(2)` for at most `timeoutMilliseconds` (-1: no limit). Returns the
    /// ready tokens with their events; empty after a timeout or a signal.
    public func wait(timeoutMilliseconds: Int32) -> [(token: UInt64, events: Events)] {
        let n = epoll_wait(fd, &events, Int32(events.count), timeoutMilliseconds)
        guard n > 0 else { return [] }
        return (0 ..< Int(n)).map { (events[$0].data.u64, Events(rawValue: events[$0].events)) }
    }
}

extension EventPoll {
    /// The loop of a `VirtioEventDevice`'s thread: watches the queue eventfds (tokens 0,
    /// 1, ... in queue order, each drained before `serve` sees it) and `stop` (token
    /// `stopToken`), then hands every batch of ready tokens to `serve`, which returns
    /// how long the next wait may last (-1: until something happens), until `stop` is
    /// signalled. False when the descriptors could not be watched.
    public func serveDevice(queueEvents: [Int32], stop: Int32, stopToken: UInt64,
                            _ serve: ([(token: UInt64, events: Events)]) -> Int32) -> Bool {
        do {
            for (i, fd) in queueEvents.enumerated() { try add(fd, [.readable], token: UInt64(i)) }
            try add(stop, [.readable], token: stopToken)
        } catch {
            return false
        }
        var timeout: Int32 = -1
        while true {
            let ready = wait(timeoutMilliseconds: timeout)
            if ready.contains(where: { $0.token == stopToken }) { return true }
            for (token, _) in ready where token < UInt64(queueEvents.count) { drainEventFD(queueEvents[Int(token)]) }
            timeout = serve(ready)
        }
    }
}

/// Reads an eventfd's counter, resetting it (a non-blocking or known-ready one).
/// Returns the count, 0 when it was not signalled.
@discardableResult
public func drainEventFD(_ fd: Int32) -> UInt64 {
    var value: UInt64 = 0
    while true {
        let n = read(fd, &value, 8)
        if n == 8 { return value }
        if n < 0 && errno == EINTR { continue }
        return 0
    }
}

/// Errors of the devices' host side (event loops, sockets, taps), naming the call.
public enum DeviceError: Error, Equatable, Sendable, CustomStringConvertible {
    case system(operation: String, errno: Int32)
    case invalid(String)

    public var description: String {
        switch self {
        case .system(let op, let e): return "\(op) failed: \(String(cString: strerror(e)))"
        case .invalid(let why): return why
        }
    }
}
