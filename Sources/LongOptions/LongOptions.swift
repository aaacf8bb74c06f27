/// The one command-line scanner behind the executables' fast parses (`vmmctl run`,
/// `vmmd`): long options only (`--name value`, `--name=value`, `--flag`), each at most
/// once, so that a plain command line is parsed without ArgumentParser's reflection over
/// the command (~1.5-2 ms of CPU in a fresh static process). Anything else makes the
/// scan fail, and the caller hands the whole line to ArgumentParser, which gives the
/// usage and the error messages: the fast parse never decides an error itself.
public enum LongOptions {
    /// Scans `arguments`. For each option it calls `take(name, nil)` first: true means a
    /// flag, taken (refused when the argument gave it a value). Otherwise it reads the
    /// option's value (after `=`, or the next argument unless that looks like an option, as
    /// ArgumentParser reads `--cmdline -x`) and calls `take(name, value)`, which returns
    /// false for an option or value it leaves to ArgumentParser. False when anything was
    /// refused: a non-option argument, an empty name or value, a repeated option, a flag
    /// given a value, a missing value.
    public static func scan(_ arguments: ArraySlice<String>, _ take: (Substring, String?) -> Bool) -> Bool {
        var seen: [Substring] = []
        var index = arguments.startIndex
        while index < arguments.endIndex {
            let argument = arguments[index]
            index += 1
            guard argument.hasPrefix("--") else { return false }
            var name = argument.dropFirst(2)
            var inlineValue: Substring?
            if let equals = name.firstIndex(of: "=") {
                inlineValue = name[name.index(after: equals)...]
                name = name[..<equals]
            }
            guard !name.isEmpty, !seen.contains(name) else { return false }
            seen.append(name)
            // A flag is taken as soon as it is named; one given a value is refused.
            if take(name, nil) {
                guard inlineValue == nil else { return false }
                continue
            }
            let value: String
            if let inlineValue {
                value = String(inlineValue)
            } else {
                guard index < arguments.endIndex, !arguments[index].hasPrefix("-") else { return false }
                value = arguments[index]
                index += 1
            }
            guard !value.isEmpty, take(name, value) else { return false }
        }
        return true
    }
}

/// A plain value a command line of long options fills: its flags and options by name.
/// `fastParse` is the whole fast parse of such a command (`vmmctl run`, `vmmd`).
public protocol LongOptionFillable {
    init()
    /// Sets the flag `name`; false when it is not a flag this parser takes.
    mutating func setFlag(_ name: Substring) -> Bool
    /// Sets the option `name` from `value`; false for an option left to ArgumentParser or a
    /// value its type refuses.
    mutating func set(option name: Substring, to value: String) -> Bool
}

extension LongOptionFillable {
    /// The value `arguments` describe, or nil when ArgumentParser must parse them.
    @inlinable
    public static func fastParse(_ arguments: ArraySlice<String>) -> Self? {
        var filled = Self()
        let taken = LongOptions.scan(arguments) { name, value in
            guard let value else { return filled.setFlag(name) }
            return filled.set(option: name, to: value)
        }
        return taken ? filled : nil
    }
}
