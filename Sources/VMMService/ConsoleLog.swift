import Synchronization

/// A VM's serial output: the last `capacity` bytes, and the followers that get new
/// bytes as they arrive (`GET .../console?follow=true`).
final class ConsoleLog: Sendable {
    typealias Follower = @Sendable (_ bytes: [UInt8]?) -> Void   // nil: the console ended

    private struct State {
        var bytes: [UInt8] = []
        var start = 0             // ring start once full
        var followers: [UInt64: Follower] = [:]
        var nextID: UInt64 = 0
        var ended = false
    }
    private let state = Mutex(State())
    let capacity: Int

    init(capacity: Int = 1 << 20) { self.capacity = capacity }

    func append(_ new: [UInt8]) {
        guard !new.isEmpty else { return }
        let followers = state.withLock { s -> [Follower] in
            for b in new {
                if s.bytes.count < capacity {
                    s.bytes.append(b)
                } else {
                    s.bytes[s.start] = b
                    s.start = (s.start + 1) % capacity
                }
            }
            return Array(s.followers.values)
        }
        for f in followers { f(new) }
    }

    /// Everything kept, oldest first.
    var snapshot: [UInt8] {
        state.withLock { s in Array(s.bytes[s.start...] + s.bytes[..<s.start]) }
    }

    /// Adds a follower and gives it what was kept so far, under the lock so that no
    /// new output can overtake the backlog (followers must only enqueue, never block).
    /// Returns a token, or nil when the console has ended.
    func follow(_ follower: @escaping Follower) -> UInt64? {
        state.withLock { s in
            guard !s.ended else { return nil }
            s.nextID += 1
            s.followers[s.nextID] = follower
            let backlog = Array(s.bytes[s.start...] + s.bytes[..<s.start])
            if !backlog.isEmpty { follower(backlog) }
            return s.nextID
        }
    }

    func unfollow(_ token: UInt64) {
        state.withLock { _ = $0.followers.removeValue(forKey: token) }
    }

    /// The VM is gone: every follower gets nil once and is dropped.
    func end() {
        let followers = state.withLock { s -> [Follower] in
            s.ended = true
            defer { s.followers = [:] }
            return Array(s.followers.values)
        }
        for f in followers { f(nil) }
    }
}
