import Foundation
import Testing
@testable import VMMService

/// The supplementary groups vmmd reads from /proc/PID/status for every connection.
struct CallerGroupsTests {
    @Test func groupsOfAStatusTextWithItsUid() {
        let status = Array("Name:\tcurl\nUmask:\t0022\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nFDSize:\t64\nGroups:\t4 24 27 100 \nNStgid:\t42\n".utf8)
        #expect(Caller.groups(fromStatus: status[...], uid: 1000) == [4, 24, 27, 100])
        #expect(Caller.groups(fromStatus: status[...], uid: 0) == [], "another uid: the pid was reused")
        let none = Array("Uid:\t7\t7\t7\t7\nGroups:\t\n".utf8)
        #expect(Caller.groups(fromStatus: none[...], uid: 7) == [])
        let hostile = Array("Uid:\t7 7 7 7\nGroups:\t1 99999999999 3\nUid:\t8\n".utf8)
        #expect(Caller.groups(fromStatus: hostile[...], uid: 7) == [], "the last Uid line decides")
        let overflow = Array("Uid:\t7\nGroups:\t1 2 99999999999 3".utf8)
        #expect(Caller.groups(fromStatus: overflow[...], uid: 7) == [1, 2], "a field past uint32 ends the list")
        #expect(Caller.groups(fromStatus: [], uid: 0) == [])
    }

    /// This process's own: what getgroups(2) says.
    @Test func ownGroupsMatchGetgroups() {
        var list = [gid_t](repeating: 0, count: 256)
        let n = getgroups(Int32(list.count), &list)
        #expect(n >= 0)
        let expected = list[0 ..< Int(max(n, 0))].map { UInt32($0) }
        #expect(Set(Caller.supplementaryGroups(pid: getpid(), uid: getuid())) == Set(expected))
        #expect(Caller.supplementaryGroups(pid: getpid(), uid: getuid() &+ 1) == [])
        #expect(Caller.supplementaryGroups(pid: -1, uid: 0) == [])
    }
}
