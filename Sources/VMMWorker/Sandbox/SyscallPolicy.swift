import CKVM
import CSys
#if canImport(Glibc)
import Glibc
#endif

/// What a worker may do once sandboxed: the one list the seccomp filter is generated
/// from. Everything not here kills the whole worker (SECCOMP_RET_KILL_PROCESS); the
/// daemon reports it as crashed with SIGSYS.
///
/// The list is what a running machine needs and nothing more: no execve, no open or
/// stat of any path, no new sockets or connections, no fork, no ptrace, no changes of
/// identity, no executable mappings, and ioctl only with the KVM requests the machine
/// uses. Every entry says why it is there (the README's security section prints it).
///
/// Nothing here fails soft for the sake of a library: what glibc would read lazily from
/// files after the filter is on (malloc's arena limit, the time zone) is settled before it
/// (`Sandbox.settleLibraryState`), so an `openat` from a sandboxed worker is always a
/// finding, and kills it.
enum SyscallPolicy {
    /// How one system call is allowed.
    enum Rule {
        /// Always.
        case allow
        /// Only when the low 32 bits of argument `index` are one of `values`.
        case argumentIn(index: Int, values: [UInt32])
        /// Only when argument `index` has every bit of `mask` set.
        case argumentHasBits(index: Int, mask: UInt32)
        /// Only when argument `index` has none of the bits of `mask`.
        case argumentLacksBits(index: Int, mask: UInt32)
        /// Fails with this errno instead of running (the caller has a fallback).
        case fail(errno: Int32)
    }

    struct Entry {
        let name: String
        let number: Int32
        let rule: Rule
        /// Built only for `--print-policy`: a worker compiles the filter from the other
        /// fields at every start, and the ioctl entry's text joins ~40 names.
        private let explanation: () -> String
        var why: String { explanation() }

        init(name: String, number: Int32, rule: Rule, why: @autoclosure @escaping () -> String) {
            self.name = name; self.number = number; self.rule = rule; self.explanation = why
        }
    }

    /// The KVM requests a built machine issues: running vCPUs, their state for resets,
    /// reboots, hypercalls and an attached debugger, and interrupt injection. Not KVM_CREATE_VM, not
    /// KVM_CREATE_VCPU, not KVM_SET_USER_MEMORY_REGION: the machine is complete before
    /// the filter goes on, and a compromised worker cannot reshape it.
    static let kvmRequests: [(String, UInt)] = [
        ("KVM_RUN", CKVM_RUN),
        ("KVM_GET_REGS", CKVM_GET_REGS), ("KVM_SET_REGS", CKVM_SET_REGS),
        ("KVM_GET_SREGS", CKVM_GET_SREGS), ("KVM_SET_SREGS", CKVM_SET_SREGS),
        ("KVM_GET_FPU", CKVM_GET_FPU), ("KVM_SET_FPU", CKVM_SET_FPU),
        ("KVM_GET_MSRS", CKVM_GET_MSRS), ("KVM_SET_MSRS", CKVM_SET_MSRS),
        ("KVM_GET_LAPIC", CKVM_GET_LAPIC), ("KVM_SET_LAPIC", CKVM_SET_LAPIC),
        ("KVM_GET_VCPU_EVENTS", CKVM_GET_VCPU_EVENTS), ("KVM_SET_VCPU_EVENTS", CKVM_SET_VCPU_EVENTS),
        ("KVM_GET_MP_STATE", CKVM_GET_MP_STATE), ("KVM_SET_MP_STATE", CKVM_SET_MP_STATE),
        ("KVM_GET_XCRS", CKVM_GET_XCRS), ("KVM_SET_XCRS", CKVM_SET_XCRS),
        ("KVM_GET_DEBUGREGS", CKVM_GET_DEBUGREGS), ("KVM_SET_DEBUGREGS", CKVM_SET_DEBUGREGS),
        ("KVM_GET_CPUID2", CKVM_GET_CPUID2),
        ("KVM_IRQ_LINE", CKVM_IRQ_LINE), ("KVM_IRQ_LINE_STATUS", CKVM_IRQ_LINE_STATUS),
        ("KVM_SIGNAL_MSI", CKVM_SIGNAL_MSI), ("KVM_NMI", CKVM_NMI),
        // The split irqchip: the VMM's IOAPIC publishes its unmasked entries as this VM's
        // MSI routes whenever the guest reprograms it (they reach only this VM's vCPUs).
        ("KVM_SET_GSI_ROUTING", CKVM_SET_GSI_ROUTING),
        // `vmmctl gdb`: breakpoints, watchpoints and single-step (the only addition the
        // debugger needs: its bytes travel on the daemon link, its threads are clones).
        ("KVM_SET_GUEST_DEBUG", CKVM_SET_GUEST_DEBUG),
        // The emulation assist's ldmxcsr/stmxcsr: MXCSR through the XSAVE area.
        ("KVM_GET_XSAVE", CKVM_GET_XSAVE), ("KVM_GET_XSAVE2", CKVM_GET_XSAVE2), ("KVM_SET_XSAVE", CKVM_SET_XSAVE),
    ] + snapshotRequests

    /// What a snapshot reads from KVM besides the vCPU state above (the XSAVE area too,
    /// which the assist's list already allows): the interrupt controllers, the PIT, the
    /// clock, the dirty log, the TSC frequency. Only reads: a restore's KVM_SET_* calls
    /// all happen before the filter goes on.
    static let snapshotRequests: [(String, UInt)] = [
        ("KVM_GET_IRQCHIP", CKVM_GET_IRQCHIP), ("KVM_GET_PIT2", CKVM_GET_PIT2), ("KVM_GET_CLOCK", CKVM_GET_CLOCK),
        ("KVM_GET_DIRTY_LOG", CKVM_GET_DIRTY_LOG), ("KVM_GET_TSC_KHZ", CKVM_GET_TSC_KHZ),
    ]

    /// CLONE_THREAD (<linux/sched.h>; glibc hides it without _GNU_SOURCE).
    static let cloneThread: UInt32 = 0x0001_0000

    /// The allow-list. `ownPID` pins signals to this process.
    static func entries(ownPID: Int32) -> [Entry] {
        [
            Entry(name: "read", number: Int32(SYS_read), rule: .allow, why: "control messages from the daemon; a virtio device thread waiting on its ioeventfd; virtio-net frames from the tap"),
            Entry(name: "recvmsg", number: Int32(SYS_recvmsg), rule: .allow, why: "control message headers; virtio-vsock: host sockets' bytes straight into guest memory, and the sockets vmmd connects for the guest (SCM_RIGHTS on the broker link); a snapshot's files on the descriptor channel"),
            Entry(name: "sendto", number: Int32(SYS_sendto), rule: .allow, why: "messages to the daemon: console output, state, statistics; virtio-vsock: the OK line and bytes a slow host socket could not take at once"),
            Entry(name: "sendmsg", number: Int32(SYS_sendmsg), rule: .allow, why: "virtio-vsock: guest bytes straight from guest memory to host sockets"),
            Entry(name: "recvfrom", number: Int32(SYS_recvfrom), rule: .allow, why: "virtio-vsock: a host connection's CONNECT line (peeked, then read)"),
            Entry(name: "accept4", number: Int32(SYS_accept4), rule: .allow, why: "virtio-vsock: host connections on the listening socket vmmd passed (the worker creates no socket)"),
            Entry(name: "shutdown", number: Int32(SYS_shutdown), rule: .allow, why: "virtio-vsock: the guest shut its sending side, so the host socket's is shut too"),
            Entry(name: "epoll_wait", number: Int32(SYS_epoll_wait), rule: .allow, why: "virtio-vsock and virtio-net: each device thread's one wait over its queues and host descriptors"),
            Entry(name: "epoll_ctl", number: Int32(SYS_epoll_ctl), rule: .allow, why: "virtio-vsock: watching host connections as they come and go"),
            Entry(name: "writev", number: Int32(SYS_writev), rule: .allow, why: "virtio-net: a guest frame (header and buffers) to the tap in one call"),
            Entry(name: "write", number: Int32(SYS_write), rule: .allow, why: "a last error line on stderr; eventfd signals (a virtio device's irqfd, waking a device thread)"),
            Entry(name: "pread64", number: Int32(SYS_pread64), rule: .allow, why: "KVM binary statistics files (KVM_GET_STATS_FD, opened before); virtio-blk reads into one guest buffer"),
            Entry(name: "preadv", number: Int32(SYS_preadv), rule: .allow, why: "virtio-blk reads from the disk image into guest memory"),
            Entry(name: "pwritev", number: Int32(SYS_pwritev), rule: .allow, why: "virtio-blk writes from guest memory to the disk image; a snapshot's memory file"),
            Entry(name: "pwrite64", number: Int32(SYS_pwrite64), rule: .allow, why: "virtio-blk writes from one guest buffer, and WRITE_ZEROES where the file system cannot zero a range; a snapshot's state file and manifest"),
            Entry(name: "io_uring_enter", number: Int32(SYS_io_uring_enter), rule: .allow, why: "virtio-blk on an O_DIRECT disk: a batch of reads and writes on the disk's io_uring, made before the sandbox and restricted to IORING_OP_READ/WRITE of that disk image alone (io_uring_setup and io_uring_register stay forbidden)"),
            Entry(name: "fdatasync", number: Int32(SYS_fdatasync), rule: .allow, why: "virtio-blk FLUSH: the guest's writes reach stable storage; a snapshot's files before it counts as written"),
            Entry(name: "fallocate", number: Int32(SYS_fallocate), rule: .allow, why: "virtio-blk DISCARD and WRITE_ZEROES (punching holes, zeroing ranges)"),
            Entry(name: "fcntl", number: Int32(SYS_fcntl), rule: .argumentIn(index: 1, values: [UInt32(F_GETFL), UInt32(F_SETFL)]),
                  why: "virtio-blk on an O_DIRECT disk: the flag off for one request whose guest buffers are not aligned, then back on"),
            Entry(name: "getrandom", number: Int32(SYS_getrandom), rule: .allow, why: "virtio-rng: entropy for the guest; a snapshot's random ID"),
            Entry(name: "ftruncate", number: Int32(SYS_ftruncate), rule: .allow, why: "a snapshot's memory file gets the guest's RAM size up front, all holes (sparse)"),
            Entry(name: "lseek", number: Int32(SYS_lseek), rule: .allow, why: "a snapshot finds the pages that hold data (SEEK_DATA/SEEK_HOLE on the guest memfd or the snapshot file it maps)"),
            Entry(name: "close", number: Int32(SYS_close), rule: .allow, why: "descriptors that come with stray messages; teardown"),
            Entry(name: "ioctl", number: Int32(SYS_ioctl),
                  rule: .argumentIn(index: 1, values: kvmRequests.map { UInt32(truncatingIfNeeded: $0.1) } + [CSYS_TUNSETOFFLOAD]),
                  why: "KVM, limited to: " + kvmRequests.map(\.0).joined(separator: ", ")
                    + " (the last \(snapshotRequests.count) for snapshots); and TUNSETOFFLOAD (virtio-net: the tap's offloads follow the features the guest accepted)"),
            Entry(name: "mmap", number: Int32(SYS_mmap), rule: .argumentLacksBits(index: 2, mask: UInt32(PROT_EXEC)),
                  why: "the allocator and thread stacks; never executable"),
            Entry(name: "mprotect", number: Int32(SYS_mprotect), rule: .argumentLacksBits(index: 2, mask: UInt32(PROT_EXEC)),
                  why: "thread stack guards; never executable"),
            Entry(name: "munmap", number: Int32(SYS_munmap), rule: .allow, why: "the allocator"),
            Entry(name: "mremap", number: Int32(SYS_mremap), rule: .allow, why: "the allocator (large reallocations)"),
            Entry(name: "madvise", number: Int32(SYS_madvise), rule: .allow, why: "the allocator and glibc giving back thread stacks"),
            Entry(name: "brk", number: Int32(SYS_brk), rule: .allow, why: "the allocator"),
            Entry(name: "futex", number: Int32(SYS_futex), rule: .allow, why: "locks, semaphores, thread joins"),
            Entry(name: "sched_yield", number: Int32(SYS_sched_yield), rule: .allow, why: "spinning locks"),
            Entry(name: "nanosleep", number: Int32(SYS_nanosleep), rule: .allow, why: "the halt probe's 1 ms waits"),
            Entry(name: "clock_nanosleep", number: Int32(SYS_clock_nanosleep), rule: .allow, why: "the halt probe's 1 ms waits"),
            Entry(name: "clock_gettime", number: Int32(SYS_clock_gettime), rule: .allow, why: "timeouts (when the vDSO cannot answer)"),
            Entry(name: "clone", number: Int32(SYS_clone), rule: .argumentHasBits(index: 0, mask: cloneThread),
                  why: "vCPU, waiter and virtio device threads; CLONE_THREAD required, so never a new process"),
            Entry(name: "clone3", number: Int32(SYS_clone3), rule: .fail(errno: ENOSYS),
                  why: "refused with ENOSYS so that glibc falls back to clone, whose flags the filter can check"),
            Entry(name: "set_robust_list", number: Int32(SYS_set_robust_list), rule: .allow, why: "glibc thread start"),
            Entry(name: "rseq", number: Int32(SYS_rseq), rule: .allow, why: "glibc thread start"),
            Entry(name: "rt_sigaction", number: Int32(SYS_rt_sigaction), rule: .allow, why: "the vCPU kick signal's handler"),
            Entry(name: "rt_sigprocmask", number: Int32(SYS_rt_sigprocmask), rule: .allow, why: "unblocking the kick signal on vCPU threads"),
            Entry(name: "rt_sigreturn", number: Int32(SYS_rt_sigreturn), rule: .allow, why: "returning from the kick signal's handler"),
            Entry(name: "tgkill", number: Int32(SYS_tgkill), rule: .argumentIn(index: 0, values: [UInt32(bitPattern: ownPID)]),
                  why: "kicking this worker's own vCPU threads out of KVM_RUN (no other process)"),
            Entry(name: "getpid", number: Int32(SYS_getpid), rule: .allow, why: "glibc (pthread_kill)"),
            Entry(name: "gettid", number: Int32(SYS_gettid), rule: .allow, why: "glibc (pthread_kill)"),
            Entry(name: "prctl", number: Int32(SYS_prctl), rule: .argumentIn(index: 0, values: [UInt32(PR_SET_NAME)]),
                  why: "naming threads (PR_SET_NAME only)"),
            Entry(name: "exit", number: Int32(SYS_exit), rule: .allow, why: "a thread ends"),
            Entry(name: "exit_group", number: Int32(SYS_exit_group), rule: .allow, why: "the worker ends"),
        ]
    }

    /// A rule for `--print-filter`: allow | fail ERRNO | in INDEX VALUE... |
    /// has INDEX MASK | lacks INDEX MASK.
    static func machineReadable(_ rule: Rule) -> String {
        switch rule {
        case .allow: return "allow"
        case .fail(let e): return "fail \(e)"
        case .argumentIn(let index, let values): return "in \(index) " + values.map { "\($0)" }.joined(separator: " ")
        case .argumentHasBits(let index, let mask): return "has \(index) \(mask)"
        case .argumentLacksBits(let index, let mask): return "lacks \(index) \(mask)"
        }
    }

    /// A rule in words, for the README's table.
    static func describe(_ rule: Rule) -> String {
        switch rule {
        case .allow: return "always"
        case .argumentIn(let index, let values) where index == 0 && values == [0]:
            return "only for this worker's own pid"
        case .argumentIn(let index, let values) where values.count == 1:
            return "only with argument \(index) = \(values[0])"
        case .argumentIn(let index, _): return "only with the listed values of argument \(index)"
        case .argumentHasBits(let index, let mask): return "only with bits 0x\(String(mask, radix: 16)) set in argument \(index)"
        case .argumentLacksBits(let index, let mask): return "only without bits 0x\(String(mask, radix: 16)) in argument \(index)"
        case .fail(let e): return "fails with errno \(e)"
        }
    }
}
