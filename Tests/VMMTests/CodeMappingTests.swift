import CSys
import Foundation
import Testing

/// Written at run time, so its page of the writable data segment is this process's own
/// copy: were that segment dropped like the code, it would read its initial 7 again.
nonisolated(unsafe) private var writableCanary = 7

/// `csys_drop_code_mappings`, which an idle worker calls to give back its start-up code
/// mappings (Worker.dropCodeMappingsSoon): it drops the read-only segments' pages and
/// never a writable one. Run in this test process, whose program is the test binary.
struct CodeMappingTests {
    /// Resident KiB of this program's executable mappings, from /proc/self/smaps.
    static func residentCodeKiB() throws -> Int {
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let smaps = try String(contentsOfFile: "/proc/self/smaps", encoding: .utf8)
        var inCode = false
        var total = 0
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let range = fields.first, range.contains("-"), fields.count >= 5 {
                inCode = fields.count >= 6 && fields[1].hasPrefix("r-x") && String(fields[5]) == exe
            } else if inCode, fields.first == "Rss:", fields.count >= 2, let kib = Int(fields[1]) {
                total += kib
            }
        }
        return total
    }

    @Test func dropsTheCodePagesAndKeepsTheWrittenData() throws {
        writableCanary = 42
        let before = try Self.residentCodeKiB()
        let dropped = csys_drop_code_mappings()
        let after = try Self.residentCodeKiB()
        #expect(dropped > 0, "csys_drop_code_mappings: \(dropped)")
        // Other tests run meanwhile and fault some code back; most stays out.
        #expect(after < before / 2, "resident code: \(before) KiB before, \(after) KiB after")
        #expect(writableCanary == 42)
    }
}
