import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

/// vmmd's entry: a plain command line (`DaemonOptions.fastParse`) runs without
/// ArgumentParser's parse; anything else (help, an unknown or repeated option) goes to
/// `VMMD`, which also gives the usage and the errors.
@main
enum VMMDMain {
    static func main() async {
        let arguments = CommandLine.arguments.dropFirst()
        guard let options = DaemonOptions.fastParse(arguments) else {
            await VMMD.main()
            return
        }
        #if DEBUG
        checkFastParse(options, Array(arguments))
        #endif
        do {
            try await options.run()
        } catch {
            VMMD.exit(withError: error)
        }
    }

    #if DEBUG
    /// Debug builds (the tests' binary) parse every command line the fast parse takes
    /// through ArgumentParser too and end with status 70 (EX_SOFTWARE) when the two
    /// differ, so that every test starting vmmd checks the fast parse.
    /// `VMMD_TRACE_PARSE=1` says that the fast parse took the command line.
    static func checkFastParse(_ options: DaemonOptions, _ arguments: [String]) {
        func printError(_ text: String) { _ = text.withCString { write(STDERR_FILENO, $0, strlen($0)) } }
        if getenv("VMMD_TRACE_PARSE") != nil { printError("vmmd: fast parse\n") }
        let expected = (try? VMMD.parse(arguments))?.options
        guard expected != options else { return }
        printError("vmmd: internal error: the fast parse of \(arguments) differs from ArgumentParser's\n"
                   + "  fast: \(options)\n  ArgumentParser: \(expected.map { "\($0)" } ?? "a refusal")\n")
        exit(70)
    }
    #endif
}
