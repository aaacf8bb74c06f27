// CSys: the small Linux system helpers the daemon and its workers need and that
// Swift cannot express without raw pointer work: descriptor passing (SCM_RIGHTS),
// peer credentials, pidfds, per-thread file-system identity and spawning a worker.
// Each function is a thin, documented wrapper; errors are returned as -errno.
#ifndef CSYS_H
#define CSYS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <linux/filter.h>
#include <sys/epoll.h>

/// Most descriptors one message may carry (kvm + memfds + kernel + initrd + spare).
#define CSYS_MAX_FDS 16

/// sendmsg(2) of `len` bytes with `nfds` descriptors as one SCM_RIGHTS message.
/// Returns the bytes sent, or -errno.
ssize_t csys_send_with_fds(int sock, const void *data, size_t len, const int *fds, int nfds);

/// recvmsg(2) of at most `len` bytes; descriptors that arrive (MSG_CMSG_CLOEXEC) are
/// stored in `fds` (at most `maxfds`, extra ones are closed) and counted in `*nfds`.
/// Returns the bytes read (0 at end of stream), or -errno.
ssize_t csys_recv_with_fds(int sock, void *data, size_t len, int *fds, int maxfds, int *nfds);

/// The layout of `struct ucred` (SO_PEERCRED), which glibc only declares with
/// _GNU_SOURCE: for callers that get the option through a generic getsockopt.
struct csys_ucred {
    pid_t pid;
    uid_t uid;
    gid_t gid;
};

/// SO_PEERCRED of a connected Unix socket. Returns 0 or -errno.
int csys_peer_credentials(int sock, pid_t *pid, uid_t *uid, gid_t *gid);

/// SO_PEERGROUPS (Linux 4.13+): the peer's supplementary groups at connect time.
/// Returns the number of groups stored (at most `max`), or -errno.
int csys_peer_groups(int sock, gid_t *groups, int max);

/// pidfd_open(2). Returns the descriptor (O_CLOEXEC) or -errno.
int csys_pidfd_open(pid_t pid);

/// pidfd_send_signal(2). Returns 0 or -errno.
int csys_pidfd_send_signal(int pidfd, int sig);

/// waitid(P_PIDFD, WEXITED | options): reaps the child behind `pidfd`.
/// Returns 1 when it was reaped (`*code` is CLD_EXITED/CLD_KILLED/CLD_DUMPED and
/// `*status` the exit status or signal), 0 if it has not exited (WNOHANG), or -errno.
int csys_pidfd_wait(int pidfd, int options, int *code, int *status);

/// Spawns the worker executable `path` as `path --parent <this pid>` with an empty
/// environment, its descriptor 3 a duplicate of `control_fd`, stdin /dev/null, stdout
/// and stderr duplicates of `log_fd` (or /dev/null when it is -1), every signal at its
/// default disposition and none blocked. Every other descriptor the caller holds must
/// be close-on-exec (the worker closes any stray one too); `log_fd` must not be 3.
/// Returns the pid or -errno.
pid_t csys_spawn_worker(const char *path, int control_fd, int log_fd);

/// On the calling thread only (raw system calls, not glibc's process-wide versions):
/// file-system uid/gid and supplementary groups, so that open(2) checks the caller's
/// permissions. Needs CAP_SETUID/CAP_SETGID. Returns 0 or -errno; -EPERM when the
/// identity did not take.
int csys_thread_assume_fs_identity(uid_t uid, gid_t gid, const gid_t *groups, int ngroups);

/// prctl(PR_SET_PDEATHSIG, sig). Returns 0 or -errno.
int csys_set_parent_death_signal(int sig);

/// close_range(first, ~0U, 0): closes every descriptor from `first` up. Returns 0 or -errno.
int csys_close_from(int first);

/// memfd_create(2) + ftruncate + F_SEAL_SHRINK|F_SEAL_GROW: a sealed, zero-filled
/// memfd of `size` bytes for guest memory. Returns the descriptor or -errno.
int csys_guest_memfd(const char *name, uint64_t size);

/// Opens `path` read-only (close-on-exec, no controlling tty, non-blocking) for use
/// as a VM image on behalf of a client, refusing what must never be handed over: magic
/// links such as /proc/self/fd/N (openat2 RESOLVE_NO_MAGICLINKS; where openat2 is
/// missing, any path under /proc or /dev/fd), files on procfs or sysfs, and sealable
/// memfds (guest memory). Returns the descriptor, or -errno (-EPERM for a refusal).
int csys_open_image(const char *path);

/// Opens `path` as a VM disk image on behalf of a client, with the refusals of
/// `csys_open_image`: read-write when `writable`, O_DIRECT when `direct`, close-on-exec,
/// no controlling tty, non-blocking. Returns the descriptor or -errno (-EPERM for a refusal).
int csys_open_disk(const char *path, int writable, int direct);

/// Creates the directory `path` (mode 0700), or takes it when it exists and is empty,
/// for a snapshot written on behalf of a client, with the refusals of `csys_open_image`.
/// Returns an O_DIRECTORY descriptor, or -errno (-ENOTEMPTY when it holds anything).
int csys_snapshot_directory(const char *path);

/// openat(dir, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600): a new file
/// of a snapshot. Returns the descriptor or -errno.
int csys_create_in(int dir, const char *name);

/// prctl(PR_SET_NO_NEW_PRIVS, 1): no exec can ever grant privileges again. Returns 0 or -errno.
int csys_set_no_new_privs(void);

/// Drops to `uid`/`gid` for good: no supplementary groups, real, effective and saved
/// ids all set, then checked (and that uid 0 cannot be regained when `uid` is not 0).
/// Returns 0 or -errno.
int csys_drop_privileges(uid_t uid, gid_t gid);

/// seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC) with `count` BPF
/// instructions: every thread of the process gets the filter. Needs no_new_privs (or
/// CAP_SYS_ADMIN). Returns 0, -errno, or a positive thread id that could not be synced.
int csys_install_seccomp(const struct sock_filter *filter, unsigned short count);

/// Fixes glibc malloc's arena limit now (mallopt(M_ARENA_MAX)) at glibc's own default,
/// 8 per online CPU: otherwise the first thread that needs a new arena past the eighth
/// computes it by reading /sys/devices/system/cpu/online, which a sandboxed process
/// cannot open. Returns the limit set, or -1.
int csys_settle_malloc_arenas(void);
/* Makes glibc read /proc/sys/vm/overcommit_memory now, which it does the first time a
   thread's heap shrinks (check_may_shrink_heap): a thread allocates and frees enough
   to trim its arena. Returns 0, or -errno if the thread could not be run. */
int csys_settle_heap_shrink(void);
/// madvise(MADV_DONTNEED) over the program's own read-only, non-writable PT_LOAD
/// segments (its code, Swift metadata and unwind tables), found with dl_iterate_phdr.
/// Those pages are clean file pages, shared with every process running the binary
/// through the page cache: dropping this process's mappings of them loses nothing, and
/// the ones it still runs fault back in. Writable segments (and RELRO, which is a
/// writable PT_LOAD made read-only), a segment's zero-filled tail page and a program with
/// text relocations are never touched. Breakpoints or uprobes placed in the code before
/// the call (private copies of its pages) are dropped with it. Returns the bytes advised,
/// or -errno.
long csys_drop_code_mappings(void);
/// The process's open descriptors numbered `from` or above, from /proc/self/fd (the
/// directory's own descriptor left out), in `fds`. Returns how many are open (more than
/// `capacity` means `fds` holds the first `capacity`), or -errno when /proc/self/fd
/// cannot be read.
int csys_open_descriptors(int from, int *fds, int capacity);

/// Creates a listening Unix stream socket at `path` (close-on-exec). Returns it or -errno.
int csys_listen_unix(const char *path, int backlog);

/// `csys_listen_unix`, except that a socket file at `path` nobody listens on (left by
/// a process that died) is replaced; anything else there is -EADDRINUSE.
int csys_listen_unix_replacing_stale(const char *path, int backlog);

/// Connects a Unix stream socket to `path` (close-on-exec). Returns it or -errno.
int csys_connect_unix(const char *path);

/// Connects a non-blocking Unix stream socket to `path` (close-on-exec): what a VMM
/// does for a vsock connection, where a listener with a full backlog must not block it
/// (that is -EAGAIN). Returns the socket (still non-blocking) or -errno.
int csys_connect_unix_nonblocking(const char *path);

/// send(2) with MSG_DONTWAIT | MSG_NOSIGNAL of `len` bytes from `base + offset` (a
/// Swift array's storage: the caller checks the bounds). Returns the bytes sent or -errno.
ssize_t csys_send_from(int sock, const void *base, size_t offset, size_t len);

/// SO_RCVTIMEO: reads on `sock` fail with EAGAIN after `seconds` (0: wait forever).
int csys_set_receive_timeout(int sock, int seconds);

/// accept4(SOCK_CLOEXEC | SOCK_NONBLOCK): a connection for an event loop (on a
/// non-blocking listener, -EAGAIN when none is waiting). Returns it or -errno.
int csys_accept_nonblocking(int listener);

/// accept4(SOCK_CLOEXEC). Returns the connection or -errno.
int csys_accept(int listener);

/// Creates a listening TCP socket (close-on-exec, SO_REUSEADDR) on the IPv4 address
/// `ipv4` (dotted quad) and `port` (0: any free port). Returns it or -errno
/// (-EINVAL for an address that does not parse).
int csys_listen_tcp(const char *ipv4, uint16_t port, int backlog);

/// The local port a TCP socket is bound to (getsockname). Returns it or -errno.
int csys_local_port(int sock);

/// TCP_NODELAY on: small packets go out at once (a debugger's request/reply traffic).
/// Returns 0 or -errno (-ENOTSUP-like errors for a Unix socket are harmless).
int csys_set_no_delay(int sock);

/// Opens /dev/net/tun (close-on-exec, non-blocking) and attaches it to the tap `name`
/// with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR (TUNSETIFF). Returns the descriptor or -errno.
int csys_tap_open(const char *name);

/// TUNGETIFF: the interface's name (NUL-terminated, 16 bytes) and IFF_* flags.
/// Returns 0 or -errno.
int csys_tap_info(int fd, char name[16], unsigned int *flags);

/// TUNSETVNETHDRSZ: the size of the virtio-net header in front of every frame.
int csys_tap_set_vnet_header_size(int fd, int size);

/// TUNSETOFFLOAD: which offloads (TUN_F_CSUM, TUN_F_TSO4, ...) frames read from the
/// tap may use. Returns 0 or -errno.
int csys_tap_set_offload(int fd, unsigned int offloads);

/// The TUNSETOFFLOAD request number, for a seccomp filter that allows only it.
#define CSYS_TUNSETOFFLOAD 0x400454d0u

// --- File rings (ring.c): an io_uring for the block devices' batches ---

/// An io_uring that can do nothing but IORING_OP_READ (and IORING_OP_WRITE, when made
/// with `writes`) on the files registered when it was made (IORING_REGISTER_RESTRICTIONS, applied before the ring
/// is enabled): a sandboxed process that holds one can reach no other descriptor
/// through it. Used by one thread at a time.
struct csys_ring;

/// io_uring_setup(2) with IORING_SETUP_R_DISABLED, IORING_REGISTER_FILES of `files`,
/// the restrictions, IORING_REGISTER_ENABLE_RINGS. NULL with `*error` set (ENOSYS,
/// EPERM where the host forbids io_uring) on failure.
struct csys_ring *csys_ring_open(unsigned entries, const int *files, unsigned count, int writes, int *error);
/// Unmaps and closes the ring (the registered files are released with it).
void csys_ring_close(struct csys_ring *ring);
/// The ring's descriptor (a sandbox that closes stray descriptors keeps it).
int csys_ring_fd(const struct csys_ring *ring);
/// Operations one batch can hold (the submission queue's size).
unsigned csys_ring_capacity(const struct csys_ring *ring);
/// Queues a read (`write` 0) or a write of `length` bytes at `buffer`, on registered file
/// number `file` at byte `offset`, completed with `tag`. 0, or -ENOSPC when the batch is
/// full. (A write on a ring made without `writes` completes with -EACCES.)
int csys_ring_queue(struct csys_ring *ring, int write, unsigned file, void *buffer, unsigned length, uint64_t offset,
                    uint64_t tag);
/// Submits the queued operations and waits until every submitted one has completed,
/// normally with one io_uring_enter(2). Returns how many were submitted (the rest were
/// withdrawn and never run, and have no completion), or -errno when waiting failed:
/// then submitted operations may still be in flight and the ring must not be used again.
int csys_ring_submit_and_wait(struct csys_ring *ring);
/// Takes one completion: 1 with its tag and result (bytes done or -errno), 0 when none is left.
int csys_ring_complete(struct csys_ring *ring, uint64_t *tag, int32_t *result);

#endif
