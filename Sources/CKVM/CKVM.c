// CKVM is re-exports (include/CKVM.h) but for the ioctl clock, whose state must have one
// definition.
#include "CKVM.h"
#include <errno.h>
#include <time.h>

int ckvm_ioctl_clock_on;
unsigned long long ckvm_ioctl_clock_ns[2];

void ckvm_ioctl_clock_start(void) {
    __atomic_store_n(&ckvm_ioctl_clock_ns[0], 0, __ATOMIC_RELAXED);
    __atomic_store_n(&ckvm_ioctl_clock_ns[1], 0, __ATOMIC_RELAXED);
    __atomic_store_n(&ckvm_ioctl_clock_on, 1, __ATOMIC_RELEASE);
}

void ckvm_ioctl_clock_stop(void) {
    __atomic_store_n(&ckvm_ioctl_clock_on, 0, __ATOMIC_RELEASE);
}

unsigned long long ckvm_ioctl_clock_read(int which) {
    return __atomic_load_n(&ckvm_ioctl_clock_ns[which ? 1 : 0], __ATOMIC_RELAXED);
}

static unsigned long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (unsigned long long)t.tv_sec * 1000000000ull + (unsigned long long)t.tv_nsec;
}

int ckvm_ioctl_timed(int fd, unsigned long request, unsigned long arg) {
    unsigned long long start = now_ns();
    int rc = ioctl(fd, request, arg);
    int saved = errno;   // the caller reads errno after a failure
    __atomic_fetch_add(&ckvm_ioctl_clock_ns[request == KVM_RUN ? 1 : 0], now_ns() - start, __ATOMIC_RELAXED);
    errno = saved;
    return rc;
}
