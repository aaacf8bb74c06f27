#if canImport(Glibc)
import Glibc
#endif

/// What the built-in calls need from the VM that runs them.
public protocol HypercallEnvironment: AnyObject, Sendable {
    var vmName: String { get }
    func consoleWrite(_ bytes: [UInt8])
    func requestPowerOff()
    func requestReset()
    /// `level`: 0 error, 1 warning, 2 info, 3 debug, 4 trace.
    func guestLog(level: Int, message: String, vcpu: UInt32)
    /// Snapshot restores behind this VM, and this instance's 16-byte ID (`vm_generation`).
    var vmGeneration: (count: UInt64, instanceID: [UInt8]) { get }
}

extension HypercallEnvironment {
    /// A VM that is never restored: generation 0, no instance ID.
    public var vmGeneration: (count: UInt64, instanceID: [UInt8]) { (0, [UInt8](repeating: 0, count: 16)) }
}

/// The calls every swift-vmm VM with hypercalls enabled offers (docs/hypercalls.md).
public enum BuiltinHypercalls {
    /// Registers the built-ins into `registry`, reaching the VM through `environment`,
    /// which the registry keeps alive (it should hold its VM weakly).
    public static func register(into registry: HypercallRegistry, environment: any HypercallEnvironment) throws {
        let features = Int64(HypercallNumber.allCases.reduce(0) { $0 | (1 << $1.rawValue) })
        try registry.register(HypercallNumber.abiInfo.rawValue, name: "abi_info", maximumRing: 3) { _ in
            (features << 16) | Int64(HypercallABI.version)
        }
        try registry.register(HypercallNumber.consoleWrite.rawValue, name: "console_write", maximumRing: 3) { ctx throws(HypercallError) in
            let bytes = try ctx.read(address: ctx.request.argument(0), length: ctx.request.argument(1))
            environment.consoleWrite(bytes)
            return Int64(bytes.count)
        }
        try registry.register(HypercallNumber.time.rawValue, name: "time", maximumRing: 3) { ctx throws(HypercallError) in
            guard ctx.request.argument(1) >= 16 else { throw .bufferTooSmall }
            var realtime = timespec(), monotonic = timespec()
            clock_gettime(CLOCK_REALTIME, &realtime)
            clock_gettime(CLOCK_MONOTONIC, &monotonic)
            try ctx.write(le64(nanoseconds(realtime)) + le64(nanoseconds(monotonic)), address: ctx.request.argument(0))
            return 0
        }
        try registry.register(HypercallNumber.vmName.rawValue, name: "vm_name", maximumRing: 3) { ctx throws(HypercallError) in
            let name = Array(environment.vmName.utf8)
            guard ctx.request.argument(1) >= UInt64(name.count) else { throw .bufferTooSmall }
            try ctx.write(name, address: ctx.request.argument(0))
            return Int64(name.count)
        }
        try registry.register(HypercallNumber.powerOff.rawValue, name: "power_off") { _ in
            environment.requestPowerOff()
            return 0
        }
        try registry.register(HypercallNumber.reset.rawValue, name: "reset") { _ in
            environment.requestReset()
            return 0
        }
        try registry.register(HypercallNumber.vmGeneration.rawValue, name: "vm_generation", maximumRing: 3) { ctx throws(HypercallError) in
            guard ctx.request.argument(1) >= 24 else { throw .bufferTooSmall }
            let (count, id) = environment.vmGeneration
            try ctx.write(le64(count) + id.prefix(16) + [UInt8](repeating: 0, count: max(0, 16 - id.count)), address: ctx.request.argument(0))
            return 0
        }
        try registry.register(HypercallNumber.log.rawValue, name: "log", maximumRing: 3) { ctx throws(HypercallError) in
            let level = ctx.request.argument(0)
            guard level <= 4 else { throw .invalidArgument }
            let bytes = try ctx.read(address: ctx.request.argument(1), length: ctx.request.argument(2), limit: 1024)
            environment.guestLog(level: Int(level), message: String(decoding: bytes, as: UTF8.self), vcpu: ctx.request.vcpu)
            return 0
        }
    }

    static func nanoseconds(_ t: timespec) -> UInt64 { UInt64(t.tv_sec) &* 1_000_000_000 &+ UInt64(t.tv_nsec) }
    static func le64(_ v: UInt64) -> [UInt8] { (0 ..< 8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
}
