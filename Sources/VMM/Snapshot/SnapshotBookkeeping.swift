import KVM
import Snapshot
import Synchronization

/// What a machine remembers between snapshots: the snapshot its memory was last saved
/// to or restored from (a diff's parent), how many restores lie behind it, and — for a
/// machine whose memory is mapped copy-on-write from a snapshot — every page that is no
/// longer the file's, which a full snapshot must write on top of the file's own data.
final class SnapshotBookkeeping: Sendable {
    struct State {
        /// The snapshot the dirty logs count from: the last one written, or the one
        /// restored. A diff needs it.
        var baseline: SnapshotID?
        /// What a snapshot asks KVM for, found once when the machine is built (a
        /// sandboxed worker may not ask KVM_GET_MSR_INDEX_LIST and KVM_CHECK_EXTENSION later).
        var msrIndices: [UInt32] = []
        var xsave: KVMVCPU.XSAVELayout?
        var generation: UInt64 = 0
        /// Random per machine instance: a clone restored from the same snapshot as
        /// another gets an ID of its own.
        var instanceID: [UInt8] = SnapshotID.random().bytes
        /// Per segment (in `GuestMemory.segments` order), a bit per page that differs from
        /// the snapshot file mapped copy-on-write; nil for memfd-backed memory.
        var sinceRestore: [[UInt64]]?
    }

    let state = Mutex(State())

    /// Learns what a snapshot of this machine asks KVM for.
    func prepare(kvm: KVMSystem, xsave: KVMVCPU.XSAVELayout?) {
        let indices = (try? kvm.msrIndexList()) ?? []
        state.withLock { $0.msrIndices = indices; $0.xsave = xsave }
    }
}

/// Bitmaps of pages (one bit per 4 KiB page, LSB first in each word), as KVM's dirty log
/// and `WriteLog` hand them out.
enum PageBitmap {
    static func or(_ a: inout [UInt64], _ b: [UInt64]) {
        if a.count < b.count { a += [UInt64](repeating: 0, count: b.count - a.count) }
        for i in b.indices { a[i] |= b[i] }
    }

    /// The runs of set bits, as byte ranges (pages × 4096), below `pages` pages.
    static func byteRuns(_ bitmap: [UInt64], pages: Int) -> [Range<UInt64>] {
        var runs: [Range<UInt64>] = []
        var start: Int?
        var p = 0
        let page = Int(MemoryDescription.pageSize)
        while p < pages {
            let w = p / 64 < bitmap.count ? bitmap[p / 64] : 0
            // Whole words that change nothing are skipped: dirty logs are mostly empty.
            if p % 64 == 0, (w == 0 && start == nil) || (w == .max && start != nil) {
                p += 64
                continue
            }
            let set = w & (1 << UInt64(p % 64)) != 0
            if set, start == nil {
                start = p
            } else if !set, let s = start {
                runs.append(UInt64(s * page) ..< UInt64(p * page))
                start = nil
            }
            p += 1
        }
        if let s = start { runs.append(UInt64(s * page) ..< UInt64(min(p, pages) * page)) }
        return runs
    }

    /// A bitmap with the pages of `runs` (byte ranges, page aligned) set.
    static func marking(_ runs: [Range<UInt64>], pages: Int, into bitmap: inout [UInt64]) {
        if bitmap.count < (pages + 63) / 64 { bitmap += [UInt64](repeating: 0, count: (pages + 63) / 64 - bitmap.count) }
        let page = MemoryDescription.pageSize
        for r in runs {
            var p = r.lowerBound / page
            while p < (r.upperBound + page - 1) / page, p < UInt64(pages) {
                bitmap[Int(p / 64)] |= 1 << (p % 64)
                p += 1
            }
        }
    }
}
