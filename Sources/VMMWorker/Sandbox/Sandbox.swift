import CSys
#if canImport(Glibc)
import Glibc
#endif

/// The worker's sandbox (the seed's "child in capability mode", in Linux terms), in
/// two steps:
///
/// `dropPrivileges`, as soon as the setup has arrived and before any guest-supplied byte
/// (kernel, initrd) is parsed:
/// 1. no_new_privs;
/// 2. drop to the unprivileged uid/gid the daemon chose (when running as root).
///
/// `restrict`, once the machine is built and before the guest's first instruction:
/// 3. close every descriptor the machine does not use;
/// 4. settle what glibc would otherwise read from files later (`settleLibraryState`);
/// 5. the seccomp allow-list of `SyscallPolicy`, on every thread (TSYNC).
enum Sandbox {
    static func dropPrivileges(uid: UInt32, gid: UInt32) throws {
        var rc = csys_set_no_new_privs()
        guard rc == 0 else { throw SandboxError("no_new_privs: \(String(cString: strerror(-rc)))") }
        if getuid() != uid || getgid() != gid || geteuid() != uid {
            rc = csys_drop_privileges(uid, gid)
            guard rc == 0 else { throw SandboxError("dropping to uid \(uid) gid \(gid): \(String(cString: strerror(-rc)))") }
        }
    }

    /// `keeping`: descriptors the machine's devices use (disk images, eventfds).
    static func restrict(keeping: Set<Int32> = []) throws {
        closeUnneededDescriptors(keeping: keeping)
        try settleLibraryState()
        let program = try SeccompFilter.program(SyscallPolicy.entries(ownPID: getpid()))
        let rc = csys_install_seccomp(program, UInt16(program.count))
        guard rc == 0 else { throw SandboxError("seccomp: \(rc < 0 ? String(cString: strerror(-rc)) : "thread \(rc) not synced")") }
    }

    /// Keeps stdio, the control link, what KVM and guest memory need (KVM's anonymous
    /// inodes, /dev/kvm, the memfds) and the devices' descriptors; closes anything else
    /// that leaked in.
    ///
    /// The open descriptors come from /proc/self/fd (a getdents or two), not from probing
    /// every number below a limit: that was ~1,000 fcntl calls, 5% of a worker's start-up
    /// CPU, and it missed a descriptor above the limit.
    static func closeUnneededDescriptors(keeping: Set<Int32> = []) {
        var open = [Int32](repeating: 0, count: 256)
        var count = csys_open_descriptors(4, &open, Int32(open.count))
        if count > Int32(open.count) {
            open = [Int32](repeating: 0, count: Int(count) + 64)
            count = csys_open_descriptors(4, &open, Int32(open.count))
        }
        if count >= 0 {
            open = Array(open.prefix(Int(min(count, Int32(open.count)))))
        } else {
            // No /proc (a chroot without it): probe the numbers a worker can have used.
            open = (4 ..< 1024).filter { fcntl($0, F_GETFD) >= 0 }
        }
        var buffer = [CChar](repeating: 0, count: 256)
        for fd in open where !keeping.contains(fd) {
            let n = readlink("/proc/self/fd/\(fd)", &buffer, buffer.count - 1)
            let target = n > 0 ? String(decoding: buffer[0 ..< n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
            let needed = target.hasPrefix("anon_inode:kvm") || target.hasPrefix("anon_inode:[kvm") || target == "/dev/kvm"
                || target.hasPrefix("/memfd:vmm:")
            if !needed { close(fd) }
        }
    }
}
