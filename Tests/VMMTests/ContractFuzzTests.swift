import Foundation
import Testing

/// schemathesis against a real vmmd, every check on (`--checks all`): the contract
/// (docs/api/openapi.yaml) says what the server does, and the server does what it says.
/// Bounded in time; a suite of its own so that it runs beside the others.
@Suite(.enabled(if: KVMGate.shouldRun, KVMGate.skipReason))
struct ContractFuzzTests {
    static let seconds = 45

    @Test func schemathesisFindsNothing() throws {
        let probe = runProcess("/usr/bin/env", ["python3", "-c", "import schemathesis"])
        try #require(probe.status == 0, "schemathesis is not installed (scripts/install-deps.sh installs it): \(probe.output)")
        let d = try DaemonFixture()
        let r = runProcess("/usr/bin/env", ["python3", packageRoot.appendingPathComponent("scripts/fuzz-api.py").path, d.socket,
                                            packageRoot.appendingPathComponent("docs/api/openapi.yaml").path, "\(Self.seconds)"])
        let summary = r.output.split(separator: "\n").filter { $0.contains("generated") || $0.hasPrefix("=") }.joined(separator: "\n")
        #expect(r.status == 0, "schemathesis failed:\n\(r.output.suffix(6000))")
        #expect(r.output.contains("passed") && !r.output.contains("Runtime Error"), "\(summary)")
        // The daemon took it all and still answers.
        #expect(d.api("GET", "/v1/version").status == 200)
        #expect(!d.log.contains("Fatal error"))
    }
}
