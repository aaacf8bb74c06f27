/*
 * unix_copy - the host-side limit for vmm-bench's vsock figures: what two host
 * processes get from a plain Unix stream socket on the same machine.
 *
 *   unix_copy stream BYTES     a child writes BYTES in 64 KiB writes, the parent reads
 *                              them; timed at the reader until the last byte
 *   unix_copy connect COUNT    COUNT times: connect to a listener in a child process,
 *                              send "CONNECT 1\n", read the child's "OK 1\n", close
 *
 * Output: `stream bytes=N ns_total=T mb_per_s=X` / `connect count=N ns_total=T
 * per_s=X`. Errors exit 2.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) { fprintf(stderr, "unix_copy: %s: %s\n", what, strerror(errno)); exit(2); }

static void stream(long long bytes)
{
    int sv[2];
    static char buf[65536];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) die("socketpair");
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        close(sv[0]);
        memset(buf, 0x5a, sizeof buf);
        for (long long left = bytes; left > 0;) {
            ssize_t n = write(sv[1], buf, left < (long long)sizeof buf ? (size_t)left : sizeof buf);
            if (n <= 0) _exit(2);
            left -= n;
        }
        _exit(0);
    }
    close(sv[1]);
    long long t0 = now(), got = 0;
    while (got < bytes) {
        ssize_t n = read(sv[0], buf, sizeof buf);
        if (n <= 0) die("read");
        got += n;
    }
    long long t = now() - t0;
    waitpid(child, NULL, 0);
    printf("stream bytes=%lld ns_total=%lld mb_per_s=%.1f\n", bytes, t, bytes / (t / 1e9) / 1e6);
}

static void connects(int count)
{
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof a.sun_path, "/tmp/unix_copy-%d", getpid());
    unlink(a.sun_path);
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 128) != 0) die("listen");
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        char line[32];
        for (int i = 0; i < count; i++) {
            int c = accept(l, NULL, NULL);
            if (c < 0) _exit(2);
            if (read(c, line, sizeof line) <= 0 || write(c, "OK 1\n", 5) != 5) _exit(2);
            close(c);
        }
        _exit(0);
    }
    long long t0 = now();
    for (int i = 0; i < count; i++) {
        char line[32];
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
        if (write(s, "CONNECT 1\n", 10) != 10 || read(s, line, sizeof line) <= 0) die("handshake");
        close(s);
    }
    long long t = now() - t0;
    waitpid(child, NULL, 0);
    unlink(a.sun_path);
    printf("connect count=%d ns_total=%lld per_s=%.0f\n", count, t, count / (t / 1e9));
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc == 3 && strcmp(argv[1], "stream") == 0) stream(atoll(argv[2]));
    else if (argc == 3 && strcmp(argv[1], "connect") == 0) connects(atoi(argv[2]));
    else { fprintf(stderr, "usage: unix_copy stream BYTES | connect COUNT\n"); return 2; }
    return 0;
}
