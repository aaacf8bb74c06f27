import ArgumentParser
import Boot
import Devices
import LongOptions
import VMM

// `vmmctl run` with the options a plain boot uses, parsed without ArgumentParser's
// machinery. A parse through ArgumentParser builds its argument table by reflecting over
// `Run` (Mirror, then dynamic casts that each scan the binary's ~5,000 protocol
// conformance records on first use) and decodes through `Decodable`: ~1.6 ms of CPU, a
// third of a small guest's whole `vmmctl run`; even `Run()` alone, whose property
// wrappers build their name sets, cost ~0.4 ms. So the fast parse fills a `RunRequest`,
// never a `Run`. It takes only long options it knows, each once, with values through the
// same `ExpressibleByArgument` initialisers ArgumentParser would call, and hands everything
// else (help, an unknown or repeated option, a value it would refuse, the options with
// their own value syntax) to ArgumentParser, which gives the usage and error messages.
// Debug builds parse every command line both ways and stop on a difference
// (`VMMCtl.checkFastParse`), so every test that runs `vmmctl run` checks the two agree.
extension RunRequest: LongOptionFillable {
    /// Sets the flag `option`; false when it is not one of the flags this parser takes.
    mutating func setFlag(_ option: Substring) -> Bool {
        switch option {
        case "debug-exit": debugExit = true
        case "no-reboot": noReboot = true
        case "reboot-on-triple-fault": rebootOnTripleFault = true
        case "hypercalls": hypercalls = true
        case "rng": rng = true
        case "virtio-cmdline": virtioCmdline = true
        case "verbose": verbose = true
        case "paused": snapshotRequest { $0.paused = true }
        case "restore-copy": snapshotRequest { $0.restoreCopy = true }
        case "snapshot-diff": snapshotRequest { $0.snapshotDiff = true }
        case "stop-after-snapshot": snapshotRequest { $0.stopAfterSnapshot = true }
        case "track-dirty-pages": snapshotRequest { $0.trackDirtyPages = true }
        default: return false
        }
        return true
    }

    /// Changes the snapshot options (made when the first of them is given, as
    /// `RunSnapshotOptions.request` is nil until one has a value of its own).
    private mutating func snapshotRequest(_ change: (inout RunSnapshotRequest) -> Void) {
        var s = snapshot ?? RunSnapshotRequest()
        change(&s)
        snapshot = s == RunSnapshotRequest() ? nil : s
    }

    /// Sets the option `option` from `value`; false for an option this parser leaves to
    /// ArgumentParser or a value the option's type refuses.
    mutating func set(option: Substring, to value: String) -> Bool {
        switch option {
        case "kernel": kernel = value
        case "initrd": initrd = value
        case "cmdline": cmdline = value
        case "memory":
            guard let parsed = UInt64(argument: value) else { return false }
            memory = parsed
        case "cpus":
            guard let parsed = Int(argument: value) else { return false }
            cpus = parsed
        case "topology": topology = value
        case "cpu-template": cpuTemplate = value
        case "serial":
            guard let parsed = SerialTarget(argument: value) else { return false }
            serial = parsed
        case "name": self.name = value
        case "emulation-assist":
            guard let parsed = EmulationAssistMode(argument: value) else { return false }
            emulationAssist = parsed
        case "virtio-notify": virtioNotify = value
        case "irqchip":
            guard let parsed = IRQChipMode(argument: value) else { return false }
            irqchip = parsed
        case "restore": snapshotRequest { $0.restore = value }
        case "clock": snapshotRequest { $0.clock = value }
        case "snapshot-to": snapshotRequest { $0.snapshotTo = value }
        default: return false
        }
        return true
    }
}
