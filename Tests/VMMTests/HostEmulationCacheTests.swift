import Foundation
import Testing
import VMM

/// The probe's answer kept between processes (`HostEmulationCache`): believed only for the
/// same host key and from a file that is the caller's alone.
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
        let cache = HostEmulationCache(path: dir + "/entry", key: "swift-vmm host-emulation 1\nboot\nrelease\nkvm:1")
        #expect(cache.load() == nil)
        for bits in 0 ..< 8 {
            let answer = HostEmulation(refusesInstructions: bits & 1 != 0, syscallBroken: bits & 2 != 0, hypercallsHang: bits & 4 != 0)
            cache.store(answer)
            #expect(cache.load() == answer)
        }
    }

    @Test func anotherBootKernelOrModuleIsIgnored() {
        defer { removeDirectory() }
        HostEmulationCache(path: dir + "/entry", key: "k\nboot-1").store(HostEmulation(refusesInstructions: true))
        #expect(HostEmulationCache(path: dir + "/entry", key: "k\nboot-2").load() == nil)
        #expect(HostEmulationCache(path: dir + "/entry", key: "k").load() == nil)
        #expect(HostEmulationCache(path: dir + "/entry", key: "k\nboot-1").load() == HostEmulation(refusesInstructions: true))
    }

    @Test func anUnfinishedProbeIsNotStored() {
        defer { removeDirectory() }
        let cache = HostEmulationCache(path: dir + "/entry", key: "k")
        cache.store(HostEmulation(refusesInstructions: true, probeError: "vmcall: exit none"))
        #expect(cache.load() == nil)
        #expect(!FileManager.default.fileExists(atPath: dir + "/entry"))
    }

    @Test func aFileOthersMayWriteOrAStrangeLineIsRefused() throws {
        defer { removeDirectory() }
        let cache = HostEmulationCache(path: dir + "/entry", key: "k")
        cache.store(HostEmulation(syscallBroken: true))
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
}
