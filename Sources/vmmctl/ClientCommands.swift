import ArgumentParser
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import NIOHTTP1
import VMMAPI
import VMMClient

/// Options every daemon command takes.
struct ClientOptions: ParsableArguments {
    @Option(help: "vmmd's API socket.")
    var socket: String = APIConnection.defaultSocket

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @Option(help: "Root only: act on another owner's VM (a uid, or 'system').")
    var owner: String?

    /// `?owner=...` for a VM path.
    var query: String { owner.map { "?owner=\($0)" } ?? "" }

    func connect() async throws -> APIConnection {
        do { return try await APIConnection.connect(socketPath: socket) } catch { clientFail(error) }
    }

    /// The options every daemon command takes, as they may also stand before the
    /// subcommand (`vmmctl --socket S list`): moved behind the subcommand's name, where
    /// ArgumentParser looks for them.
    static func movingLeadingOptions(_ arguments: [String]) -> [String] {
        let withValue: Set<String> = ["--socket", "--owner"], flags: Set<String> = ["--json"]
        var leading: [String] = []
        var rest = arguments[...]
        while let first = rest.first {
            let name = String(first.split(separator: "=", maxSplits: 1).first ?? "")
            if flags.contains(first) || (withValue.contains(name) && first.contains("=")) {
                leading.append(first); rest = rest.dropFirst()
            } else if withValue.contains(first), rest.count >= 2 {
                leading += rest.prefix(2); rest = rest.dropFirst(2)
            } else {
                break
            }
        }
        guard !leading.isEmpty, let subcommand = rest.first else { return arguments }
        return [subcommand] + leading + rest.dropFirst()
    }
}

/// Prints why a daemon command failed, one format for every command, and exits: 1 when
/// vmmd refused ("message (code)"), 2 when vmmd cannot be reached or answered nonsense.
func clientFail(_ error: Error) -> Never {
    switch error {
    case let error as APIError: clientFail("\(error.message) (\(error.code.rawValue))", status: 1)
    default: clientFail("\(error)", status: 2)
    }
}

/// Prints a message and exits with `status`.
func clientFail(_ message: String, status: Int32 = 1) -> Never {
    printError("vmmctl: \(message)")
    exit(status)
}

func vmPath(_ name: String, _ options: ClientOptions, _ suffix: String = "") -> String {
    "/v1/vms/\(name)\(suffix)\(options.query)"
}

func encodeJSON<T: Encodable>(_ value: T) -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return (try? [UInt8](encoder.encode(value))) ?? []
}

func printJSON(_ bytes: [UInt8]) {
    print(String(decoding: bytes, as: UTF8.self).trimmedWhitespace)
}

/// Runs one request, handling errors the same way everywhere.
func perform<T: Decodable>(_ connection: APIConnection, _ method: HTTPMethod, _ path: String, body: [UInt8]? = nil,
                           as type: T.Type) async -> (T, APIResult) {
    let result: APIResult
    do { result = try await connection.request(method, path, body: body) } catch { clientFail(error) }
    do {
        try result.throwIfError()
        return (try JSONDecoder().decode(T.self, from: Data(result.body)), result)
    } catch {
        clientFail(error)
    }
}

struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create a named VM in vmmd (and start it, unless --no-start).",
        discussion: """
        With --lifetime connection or process, vmmctl stays attached: the guest's console streams to the \
        terminal and keystrokes go to the guest; when vmmctl ends (Ctrl-] or a signal), the \
        connection closes and the VM is destroyed with it.
        """)

    @OptionGroup var options: ClientOptions
    @Argument(help: "The VM's name: 1-64 letters, digits, '.', '_', '-', not starting with '.' or '-'.") var name: String
    @Option(help: "Kernel image path (opened by vmmd with your permissions). Not with --from-snapshot.") var kernel: String?
    @Option(help: "Initial ramdisk path.") var initrd: String?
    @Option(help: "Kernel command line.") var cmdline: String = ""
    @Option(help: "Guest RAM in MiB.") var memory: UInt64 = 128
    @Option(help: "Number of vCPUs.") var cpus: Int = 1
    @Flag(help: "Attach the debug-exit port (0xf4).") var debugExit = false
    @Flag(help: "Enable the hypercall doorbell.") var hypercalls = false
    @Flag(help: "Stop on guest reset instead of rebooting.") var noReboot = false
    @Flag(help: "Reboot on a triple fault instead of stopping.") var rebootOnTripleFault = false
    @Option(help: "CPU template (vmmctl cpu-templates).") var cpuTemplate: String = "host"
    @Option(help: "Emulation assist: auto, on or off (see vmmctl run --help).") var emulationAssist: EmulationAssistSetting = .auto
    @Option(help: "connection, process or persistent.") var lifetime: String = "persistent"
    @Flag(help: "Create without starting.") var noStart = false
    @Option(help: ArgumentHelp("A virtio-blk disk (repeatable; the first is /dev/vda), opened by vmmd with your permissions.",
                               valueName: DiskOption.helpText)) var disk: [DiskOption] = []
    @Flag(help: "Add a virtio-rng device.") var rng = false
    @Option(help: ArgumentHelp("A virtio-net device on an existing tap you own (repeatable).",
                               valueName: NetOption.helpText)) var net: [NetOption] = []
    @Option(help: ArgumentHelp("A virtio-vsock device; vmmd creates the socket with your permissions.",
                               valueName: VsockOption.helpText)) var vsock: VsockOption?
    @OptionGroup(title: "Snapshots") var snapshot: CreateSnapshotOptions

    func run() async throws {
        guard let lifetime = Lifetime(rawValue: lifetime), lifetime != .system else {
            clientFail("--lifetime must be connection, process or persistent")
        }
        guard (kernel == nil) != (snapshot.fromSnapshot == nil) else { clientFail("give --kernel PATH, or --from-snapshot DIR (not both)") }
        var request = CreateVMRequest(name: name, memoryMiB: memory, vcpus: cpus, kernel: absolute(kernel ?? ""),
                                      initrd: initrd.map(absolute), cmdline: cmdline, debugExit: debugExit,
                                      hypercalls: hypercalls, noReboot: noReboot,
                                      tripleFault: rebootOnTripleFault ? .reboot : .stop, cpuTemplate: cpuTemplate,
                                      lifetime: lifetime, start: !noStart, emulationAssist: emulationAssist)
        request.disks = disk.map { DiskRequest(path: absolute($0.path), readOnly: $0.readOnly, serial: $0.serial, direct: $0.direct) }
        request.rng = rng
        request.net = net.map { NetRequest(tap: $0.tap, mac: $0.mac?.description) }
        request.vsock = vsock.map { VsockRequest(cid: $0.cid, socket: absolute($0.socket)) }
        request.trackDirtyPages = snapshot.trackDirtyPages
        request.restoreFrom = snapshot.restoreRequest
        let connection = try await options.connect()
        let (info, result) = await perform(connection, .POST, "/v1/vms", body: encodeJSON(request), as: VMInfo.self)
        if options.json { printJSON(result.body) } else { printVMs([info]) }
        // Both lifetimes end with this vmmctl (its connection, or its process): stay.
        guard lifetime == .connection || lifetime == .process else { return }
        printError("vmmctl: attached to \(name); it is destroyed when vmmctl ends (Ctrl-] detaches)")
        await ConsoleSession(options: options, name: name).attach(over: connection)
    }

    private func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : currentDirectory() + "/" + path
    }
}

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List your VMs in vmmd (root: all VMs).")
    @OptionGroup var options: ClientOptions

    func run() async throws {
        let connection = try await options.connect()
        let (list, result) = await perform(connection, .GET, "/v1/vms", as: VMList.self)
        if options.json { printJSON(result.body) } else { printVMs(list.vms) }
    }
}

struct Info: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "info", abstract: "Show one VM.")
    @OptionGroup var options: ClientOptions
    @Argument var name: String

    func run() async throws {
        let connection = try await options.connect()
        let (info, result) = await perform(connection, .GET, vmPath(name, options), as: VMInfo.self)
        guard !options.json else { return printJSON(result.body) }
        let rows: [(String, String)] = [
            ("name", info.name), ("owner", info.ownerUID.map { "uid \($0)" } ?? "system"), ("state", info.state.rawValue),
            ("lifetime", info.lifetime.rawValue), ("worker pid", info.workerPID.map(String.init) ?? "-"),
            ("created", info.createdAt), ("memory", "\(info.memoryMiB) MiB"), ("vcpus", "\(info.vcpus)"),
            ("kernel", info.kernel), ("initrd", info.initrd ?? "-"), ("cmdline", info.cmdline),
            ("boot format", info.bootFormat ?? "-"),
            ("last exit", info.lastExit.map { "\($0.kind) (status \($0.status)): \($0.message) at \($0.at)" } ?? "-"),
        ]
        for (k, v) in rows { print(k.padded(to: 12) + v) }
    }
}

struct Wait: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wait", abstract: "Wait until a VM is in a state (e.g. stopped), then show it.",
        discussion: "One request (GET /v1/vms/NAME?wait_for=STATE,...), no polling. Exits 0 once the VM is in one of the STATEs, 1 when --timeout passes first.")
    @OptionGroup var options: ClientOptions
    @Argument var name: String
    @Argument(help: "creating, created, running, paused, stopped, crashed, external or failed (several: any of them).")
    var states: [String]
    @Option(help: "Seconds to wait at most (up to 60).") var timeout: Double = 10

    func validate() throws {
        guard !states.isEmpty else { throw ValidationError("name at least one state") }
        for state in states where VMState(rawValue: state) == nil {
            throw ValidationError("no state '\(state)': one of \(VMState.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard timeout >= 0, timeout <= Double(APIRoute.maxWaitMilliseconds) / 1000 else {
            throw ValidationError("--timeout must be 0 to \(APIRoute.maxWaitMilliseconds / 1000) seconds")
        }
    }

    func run() async throws {
        let connection = try await options.connect()
        let wanted = states.reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        let query = (options.query.isEmpty ? "?" : options.query + "&")
            + "wait_for=\(wanted.joined(separator: ","))&timeout_ms=\(Int(timeout * 1000))"
        let (info, result) = await perform(connection, .GET, "/v1/vms/\(name)" + query, as: VMInfo.self)
        if options.json { printJSON(result.body) } else { printVMs([info]) }
        if !wanted.contains(info.state.rawValue) { throw ExitCode(1) }
    }
}

/// start, pause, resume, reset, poweroff, kill: one `POST .../actions/ACTION` each.
protocol VMActionCommand: AsyncParsableCommand {
    static var action: VMAction { get }
    var options: ClientOptions { get }
    var name: String { get }
}

extension VMActionCommand {
    func run() async throws {
        let connection = try await options.connect()
        let path = vmPath(name, options, "/actions/\(Self.action.rawValue)")
        let (info, result) = await perform(connection, .POST, path, as: VMInfo.self)
        if options.json { printJSON(result.body) } else { printVMs([info]) }
    }
}

struct Start: VMActionCommand {
    static let configuration = CommandConfiguration(commandName: "start", abstract: "Boot a created or stopped VM (a crashed one gets a new worker).")
    static let action = VMAction.start
    @OptionGroup var options: ClientOptions
    @Argument var name: String
}

struct Pause: VMActionCommand {
    static let configuration = CommandConfiguration(commandName: "pause", abstract: "Pause every vCPU of a running VM.")
    static let action = VMAction.pause
    @OptionGroup var options: ClientOptions
    @Argument var name: String
}

struct Resume: VMActionCommand {
    static let configuration = CommandConfiguration(commandName: "resume", abstract: "Resume a paused VM.")
    static let action = VMAction.resume
    @OptionGroup var options: ClientOptions
    @Argument var name: String
}

struct Reset: VMActionCommand {
    static let configuration = CommandConfiguration(commandName: "reset", abstract: "Restart a VM's guest from power-on (memory kept).")
    static let action = VMAction.reset
    @OptionGroup var options: ClientOptions
    @Argument var name: String
}

struct PowerOff: VMActionCommand {
    static let configuration = CommandConfiguration(commandName: "poweroff", abstract: "Ask a VM's guest to power off.")
    static let action = VMAction.poweroff
    @OptionGroup var options: ClientOptions
    @Argument var name: String
}

struct Kill: VMActionCommand {
    static let configuration = CommandConfiguration(commandName: "kill", abstract: "Stop a VM's guest now (the VM stays, stopped).")
    static let action = VMAction.kill
    @OptionGroup var options: ClientOptions
    @Argument var name: String
}

struct Destroy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "destroy", abstract: "Destroy a VM: its worker, memory and record are gone.")
    @OptionGroup var options: ClientOptions
    @Argument var name: String

    func run() async throws {
        let connection = try await options.connect()
        let result: APIResult
        do { result = try await connection.request(.DELETE, vmPath(name, options)) } catch { clientFail(error) }
        do { try result.throwIfError() } catch { clientFail(error) }
        if !options.json { print("destroyed \(name)") }
    }
}

struct Stats: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stats", abstract: "KVM's statistics and the VMM's counters for a VM.")
    @OptionGroup var options: ClientOptions
    @Argument var name: String

    func run() async throws {
        let connection = try await options.connect()
        let (stats, result) = await perform(connection, .GET, vmPath(name, options, "/stats"), as: StatsInfo.self)
        guard !options.json else { return printJSON(result.body) }
        for scope in stats.scopes.keys.sorted() {
            for (source, values) in (stats.scopes[scope] ?? [:]).sorted(by: { $0.key < $1.key }) {
                for (name, value) in values.sorted(by: { $0.key < $1.key }) where value != 0 {
                    print("\(scope.padded(to: 7)) \(source.padded(to: 9)) \(name.padded(to: 32)) \(value)")
                }
            }
        }
    }
}

/// The human table of VMs.
func printVMs(_ vms: [VMInfo]) {
    let header = ["NAME", "OWNER", "STATE", "LIFETIME", "PID", "MEMORY", "VCPUS", "LAST EXIT"]
    let rows = vms.map { vm in
        [vm.name, vm.ownerUID.map(String.init) ?? "system", vm.state.rawValue, vm.lifetime.rawValue,
         vm.workerPID.map(String.init) ?? "-", "\(vm.memoryMiB)M", "\(vm.vcpus)",
         vm.lastExit.map { "\($0.kind) (\($0.status))" } ?? "-"]
    }
    let widths = header.indices.map { i in ([header[i]] + rows.map { $0[i] }).map(\.count).max() ?? 0 }
    for row in [header] + rows {
        print(row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell.padded(to: widths[i]) }
            .joined(separator: "  "))
    }
}
