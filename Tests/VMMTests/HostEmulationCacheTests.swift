import Foundation
import KVM
import Testing
import VMM

/// The probe's answer and the supported CPUID kept between processes (`HostEmulationCache`):
/// believed only for the same host key and from a file that is the caller's alone.
@Suite struct HostEmulationCacheTests {
    let dir: String

    init() throws {
        dir = NSTemporaryDirectory() + "swift-vmm-probe-cache-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false,
                                                attributes: [.posixPermissions: 0o700])
    }

    func removeDirectory() { try? FileManager.default.removeItem(atPath: dir) }

    @Test func everyAnswerComesBackForTheSameKey() {
        defer { removeDirectory() }
        let cache = HostEmulationCache(path: dir + "/entry", key: "swift-vmm host-emulation 3\nboot\nrelease\nkvm:1")
        #expect(cache.load() == nil)
        let cpuid = [CPUIDEntry(function: 0, eax: 0x1f, ebx: 0x756e_6547, ecx: 0x6c65_746e, edx: 0x4965_6e69),
                     CPUIDEntry(function: 7, index: 1, flags: 1, eax: .max, ebx: 0, ecx: 1 << 31, edx: 5)]
        for bits in 0 ..< 8 {
            let answer = HostEmulation(refusesInstructions: bits & 1 != 0, syscallBroken: bits & 2 != 0, hypercallsHang: bits & 4 != 0)
            let entry = HostEmulationCache.Entry(emulation: answer, supportedCPUID: bits & 1 != 0 ? cpuid : [])
            cache.store(entry)
            #expect(cache.load() == entry)
        }
    }

    /// vmmd stores the guest-debug probe's answer too (every flag combination round-trips);
    /// an entry without one (vmmctl's) loads with none, and a bad debug line refuses the entry.
    @Test func theGuestDebugAnswerComesBackWhenStored() throws {
        defer { removeDirectory() }
        let cache = HostEmulationCache(path: dir + "/entry", key: "k")
        let cpuid = [CPUIDEntry(function: 0, eax: 0x1f, ebx: 0x756e_6547, ecx: 0x6c65_746e, edx: 0x4965_6e69)]
        for bits in UInt32(0) ..< 1 << GuestDebugSupport.bitCount {
            let entry = HostEmulationCache.Entry(emulation: HostEmulation(syscallBroken: true), supportedCPUID: bits & 1 != 0 ? cpuid : [],
                                                 guestDebug: GuestDebugSupport(bits: bits))
            cache.store(entry)
            #expect(cache.load() == entry && cache.load()?.guestDebug?.bits == bits)
        }
        cache.store(.init(emulation: HostEmulation(), supportedCPUID: cpuid))
        #expect(cache.load()?.guestDebug == nil && cache.load()?.supportedCPUID == cpuid)
        var incomplete = GuestDebugSupport(bits: 1)
        incomplete.probeError = "KVM_SET_GUEST_DEBUG: Invalid argument"
        cache.store(.init(emulation: HostEmulation(), guestDebug: incomplete))
        #expect(cache.load()?.guestDebug == nil, "an unfinished debug probe replaced the entry")
        for bad in ["debug", "debug 40", "debug 1 2", "debug x"] {
            try Data("k\n\n\(bad)".utf8).write(to: URL(fileURLWithPath: dir + "/bad"))
            #expect(HostEmulationCache(path: dir + "/bad", key: "k").load() == nil, "\(bad)")
        }
    }

    @Test func aCPUIDLineThatIsNotSevenHexWordsRefusesTheEntry() throws {
        defer { removeDirectory() }
        for bad in ["0 0 0 1f 756e6547 6c65746e", "0 0 0 1f 756e6547 6c65746e 49656e69 7", "0 0 0 1f 756e6547 6c65746e x",
                    "0 0 0 1f 756e6547 6c65746e 149656e69a", ""] {
            try Data("k\n\n\(bad)".utf8).write(to: URL(fileURLWithPath: dir + "/entry"))
            #expect(HostEmulationCache(path: dir + "/entry", key: "k").load() == nil, "\(bad)")
        }
        try Data("k\n\n0 0 0 1f 756e6547 6c65746e 49656e69".utf8).write(to: URL(fileURLWithPath: dir + "/entry"))
        #expect(HostEmulationCache(path: dir + "/entry", key: "k").load()?.supportedCPUID
                == [CPUIDEntry(function: 0, eax: 0x1f, ebx: 0x756e_6547, ecx: 0x6c65_746e, edx: 0x4965_6e69)])
    }

    @Test func anotherBootKernelOrModuleIsIgnored() {
        defer { removeDirectory() }
        HostEmulationCache(path: dir + "/entry", key: "k\nboot-1").store(.init(emulation: HostEmulation(refusesInstructions: true)))
        #expect(HostEmulationCache(path: dir + "/entry", key: "k\nboot-2").load() == nil)
        #expect(HostEmulationCache(path: dir + "/entry", key: "k").load() == nil)
        #expect(HostEmulationCache(path: dir + "/entry", key: "k\nboot-1").load()?.emulation == HostEmulation(refusesInstructions: true))
    }

    @Test func anUnfinishedProbeIsNotStored() {
        defer { removeDirectory() }
        let cache = HostEmulationCache(path: dir + "/entry", key: "k")
        cache.store(.init(emulation: HostEmulation(refusesInstructions: true, probeError: "vmcall: exit none")))
        #expect(cache.load() == nil)
        #expect(!FileManager.default.fileExists(atPath: dir + "/entry"))
    }

    @Test func aFileOthersMayWriteOrAStrangeLineIsRefused() throws {
        defer { removeDirectory() }
        let cache = HostEmulationCache(path: dir + "/entry", key: "k")
        cache.store(.init(emulation: HostEmulation(syscallBroken: true)))
        try FileManager.default.setAttributes([.posixPermissions: 0o666], ofItemAtPath: dir + "/entry")
        #expect(cache.load() == nil)
        try Data("k\nsyscall-broken fast-path".utf8).write(to: URL(fileURLWithPath: dir + "/other"))
        #expect(HostEmulationCache(path: dir + "/other", key: "k").load() == nil)
        try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: dir + "/other")
        #expect(HostEmulationCache(path: dir + "/link", key: "k").load() == nil)
    }

    @Test func thisHostHasAStableKey() {
        let key = HostEmulationCache.hostKey()
        #expect(key != nil)
        #expect(key == HostEmulationCache.hostKey())
        #expect(key?.split(separator: "\n", omittingEmptySubsequences: false).count == 4)
    }

    /// vmmd keeps its answer apart from vmmctl's (its probe waits 200 ms for a vmcall,
    /// vmmctl's 10 ms), in the same private directory.
    @Test func vmmdsCacheIsItsOwnFile() throws {
        guard let ours = HostEmulationCache.standard(), let daemons = HostEmulationCache.standard(name: "vmmd-host-emulation") else {
            return   // neither root nor XDG_RUNTIME_DIR: no standard cache at all
        }
        #expect(ours.path != daemons.path)
        func directory(_ path: String) -> Substring { path[..<(path.lastIndex(of: "/") ?? path.endIndex)] }
        #expect(directory(ours.path) == directory(daemons.path))
        #expect(daemons.path.hasSuffix("vmmd-host-emulation") && ours.key == daemons.key)
    }
}
