import Foundation
import Testing

/// Whether KVM tests can run, and whether a missing /dev/kvm is a failure
/// (`VMM_REQUIRE_KVM=1`, set by .ci/run when /dev/kvm exists) or a skip.
enum KVMGate {
    static let available = access("/dev/kvm", R_OK | W_OK) == 0
    static let required = ProcessInfo.processInfo.environment["VMM_REQUIRE_KVM"] == "1"
    /// Run the test when KVM is there, or when it is required (so it fails loudly).
    static let shouldRun = available || required
    static let skipReason: Comment = "no usable /dev/kvm on this host (set VMM_REQUIRE_KVM=1 to fail instead)"
}

/// The package root, found from this file's path.
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The test guests of `Guests/`, built once per test run with the system as/ld/cc.
enum TestGuests {
    static let directory: Result<URL, GuestBuildError> = {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("swift-vmm-guests-\(getpid())")
        try? FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        let status = runProcess("/bin/bash", [packageRoot.appendingPathComponent("Guests/build.sh").path, out.path])
        return status.status == 0 ? .success(out) : .failure(GuestBuildError(output: status.output))
    }()

    /// The bytes of `Guests/NAME` as built.
    static func image(_ name: String) throws -> [UInt8] {
        let dir = try directory.get()
        return try [UInt8](Data(contentsOf: dir.appendingPathComponent("\(name).elf")))
    }

    /// The bytes of a built guest file named in full (e.g. "multiboot-aout.bin").
    static func file(_ name: String) throws -> [UInt8] {
        try [UInt8](Data(contentsOf: directory.get().appendingPathComponent(name)))
    }

    static func path(_ name: String) throws -> String {
        try directory.get().appendingPathComponent("\(name).elf").path
    }
}

struct GuestBuildError: Error, CustomStringConvertible {
    let output: String
    var description: String { "building Guests/ failed:\n\(output)" }
}

/// The environment of every program a test starts: this process's, with NIO's strict
/// mode on. vmmd and vmmctl's daemon commands use NIO; in strict mode a task for an event
/// loop that has stopped crashes the program instead of being logged, so the tests that
/// check an exit status see it.
let testChildEnvironment = ProcessInfo.processInfo.environment.merging(["SWIFTNIO_STRICT": "1"]) { $1 }

/// Runs a program to completion, capturing stdout and stderr together.
@discardableResult
func runProcess(_ executable: String, _ arguments: [String], stdin: String? = nil,
                environment: [String: String] = [:]) -> (status: Int32, output: String, stdout: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.environment = testChildEnvironment.merging(environment) { $1 }
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    let input = Pipe()
    process.standardInput = input
    do { try process.run() } catch { return (127, "\(error)", "") }
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try? input.fileHandleForWriting.close()
    let stdoutData = out.fileHandleForReading.readDataToEndOfFile()
    let stderrData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let so = String(decoding: stdoutData, as: UTF8.self)
    return (process.terminationStatus, so + String(decoding: stderrData, as: UTF8.self), so)
}
