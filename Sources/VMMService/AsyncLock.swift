import Synchronization

/// A lock for async code: one holder at a time, the others suspended (not blocking a
/// thread) in arrival order. The daemon uses one per VM so that creating, starting,
/// acting on and destroying the same VM never interleave.
final class AsyncLock: Sendable {
    private struct State {
        var held = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())

    func lock() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let acquired = state.withLock { s -> Bool in
                if s.held { s.waiters.append(c); return false }
                s.held = true
                return true
            }
            if acquired { c.resume() }
        }
    }

    func unlock() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            guard !s.waiters.isEmpty else { s.held = false; return nil }
            return s.waiters.removeFirst()   // ownership passes straight to it
        }
        next?.resume()
    }

    /// Runs `body` holding the lock.
    func withLock<T>(_ body: () async throws -> T) async rethrows -> T {
        await lock()
        defer { unlock() }
        return try await body()
    }
}
