import GuestMemory
import Snapshot

/// The emulation assist in section `emulation-assist`, present when the machine has one:
/// what the host needed (the probe's answer, which a restore takes instead of probing
/// again: the guest's CPUID and planted breakpoint were made for it) and the syscall
/// repair's breakpoint — its `0xCC` is in the saved memory, so the restored assist must
/// know the byte it covers. The assist's counters are statistics of one run.
extension EmulationAssist: SnapshotStateful {
    public var snapshotKind: String { "emulation-assist" }
    public var snapshotVersion: UInt16 { 1 }
    static let sectionName = "emulation-assist"

    public func saveState(into e: inout SnapshotEncoder) throws(SnapshotError) {
        Self.encode(host, into: &e)
        let site = syscallRepair?.plantedSite
        e.bool(site != nil)
        e.u64(site?.linear ?? 0); e.u64(site?.physical.raw ?? 0); e.u8(site?.original ?? 0)
    }

    public func restoreState(from d: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        let recorded = try Self.decodeHost(&d)
        guard recorded == host else {
            throw .mismatch("the snapshot's emulation assist was made for a KVM that \(recorded); this one \(host)")
        }
        let planted = try d.bool(), linear = try d.u64(), physical = try d.u64(), original = try d.u8()
        guard planted else { syscallRepair?.adopt(nil); return }
        guard let repair = syscallRepair else { throw d.malformed("a syscall-repair breakpoint on a host that needs none") }
        guard memory.contains(GuestAddress(physical), length: 1) else {
            throw d.malformed("a syscall-repair breakpoint at 0x\(String(physical, radix: 16)), outside guest memory")
        }
        repair.adopt(SyscallRepair.Site(linear: linear, physical: GuestAddress(physical), original: original))
    }

    static func encode(_ host: HostEmulation, into e: inout SnapshotEncoder) {
        e.bool(host.refusesInstructions); e.bool(host.syscallBroken); e.bool(host.hypercallsHang)
        e.bool(host.probeError != nil); e.string(host.probeError ?? "")
    }

    static func decodeHost(_ d: inout SnapshotDecoder) throws(SnapshotError) -> HostEmulation {
        let refuses = try d.bool(), syscall = try d.bool(), hangs = try d.bool()
        let failed = try d.bool(), why = try d.string(maxLength: 4096, "probe error")
        return HostEmulation(refusesInstructions: refuses, syscallBroken: syscall, hypercallsHang: hangs,
                             probeError: failed ? why : nil)
    }

    /// The host a snapshot's assist was made for, read ahead of the restore (nil: the
    /// snapshot's machine had no assist, and the restored one has none).
    static func recordedHost(in state: StateFile) throws(SnapshotError) -> HostEmulation? {
        guard let section = state.section(sectionName) else { return nil }
        var d = try section.decoder(supporting: [1])
        return try decodeHost(&d)
    }
}
