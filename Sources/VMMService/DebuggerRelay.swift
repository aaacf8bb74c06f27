import Synchronization
import VMMAPI
import WorkerProtocol

/// A VM's debugger client, as the daemon sees it: bytes in both directions between the
/// client's connection and the worker, never parsed here (the GDB remote protocol is
/// spoken by the worker's stub). One client per VM.
final class DebuggerRelay: Sendable {
    /// Where the worker's bytes go; nil when no client is attached. Called with nil when
    /// the session is over (the worker closed it or went away).
    private let client = Mutex<(id: UInt64, sink: @Sendable ([UInt8]?) -> Void)?>(nil)
    private let nextID = Atomic<UInt64>(1)

    /// Claims the relay for a new client; nil when another is attached.
    func attach(_ sink: @escaping @Sendable ([UInt8]?) -> Void) -> UInt64? {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        return client.withLock { c -> UInt64? in
            guard c == nil else { return nil }
            c = (id, sink)
            return id
        }
    }

    /// Forgets client `id` (it left); false if it was not the attached one.
    @discardableResult
    func release(_ id: UInt64) -> Bool {
        client.withLock { c -> Bool in
            guard c?.id == id else { return false }
            c = nil
            return true
        }
    }

    /// Bytes from the worker's stub.
    func deliver(_ bytes: [UInt8]) { client.withLock { $0?.sink }?(bytes) }

    /// The session ended on the worker's side, or the worker is gone.
    func closed() {
        let sink = client.withLock { c -> (@Sendable ([UInt8]?) -> Void)? in defer { c = nil }; return c?.sink }
        sink?(nil)
    }
}

/// An attached debugger client's way to the worker.
public final class DebuggerConnection: Sendable {
    let vm: ManagedVM
    let id: UInt64

    init(vm: ManagedVM, id: UInt64) {
        self.vm = vm
        self.id = id
    }

    /// Bytes from the client, for the worker's stub.
    public func send(_ bytes: [UInt8]) {
        guard !bytes.isEmpty, vm.debugger.isAttached(id) else { return }
        vm.state.withLock { $0.worker }?.send(.debugData(bytes))
    }

    /// The client went away: the worker removes its breakpoints and lets the guest run.
    public func close() {
        guard vm.debugger.release(id) else { return }
        vm.state.withLock { $0.worker }?.send(.debugDetach)
    }
}

extension DebuggerRelay {
    func isAttached(_ id: UInt64) -> Bool { client.withLock { $0?.id == id } }
}

extension VMService {
    /// Attaches a debugger client to a worker-backed VM of the caller's (root: anyone's,
    /// with `owner`): the worker stops the guest and serves the GDB remote protocol over
    /// the bytes `connection.send` carries; its answers go to `onData`, then nil when the
    /// session is over. One client per VM.
    public func attachDebugger(_ name: String, owner: OwnerSelector?, caller: Caller,
                               onData: @escaping @Sendable ([UInt8]?) -> Void) throws(APIError) -> DebuggerConnection {
        let vm = try lookup(name, owner: owner, caller: caller)
        if vm.key.owner == .system && !caller.isRoot { throw APIError(.forbidden, "system VMs can only be debugged by root") }
        guard let worker = vm.state.withLock({ $0.phase == .creating ? nil : $0.worker }) else {
            throw APIError(.invalidState, "\(name) has no running worker (state \(vm.phase.rawValue))")
        }
        guard let id = vm.debugger.attach(onData) else {
            throw APIError(.invalidState, "a debugger is already attached to \(name)")
        }
        worker.send(.debugAttach)
        return DebuggerConnection(vm: vm, id: id)
    }
}
