/* vsock-echo - the test initramfs's vsock program (built static by the test with the
 * system cc: `cc -static -O2 -o vsock-echo vsock-echo.c`).
 *
 *   vsock-echo serve PORT            listen on vsock PORT and send every connection's
 *                                    bytes back until it closes; many connections at
 *                                    once in one poll loop (no fork: each costs seconds
 *                                    of kernel work on a KVM that emulates CPL 0)
 *   vsock-echo connect CID PORT MSG [PORT MSG]...
 *                                    for each PORT: connect to CID:PORT, send MSG, shut
 *                                    the sending side, print what comes back until end
 *                                    of stream, or the error (a reset is "Connection
 *                                    reset by peer"); one process for all of them
 *
 * Every line it prints starts with "vsock-echo: ", so a test can find it on the console.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define MAX_CONNECTIONS 128
#define BUFFER_SIZE (64 * 1024)

struct connection {
    int fd;
    char *buffer;
    size_t start, end;   /* bytes read, not yet written back: buffer[start, end) */
    int read_closed;     /* the peer shut its sending side */
};

static void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static int parse_u32(const char *text, unsigned *out) {
    char *end;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (errno || *end || end == text || v > 0xFFFFFFFFul) return -1;
    *out = (unsigned)v;
    return 0;
}

static int serve(unsigned port) {
    int listener = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (listener < 0) { printf("vsock-echo: socket: %s\n", strerror(errno)); return 1; }
    struct sockaddr_vm addr = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port };
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, 64) < 0) {
        printf("vsock-echo: bind/listen on port %u: %s\n", port, strerror(errno));
        return 1;
    }
    set_nonblocking(listener);
    /* The CID the device's configuration space gave this guest (/dev/vsock's ioctl). */
    unsigned cid = VMADDR_CID_ANY;
    int dev = open("/dev/vsock", O_RDONLY);
    if (dev >= 0) { ioctl(dev, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid); close(dev); }
    printf("vsock-echo: listening on port %u, local cid %u\n", port, cid);
    fflush(stdout);

    static struct connection conns[MAX_CONNECTIONS];
    static struct pollfd fds[MAX_CONNECTIONS + 1];
    int count = 0;
    for (;;) {
        fds[0] = (struct pollfd){ .fd = listener, .events = count < MAX_CONNECTIONS ? POLLIN : 0 };
        for (int i = 0; i < count; i++) {
            struct connection *c = &conns[i];
            short events = 0;
            if (c->end < BUFFER_SIZE && !c->read_closed) events |= POLLIN;
            if (c->end > c->start) events |= POLLOUT;
            fds[i + 1] = (struct pollfd){ .fd = c->fd, .events = events };
        }
        if (poll(fds, count + 1, -1) < 0) {
            if (errno == EINTR) continue;
            printf("vsock-echo: poll: %s\n", strerror(errno));
            return 1;
        }
        for (int i = count - 1; i >= 0; i--) {
            struct connection *c = &conns[i];
            short revents = fds[i + 1].revents;
            int done = 0;
            if (revents & POLLIN) {
                ssize_t n = read(c->fd, c->buffer + c->end, BUFFER_SIZE - c->end);
                if (n > 0) c->end += (size_t)n;
                else if (n == 0) c->read_closed = 1;
                else if (errno != EAGAIN && errno != EINTR) done = 1;
            }
            if (!done && c->end > c->start) {
                ssize_t n = write(c->fd, c->buffer + c->start, c->end - c->start);
                if (n > 0) c->start += (size_t)n;
                else if (n < 0 && errno != EAGAIN && errno != EINTR) done = 1;
                if (c->start == c->end) c->start = c->end = 0;
            }
            if (revents & (POLLERR | POLLHUP) && !(revents & POLLIN) && c->end == c->start) done = 1;
            if (c->read_closed && c->end == c->start) done = 1;
            if (done) {
                close(c->fd);
                free(c->buffer);
                conns[i] = conns[--count];
            }
        }
        if (fds[0].revents & POLLIN) {
            for (;;) {
                int fd = accept(listener, NULL, NULL);
                if (fd < 0) break;
                char *buffer = count < MAX_CONNECTIONS ? malloc(BUFFER_SIZE) : NULL;
                if (!buffer) { close(fd); continue; }
                set_nonblocking(fd);
                conns[count++] = (struct connection){ .fd = fd, .buffer = buffer };
            }
        }
    }
}

static int connect_and_send(unsigned cid, unsigned port, const char *message) {
    int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0) { printf("vsock-echo: socket: %s\n", strerror(errno)); return 1; }
    struct sockaddr_vm addr = { .svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port };
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        printf("vsock-echo: connect to %u:%u: %s\n", cid, port, strerror(errno));
        return 1;
    }
    size_t length = strlen(message), sent = 0;
    while (sent < length) {
        ssize_t n = write(fd, message + sent, length - sent);
        if (n <= 0) { printf("vsock-echo: write to %u:%u: %s\n", cid, port, strerror(errno)); return 1; }
        sent += (size_t)n;
    }
    shutdown(fd, SHUT_WR);
    char reply[4096];
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fd, reply + got, sizeof reply - 1 - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { printf("vsock-echo: read from %u:%u: %s\n", cid, port, strerror(errno)); return 1; }
        if (n == 0 || got + (size_t)n == sizeof reply - 1) { got += (size_t)(n > 0 ? n : 0); break; }
        got += (size_t)n;
    }
    reply[got] = 0;
    while (got > 0 && reply[got - 1] == '\n') reply[--got] = 0;
    printf("vsock-echo: reply from %u:%u '%s'\n", cid, port, reply);
    close(fd);
    return 0;
}

int main(int argc, char **argv) {
    unsigned cid, port;
    if (argc == 3 && !strcmp(argv[1], "serve") && !parse_u32(argv[2], &port)) return serve(port);
    if (argc >= 5 && argc % 2 == 1 && !strcmp(argv[1], "connect") && !parse_u32(argv[2], &cid)) {
        int failed = 0;
        for (int i = 3; i + 1 < argc; i += 2) {
            if (parse_u32(argv[i], &port)) goto usage;
            failed |= connect_and_send(cid, port, argv[i + 1]);
        }
        return failed;
    }
usage:
    fprintf(stderr, "usage: vsock-echo serve PORT | vsock-echo connect CID PORT MESSAGE [PORT MESSAGE]...\n");
    return 2;
}
