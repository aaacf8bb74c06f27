import Hypercalls
import Snapshot

/// The hypercalls the guest may be using, in section `hypercalls`: each call's number,
/// name and the least privileged ring it accepts. A restore onto a machine that does
/// not offer every one of them the same way is refused: the guest found them through
/// CPUID and `abi_info` and would get #UD instead. The call counters are statistics of
/// one run and start again at zero.
final class HypercallState: SnapshotStateful {
    let registry: HypercallRegistry
    init(registry: HypercallRegistry) { self.registry = registry }

    var snapshotKind: String { "hypercalls" }
    var snapshotVersion: UInt16 { 1 }

    func saveState(into e: inout SnapshotEncoder) throws(SnapshotError) {
        let calls = registry.registered.sorted { $0.key < $1.key }
        e.count(calls.count)
        for (number, entry) in calls { e.u64(number); e.string(entry.name); e.u8(UInt8(entry.maximumRing)) }
    }

    func restoreState(from d: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        let here = registry.registered
        let n = try d.count(max: 1 << 16, elementSize: 13, "hypercalls")
        for _ in 0 ..< n {
            let number = try d.u64(), name = try d.string(maxLength: 256, "hypercall name"), ring = Int(try d.u8())
            guard let entry = here[number], entry.name == name, entry.maximumRing == ring else {
                throw .mismatch("the guest had hypercall 0x\(String(number, radix: 16)) (\(name), rings 0-\(ring)), which this machine does not offer")
            }
        }
    }
}
