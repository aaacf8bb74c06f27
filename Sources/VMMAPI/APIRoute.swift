/// Whose VM a root caller means (`?owner=UID` or `?owner=system`). Other callers
/// always mean their own.
public enum OwnerSelector: Sendable, Equatable {
    case uid(UInt32)
    case system
}

/// A request, parsed from method and URI before anything acts on it. The server maps
/// each case to one service call; nothing else reaches a VM.
public enum APIRoute: Sendable, Equatable {
    case version
    case capabilities
    case metrics
    case listVMs
    case createVM
    case info(name: String, owner: OwnerSelector?)
    /// `GET /v1/vms/{name}?wait_for=STATE[,STATE...][&timeout_ms=N]`: the VM's info once
    /// it is in one of `states`, or when `timeoutMilliseconds` have passed (whatever its
    /// state then).
    case waitFor(name: String, states: [VMState], timeoutMilliseconds: Int, owner: OwnerSelector?)
    case destroy(name: String, owner: OwnerSelector?)
    case action(name: String, VMAction, owner: OwnerSelector?)
    /// `GET .../console`: the output so far, or (`follow`) a stream that goes on.
    case console(name: String, follow: Bool, owner: OwnerSelector?)
    /// `POST .../console`: the body goes to the guest's serial port.
    case consoleInput(name: String, owner: OwnerSelector?)
    case stats(name: String, owner: OwnerSelector?)
    /// `PUT .../snapshot`: write a snapshot of the VM (the body says where).
    case snapshot(name: String, owner: OwnerSelector?)
    /// `GET .../gdb` with `Upgrade: gdb-remote`: the connection becomes a byte stream to
    /// the VM's GDB remote protocol stub (`vmmctl gdb`).
    case debugger(name: String, owner: OwnerSelector?)
    /// Test hook, answered only by a daemon started with `--test-hooks`: the worker makes
    /// a system call its sandbox forbids.
    case testForbiddenSyscall(name: String, owner: OwnerSelector?)

    /// Parses `method` and `uri` (path and query). Unknown paths, methods and query
    /// parameters are errors, never ignored.
    public static func parse(method: String, uri: String) throws(APIError) -> APIRoute {
        let (path, query) = try splitQuery(uri)
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.first == "", parts.count >= 2 else { throw APIError(.noRoute, "no such endpoint: \(path)") }
        let segments = Array(parts.dropFirst())

        func expect(_ allowed: [String], _ route: APIRoute, params: Set<String> = []) throws(APIError) -> APIRoute {
            guard allowed.contains(method) else {
                throw APIError(.methodNotAllowed, "\(method) is not allowed on \(path); use \(allowed.joined(separator: " or "))",
                               allowedMethods: allowed)
            }
            for key in query.keys where !params.contains(key) {
                throw APIError(.unknownField, "unknown query parameter '\(key)'", field: key)
            }
            return route
        }

        switch segments {
        case ["metrics"]: return try expect(["GET"], .metrics)
        case ["v1", "version"]: return try expect(["GET"], .version)
        case ["v1", "capabilities"]: return try expect(["GET"], .capabilities)
        case ["v1", "vms"]:
            return try expect(["GET", "POST"], method == "POST" ? .createVM : .listVMs)
        default: break
        }
        guard segments.count >= 3, segments[0] == "v1", segments[1] == "vms" else {
            throw APIError(.noRoute, "no such endpoint: \(path)")
        }
        let name = segments[2]
        try CreateVMRequest.validateName(name)
        let owner = try ownerSelector(query["owner"])
        let rest = Array(segments.dropFirst(3))
        if rest.count == 2, rest[0] == "actions" {
            guard let action = VMAction(rawValue: rest[1]) else {
                throw APIError(.noRoute, "unknown action '\(rest[1])'; actions: \(VMAction.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return try expect(["POST"], .action(name: name, action, owner: owner), params: ["owner"])
        }
        switch rest {
        case []:
            if method == "GET", query["timeout_ms"] != nil, query["wait_for"] == nil {
                // A bound on no wait: checked, then the VM as it is.
                _ = try milliseconds(query["timeout_ms"], default: 0)
                return try expect(["GET"], .info(name: name, owner: owner), params: ["owner", "timeout_ms"])
            }
            if method == "GET", query["wait_for"] != nil {
                let states = try waitStates(query["wait_for"] ?? "")
                let timeout = try milliseconds(query["timeout_ms"], default: Self.defaultWaitMilliseconds)
                return try expect(["GET"], .waitFor(name: name, states: states, timeoutMilliseconds: timeout, owner: owner),
                                  params: ["owner", "wait_for", "timeout_ms"])
            }
            return try expect(["GET", "DELETE"], method == "DELETE" ? .destroy(name: name, owner: owner) : .info(name: name, owner: owner),
                              params: ["owner"])
        case ["console"]:
            if method == "POST" { return try expect(["POST"], .consoleInput(name: name, owner: owner), params: ["owner"]) }
            let follow = try flag(query["follow"], name: "follow")
            return try expect(["GET", "POST"], .console(name: name, follow: follow, owner: owner), params: ["owner", "follow"])
        case ["stats"]:
            return try expect(["GET"], .stats(name: name, owner: owner), params: ["owner"])
        case ["snapshot"]:
            return try expect(["PUT"], .snapshot(name: name, owner: owner), params: ["owner"])
        case ["gdb"]:
            return try expect(["GET"], .debugger(name: name, owner: owner), params: ["owner"])
        case ["test", "forbidden-syscall"]:
            return try expect(["POST"], .testForbiddenSyscall(name: name, owner: owner), params: ["owner"])
        default:
            throw APIError(.noRoute, "no such endpoint: \(path)")
        }
    }

    static func splitQuery(_ uri: String) throws(APIError) -> (String, [String: String]) {
        guard let mark = uri.firstIndex(of: "?") else { return (uri, [:]) }
        var query: [String: String] = [:]
        for pair in uri[uri.index(after: mark)...].split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(kv[0])
            guard query[key] == nil else { throw APIError(.invalidField, "query parameter '\(key)' given twice", field: key) }
            query[key] = kv.count > 1 ? String(kv[1]) : ""
        }
        return (String(uri[..<mark]), query)
    }

    /// `owner`: `system`, or a uid in canonical decimal (0 to 2^32-1, no sign, no
    /// leading zero), exactly what the contract's pattern allows.
    static func ownerSelector(_ value: String?) throws(APIError) -> OwnerSelector? {
        guard let value else { return nil }
        if value == "system" { return .system }
        guard let uid = UInt32(value), String(uid) == value else {
            throw APIError(.invalidField, "owner must be a uid (0 to 4294967295, in decimal) or 'system'", field: "owner")
        }
        return .uid(uid)
    }

    /// How long `wait_for` waits when `timeout_ms` is not given, and the most it may ask.
    public static let defaultWaitMilliseconds = 10_000
    public static let maxWaitMilliseconds = 60_000

    /// `wait_for`: one state or several, comma-separated, each once.
    static func waitStates(_ text: String) throws(APIError) -> [VMState] {
        var states: [VMState] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard let state = VMState(rawValue: String(part)), !states.contains(state) else {
                throw APIError(.invalidField, "wait_for must be states from \(VMState.allCases.map(\.rawValue).joined(separator: ", ")), "
                               + "comma-separated, each once", field: "wait_for")
            }
            states.append(state)
        }
        return states
    }

    /// `timeout_ms`: 0 to `maxWaitMilliseconds`, canonical decimal.
    static func milliseconds(_ value: String?, default fallback: Int) throws(APIError) -> Int {
        guard let value else { return fallback }
        guard value.utf8.count <= 5, value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), !(value.count > 1 && value.hasPrefix("0")),
              let n = Int(value), n <= maxWaitMilliseconds else {
            throw APIError(.invalidField, "timeout_ms must be 0 to \(maxWaitMilliseconds), in decimal", field: "timeout_ms")
        }
        return n
    }

    /// A boolean query parameter: `true` or `false`, as the contract has it.
    static func flag(_ value: String?, name: String) throws(APIError) -> Bool {
        switch value {
        case nil, "false": return false
        case "true": return true
        default: throw APIError(.invalidField, "\(name) must be true or false", field: name)
        }
    }
}
