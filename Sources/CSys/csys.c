// Implementation of include/CSys.h. Kept deliberately small: every function is one
// system call or one well-known sequence, and reports failure as -errno.
#define _GNU_SOURCE
#include "CSys.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <sys/vfs.h>
#include <linux/openat2.h>
#include <grp.h>
#include <pwd.h>
#include <linux/seccomp.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/sysinfo.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/ioctl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <unistd.h>
#include <link.h>
#include <stdint.h>
#include <sys/mman.h>

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef F_ADD_SEALS
#define F_ADD_SEALS 1033
#define F_SEAL_SHRINK 0x0002
#define F_SEAL_GROW 0x0004
#endif

ssize_t csys_send_with_fds(int sock, const void *data, size_t len, const int *fds, int nfds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * CSYS_MAX_FDS)];
        struct cmsghdr align;
    } control;
    struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

    if (nfds < 0 || nfds > CSYS_MAX_FDS)
        return -EINVAL;
    if (nfds > 0) {
        memset(&control, 0, sizeof control);
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    for (;;) {
        ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return -errno;
    }
}

ssize_t csys_recv_with_fds(int sock, void *data, size_t len, int *fds, int maxfds, int *nfds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * CSYS_MAX_FDS)];
        struct cmsghdr align;
    } control;
    struct iovec iov = { .iov_base = data, .iov_len = len };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                          .msg_control = control.buf, .msg_controllen = sizeof control.buf };
    ssize_t n;

    *nfds = 0;
    for (;;) {
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        if (n >= 0)
            break;
        if (errno != EINTR)
            return -errno;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *in = (int *)CMSG_DATA(c);
        for (size_t i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, in + i, sizeof fd);
            if (*nfds < maxfds)
                fds[(*nfds)++] = fd;
            else
                close(fd);   /* more than we asked for: never leak them */
        }
    }
    if (msg.msg_flags & MSG_CTRUNC) {
        for (int i = 0; i < *nfds; i++)
            close(fds[i]);
        *nfds = 0;
        return -EMSGSIZE;
    }
    return n;
}

int csys_peer_credentials(int sock, pid_t *pid, uid_t *uid, gid_t *gid)
{
    struct ucred cred;
    socklen_t len = sizeof cred;

    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return -errno;
    *pid = cred.pid;
    *uid = cred.uid;
    *gid = cred.gid;
    return 0;
}

int csys_peer_groups(int sock, gid_t *groups, int max)
{
    socklen_t len = (socklen_t)(sizeof(gid_t) * (size_t)(max > 0 ? max : 0));

    if (getsockopt(sock, SOL_SOCKET, SO_PEERGROUPS, groups, &len) != 0)
        return -errno;
    return (int)(len / sizeof(gid_t));
}

int csys_pidfd_open(pid_t pid)
{
    long fd = syscall(SYS_pidfd_open, pid, 0);
    return fd < 0 ? -errno : (int)fd;
}

int csys_pidfd_send_signal(int pidfd, int sig)
{
    return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) == 0 ? 0 : -errno;
}

int csys_pidfd_wait(int pidfd, int options, int *code, int *status)
{
    siginfo_t info;

    memset(&info, 0, sizeof info);
    for (;;) {
        if (waitid((idtype_t)P_PIDFD, (id_t)pidfd, &info, WEXITED | options) == 0)
            break;
        if (errno != EINTR)
            return -errno;
    }
    if (info.si_pid == 0)
        return 0;
    *code = info.si_code;
    *status = info.si_status;
    return 1;
}

pid_t csys_spawn_worker(const char *path, int control_fd, int log_fd)
{
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    sigset_t none, all;
    char parent[24];
    char *argv[] = { (char *)path, (char *)"--parent", parent, NULL };
    char *envp[] = { NULL };
    pid_t pid = -1;
    int rc;

    int moved = -1;

    /* dup2(3, 3) would leave close-on-exec set (older glibc): move it out of the way. */
    if (control_fd <= 3) {
        moved = fcntl(control_fd, F_DUPFD_CLOEXEC, 10);
        if (moved < 0)
            return -errno;
        control_fd = moved;
    }
    snprintf(parent, sizeof parent, "%d", (int)getpid());
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    /* dup2 onto another number clears close-on-exec on the copy. */
    posix_spawn_file_actions_adddup2(&actions, control_fd, 3);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDWR, 0);
    if (log_fd >= 0) {
        posix_spawn_file_actions_adddup2(&actions, log_fd, 1);
        posix_spawn_file_actions_adddup2(&actions, log_fd, 2);
    } else {
        posix_spawn_file_actions_adddup2(&actions, 0, 1);
        posix_spawn_file_actions_adddup2(&actions, 0, 2);
    }
    rc = posix_spawn(&pid, path, &actions, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (moved >= 0)
        close(moved);
    return rc == 0 ? pid : -rc;
}

int csys_thread_assume_fs_identity(uid_t uid, gid_t gid, const gid_t *groups, int ngroups)
{
    /* Raw system calls: glibc's setgroups() would change every thread of the daemon. */
    if (syscall(SYS_setgroups, (size_t)ngroups, groups) != 0)
        return -errno;
    syscall(SYS_setfsgid, gid);
    syscall(SYS_setfsuid, uid);
    /* setfsuid/setfsgid cannot report failure; read the values back instead. */
    if ((uid_t)syscall(SYS_setfsuid, (uid_t)-1) != uid || (gid_t)syscall(SYS_setfsgid, (gid_t)-1) != gid)
        return -EPERM;
    return 0;
}

int csys_set_parent_death_signal(int sig)
{
    return prctl(PR_SET_PDEATHSIG, (unsigned long)sig, 0, 0, 0) == 0 ? 0 : -errno;
}

int csys_close_from(int first)
{
    if (syscall(SYS_close_range, (unsigned)first, ~0U, 0) == 0)
        return 0;
    return -errno;
}

int csys_guest_memfd(const char *name, uint64_t size)
{
    int fd = (int)syscall(SYS_memfd_create, name, 0x0001U | 0x0002U /* CLOEXEC | ALLOW_SEALING */);

    if (fd < 0)
        return -errno;
    if (ftruncate(fd, (off_t)size) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

_Static_assert(sizeof(struct csys_ucred) == sizeof(struct ucred), "csys_ucred must match struct ucred");

int csys_set_no_new_privs(void)
{
    return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 ? 0 : -errno;
}

int csys_drop_privileges(uid_t uid, gid_t gid)
{
    uid_t ru, eu, su;
    gid_t rg, eg, sg;

    if (setgroups(0, NULL) != 0)
        return -errno;
    if (setresgid(gid, gid, gid) != 0)
        return -errno;
    if (setresuid(uid, uid, uid) != 0)
        return -errno;
    if (getresuid(&ru, &eu, &su) != 0 || getresgid(&rg, &eg, &sg) != 0)
        return -errno;
    if (ru != uid || eu != uid || su != uid || rg != gid || eg != gid || sg != gid)
        return -EPERM;
    if (uid != 0 && setuid(0) == 0)
        return -EPERM;   /* regained root: the drop did not hold */
    return 0;
}

int csys_install_seccomp(const struct sock_filter *filter, unsigned short count)
{
    struct sock_fprog prog = { .len = count, .filter = (struct sock_filter *)filter };
    long rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);

    if (rc < 0)
        return -errno;
    return (int)rc;
}

static void *shrink_a_thread_heap(void *unused)
{
    /* Below the mmap threshold (128 KiB), so they come from this thread's arena; freed,
       they coalesce into its top chunk, and the free of a chunk past 64 KiB trims the
       heap (heap_trim -> shrink_heap -> check_may_shrink_heap) once the top exceeds the
       trim threshold (128 KiB). Only the chunks' sizes matter, not their contents: left
       unwritten, the blocks cost the worker 8 page faults instead of 200 (strace shows
       the same read of /proc/sys/vm/overcommit_memory either way). Volatile, or clang
       removes the unused malloc/free pairs and the read never happens. */
    enum { count = 8, size = 100 << 10 };
    void *volatile blocks[count];
    int i;

    (void)unused;
    for (i = 0; i < count; i++)
        blocks[i] = malloc(size);
    for (i = count - 1; i >= 0; i--)
        free(blocks[i]);
    return NULL;
}

int csys_settle_heap_shrink(void)
{
    pthread_t thread;
    int rc = pthread_create(&thread, NULL, shrink_a_thread_heap, NULL);

    if (rc != 0)
        return -rc;
    return -pthread_join(thread, NULL);
}

struct code_segments {
    long bytes;
    int error;
    int seen_main;
};

static int drop_segments_of_main_program(struct dl_phdr_info *info, size_t size, void *data)
{
    struct code_segments *segments = data;
    long page = sysconf(_SC_PAGESIZE);

    (void)size;
    /* The first object dl_iterate_phdr reports is the program itself. */
    if (segments->seen_main)
        return 1;
    segments->seen_main = 1;
    /* Text relocations make private copies of code pages: dropping them would undo the
       relocations. A static executable has no dynamic section at all. */
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_DYNAMIC)
            continue;
        for (const ElfW(Dyn) *d = (const ElfW(Dyn) *)(info->dlpi_addr + ph->p_vaddr); d->d_tag != DT_NULL; d++) {
            if (d->d_tag == DT_TEXTREL || (d->d_tag == DT_FLAGS && (d->d_un.d_val & DF_TEXTREL)))
                return 1;
        }
    }
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || (ph->p_flags & PF_W) || !(ph->p_flags & PF_R))
            continue;
        uintptr_t start = (info->dlpi_addr + ph->p_vaddr) & ~(uintptr_t)(page - 1);
        /* Only pages wholly backed by the file: past p_filesz the loader zeroed the rest
           of the last page in a private copy, which must stay. */
        uintptr_t end = (info->dlpi_addr + ph->p_vaddr + ph->p_filesz) & ~(uintptr_t)(page - 1);
        if (end <= start)
            continue;
        if (madvise((void *)start, end - start, MADV_DONTNEED) != 0) {
            segments->error = errno;
            return 1;
        }
        segments->bytes += (long)(end - start);
    }
    return 1;
}

long csys_drop_code_mappings(void)
{
    struct code_segments segments = { 0, 0, 0 };

    dl_iterate_phdr(drop_segments_of_main_program, &segments);
    return segments.error ? -segments.error : segments.bytes;
}

int csys_settle_malloc_arenas(void)
{
    /* NARENAS_FROM_NCORES in glibc's malloc: 8 arenas per core on 64-bit; two cores
       when the count is unknown, as glibc assumes. */
    int cpus = get_nprocs();
    int limit = 8 * (cpus >= 1 ? cpus : 2);

    return mallopt(M_ARENA_MAX, limit) == 1 ? limit : -1;
}

/* A new close-on-exec Unix stream socket and the address of `path` in `*a`. */
static int unix_socket(struct sockaddr_un *a, const char *path)
{
    int fd;

    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof a->sun_path)
        return -ENAMETOOLONG;
    strcpy(a->sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    return fd < 0 ? -errno : fd;
}

int csys_listen_unix(const char *path, int backlog)
{
    struct sockaddr_un a;
    int fd = unix_socket(&a, path);

    if (fd < 0)
        return fd;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, backlog) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int csys_connect_unix_nonblocking(const char *path);

int csys_listen_unix_replacing_stale(const char *path, int backlog)
{
    int fd = csys_listen_unix(path, backlog);
    if (fd != -EADDRINUSE)
        return fd;
    /* Only a socket file nobody listens on (its VMM died) is replaced. */
    struct stat st;
    int probe = csys_connect_unix_nonblocking(path);
    if (probe >= 0) {
        close(probe);
        return -EADDRINUSE;
    }
    if (probe != -ECONNREFUSED || lstat(path, &st) != 0 || !S_ISSOCK(st.st_mode))
        return -EADDRINUSE;
    if (unlink(path) != 0)
        return -errno;
    return csys_listen_unix(path, backlog);
}

/* Connects a fresh Unix stream socket to `path`, non-blocking when asked: a Unix
 * stream connect completes at once or fails (a full backlog is EAGAIN when non-blocking). */
static int connect_unix(const char *path, int nonblocking)
{
    struct sockaddr_un a;
    int fd = unix_socket(&a, path);

    if (fd < 0)
        return fd;
    int flags = nonblocking ? fcntl(fd, F_GETFL) : 0;
    if (flags < 0 || (nonblocking && fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)) {
        int e = errno;
        close(fd);
        return -e;
    }
    while (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (errno == EINTR)
            continue;
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int csys_connect_unix(const char *path) { return connect_unix(path, 0); }

int csys_connect_unix_nonblocking(const char *path) { return connect_unix(path, 1); }

ssize_t csys_send_from(int sock, const void *base, size_t offset, size_t len)
{
    for (;;) {
        ssize_t n = send(sock, (const char *)base + offset, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return -errno;
    }
}

static int accept_with(int listener, int flags)
{
    for (;;) {
        int fd = accept4(listener, NULL, NULL, flags);
        if (fd >= 0)
            return fd;
        if (errno != EINTR)
            return -errno;
    }
}

int csys_accept_nonblocking(int listener) { return accept_with(listener, SOCK_CLOEXEC | SOCK_NONBLOCK); }

int csys_accept(int listener) { return accept_with(listener, SOCK_CLOEXEC); }

#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef F_GET_SEALS
#define F_GET_SEALS 1034
#define F_SEAL_SEAL 0x0001
#endif
#define CSYS_PROC_SUPER_MAGIC 0x9fa0
#define CSYS_SYSFS_MAGIC 0x62656572

/* Opens `path` with `flags`, refusing magic links, procfs/sysfs files and memfds. */
static int open_refusing_special(const char *path, int flags)
{
    struct open_how how;
    struct statfs fs;
    int fd, seals;

    memset(&how, 0, sizeof how);
    how.flags = (unsigned long long)flags;
    how.resolve = RESOLVE_NO_MAGICLINKS;
    fd = (int)syscall(SYS_openat2, AT_FDCWD, path, &how, sizeof how);
    if (fd < 0 && errno == ENOSYS) {
        if (strncmp(path, "/proc/", 6) == 0 || strncmp(path, "/dev/fd/", 8) == 0)
            return -EPERM;
        fd = open(path, flags);
    }
    if (fd < 0)
        return errno == ELOOP ? -EPERM : -errno;
    if (fstatfs(fd, &fs) == 0 && (fs.f_type == CSYS_PROC_SUPER_MAGIC || fs.f_type == CSYS_SYSFS_MAGIC)) {
        close(fd);
        return -EPERM;
    }
    seals = fcntl(fd, F_GET_SEALS);
    if (seals >= 0 && !(seals & F_SEAL_SEAL)) {
        close(fd);
        return -EPERM;
    }
    return fd;
}

int csys_open_image(const char *path)
{
    return open_refusing_special(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
}

int csys_open_disk(const char *path, int writable, int direct)
{
    int flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;

    if (direct)
        flags |= O_DIRECT;
    return open_refusing_special(path, flags);
}

int csys_set_receive_timeout(int sock, int seconds)
{
    struct timeval tv = { .tv_sec = seconds, .tv_usec = 0 };

    return setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0 ? 0 : -errno;
}

int csys_snapshot_directory(const char *path)
{
    if (mkdir(path, 0700) != 0) {
        if (errno != EEXIST)
            return -errno;
        /* rmdir removes only an empty directory: the emptiness check and the new one
           in one step, with no directory listing. */
        if (rmdir(path) != 0)
            return errno == ENOTEMPTY || errno == EEXIST ? -ENOTEMPTY : -errno;
        if (mkdir(path, 0700) != 0)
            return -errno;
    }
    return open_refusing_special(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

int csys_create_in(int dir, const char *name)
{
    int fd = openat(dir, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);

    return fd >= 0 ? fd : -errno;
}

/* ---- taps (virtio-net) ---- */

int csys_tap_open(const char *name)
{
    struct ifreq ifr;

    if (strlen(name) >= IFNAMSIZ || name[0] == 0)
        return -EINVAL;
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, name);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int csys_tap_info(int fd, char name[16], unsigned int *flags)
{
    struct ifreq ifr;

    memset(&ifr, 0, sizeof ifr);
    if (ioctl(fd, TUNGETIFF, &ifr) != 0)
        return -errno;
    memcpy(name, ifr.ifr_name, IFNAMSIZ);
    name[IFNAMSIZ - 1] = 0;
    *flags = (unsigned short)ifr.ifr_flags;
    return 0;
}

int csys_tap_set_vnet_header_size(int fd, int size)
{
    return ioctl(fd, TUNSETVNETHDRSZ, &size) == 0 ? 0 : -errno;
}

int csys_tap_set_offload(int fd, unsigned int offloads)
{
    return ioctl(fd, TUNSETOFFLOAD, (unsigned long)offloads) == 0 ? 0 : -errno;
}

/* ---- TCP (the gdb stub) ---- */

int csys_listen_tcp(const char *ipv4, uint16_t port, int backlog)
{
    struct sockaddr_in a;
    int one = 1;

    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    if (inet_pton(AF_INET, ipv4, &a.sin_addr) != 1)
        return -EINVAL;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, backlog) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int csys_local_port(int sock)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;

    if (getsockname(sock, (struct sockaddr *)&a, &len) != 0)
        return -errno;
    if (a.sin_family != AF_INET)
        return -EAFNOSUPPORT;
    return ntohs(a.sin_port);
}

int csys_set_no_delay(int sock)
{
    int one = 1;

    return setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0 ? 0 : -errno;
}

int csys_open_descriptors(int from, int *fds, int capacity)
{
    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL)
        return -errno;
    int own = dirfd(dir), count = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        char *end;
        long fd = strtol(entry->d_name, &end, 10);
        if (end == entry->d_name || *end != '\0' || fd < from || fd == own || fd > 0x7fffffff)
            continue;
        if (count < capacity)
            fds[count] = (int)fd;
        count++;
    }
    closedir(dir);
    return count;
}
