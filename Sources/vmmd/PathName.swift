/// The two path operations vmmd needs, on plain strings: vmmd links FoundationEssentials
/// only (no NSString), which keeps Foundation's internationalisation and ICU out of the
/// daemon's binary and its start-up.
enum PathName {
    /// `path` without its last component, as NSString's deletingLastPathComponent:
    /// "/run/vmm/vmmd.sock" -> "/run/vmm", "/vmmd.sock" -> "/", "vmmd.sock" -> "".
    static func directory(of path: String) -> String {
        var p = Substring(path)
        while p.count > 1, p.hasSuffix("/") { p = p.dropLast() }
        guard let slash = p.lastIndex(of: "/") else { return "" }
        return slash == p.startIndex ? "/" : String(p[..<slash])
    }

    /// `name` inside `directory` ("" for the current one).
    static func join(_ directory: String, _ name: String) -> String {
        if directory.isEmpty { return name }
        return directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }
}
