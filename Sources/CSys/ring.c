// An io_uring restricted to positioned reads (and writes) of registered files: the
// block devices' batch path (CSys.h, "File rings"). Raw system calls, no liburing.
#include "CSys.h"

#include <errno.h>
#include <linux/io_uring.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

struct csys_ring {
    int fd;
    unsigned entries;
    unsigned queued;        // SQEs written since the last submit
    unsigned sq_tail;       // our copy of the tail (the kernel only reads it)
    _Atomic unsigned *sq_head, *sq_tail_shared;
    unsigned sq_mask;
    unsigned *sq_array;
    struct io_uring_sqe *sqes;
    _Atomic unsigned *cq_head, *cq_tail;
    unsigned cq_mask;
    struct io_uring_cqe *cqes;
    void *ring_map;
    size_t ring_map_length;
    size_t sqes_length;
};

static int ring_setup(unsigned entries, struct io_uring_params *p)
{
    return (int)syscall(SYS_io_uring_setup, entries, p);
}

static int ring_register(int fd, unsigned opcode, const void *arg, unsigned count)
{
    return (int)syscall(SYS_io_uring_register, fd, opcode, arg, count);
}

static int ring_enter(int fd, unsigned submit, unsigned wait, unsigned flags)
{
    return (int)syscall(SYS_io_uring_enter, fd, submit, wait, flags, NULL, 0);
}

static void ring_free(struct csys_ring *r)
{
    if (r->sqes) munmap(r->sqes, r->sqes_length);
    if (r->ring_map) munmap(r->ring_map, r->ring_map_length);
    if (r->fd >= 0) close(r->fd);
    free(r);
}

struct csys_ring *csys_ring_open(unsigned entries, const int *files, unsigned count, int writes, int *error)
{
    struct csys_ring *r = calloc(1, sizeof *r);
    if (!r) { *error = ENOMEM; return NULL; }
    r->fd = -1;
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    // Disabled until the restrictions below are in place (they can only be registered
    // on a ring that has not been enabled).
    p.flags = IORING_SETUP_R_DISABLED;
    r->fd = ring_setup(entries, &p);
    if (r->fd < 0) goto fail;
    // One mapping for both rings (IORING_FEAT_SINGLE_MMAP, every kernel since 5.4;
    // older ones are refused rather than half supported).
    if (!(p.features & IORING_FEAT_SINGLE_MMAP)) { errno = ENOSYS; goto fail; }
    size_t sq_length = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_length = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    r->ring_map_length = sq_length > cq_length ? sq_length : cq_length;
    void *map = mmap(NULL, r->ring_map_length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
    if (map == MAP_FAILED) goto fail;
    r->ring_map = map;
    r->sqes_length = p.sq_entries * sizeof(struct io_uring_sqe);
    void *sqes = mmap(NULL, r->sqes_length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
    if (sqes == MAP_FAILED) goto fail;
    r->sqes = sqes;
    char *base = map;
    r->entries = p.sq_entries;
    r->sq_head = (_Atomic unsigned *)(base + p.sq_off.head);
    r->sq_tail_shared = (_Atomic unsigned *)(base + p.sq_off.tail);
    r->sq_mask = *(unsigned *)(base + p.sq_off.ring_mask);
    r->sq_array = (unsigned *)(base + p.sq_off.array);
    r->sq_tail = atomic_load_explicit(r->sq_tail_shared, memory_order_relaxed);
    r->cq_head = (_Atomic unsigned *)(base + p.cq_off.head);
    r->cq_tail = (_Atomic unsigned *)(base + p.cq_off.tail);
    r->cq_mask = *(unsigned *)(base + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(base + p.cq_off.cqes);

    if (ring_register(r->fd, IORING_REGISTER_FILES, files, count) < 0) goto fail;
    // What the ring may ever do: IORING_OP_READ (and IORING_OP_WRITE when `writes`),
    // on registered files only (IOSQE_FIXED_FILE required, no other SQE flag), and no
    // registration after it is enabled: it can reach no descriptor but `files`.
    struct io_uring_restriction rules[4];
    memset(rules, 0, sizeof rules);
    unsigned n = 0;
    rules[n].opcode = IORING_RESTRICTION_SQE_OP;
    rules[n++].sqe_op = IORING_OP_READ;
    if (writes) {
        rules[n].opcode = IORING_RESTRICTION_SQE_OP;
        rules[n++].sqe_op = IORING_OP_WRITE;
    }
    rules[n].opcode = IORING_RESTRICTION_SQE_FLAGS_ALLOWED;
    rules[n++].sqe_flags = IOSQE_FIXED_FILE;
    rules[n].opcode = IORING_RESTRICTION_SQE_FLAGS_REQUIRED;
    rules[n++].sqe_flags = IOSQE_FIXED_FILE;
    if (ring_register(r->fd, IORING_REGISTER_RESTRICTIONS, rules, n) < 0) goto fail;
    if (ring_register(r->fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0) goto fail;
    return r;
fail:
    *error = errno;
    ring_free(r);
    return NULL;
}

void csys_ring_close(struct csys_ring *r)
{
    if (r) ring_free(r);
}

int csys_ring_fd(const struct csys_ring *r) { return r->fd; }

unsigned csys_ring_capacity(const struct csys_ring *r) { return r->entries; }

int csys_ring_queue(struct csys_ring *r, int write, unsigned file, void *buffer, unsigned length, uint64_t offset,
                    uint64_t tag)
{
    if (r->queued >= r->entries) return -ENOSPC;
    unsigned index = r->sq_tail & r->sq_mask;
    struct io_uring_sqe *sqe = &r->sqes[index];
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = write ? IORING_OP_WRITE : IORING_OP_READ;
    sqe->flags = IOSQE_FIXED_FILE;
    sqe->fd = (int)file;
    sqe->addr = (uint64_t)(uintptr_t)buffer;
    sqe->len = length;
    sqe->off = offset;
    sqe->user_data = tag;
    r->sq_array[index] = index;
    r->sq_tail++;
    r->queued++;
    return 0;
}

static unsigned ready_completions(struct csys_ring *r)
{
    return atomic_load_explicit(r->cq_tail, memory_order_acquire) - atomic_load_explicit(r->cq_head, memory_order_relaxed);
}

int csys_ring_submit_and_wait(struct csys_ring *r)
{
    unsigned want = r->queued;
    r->queued = 0;
    if (want == 0) return 0;
    // The SQEs must be visible before the tail that publishes them.
    atomic_store_explicit(r->sq_tail_shared, r->sq_tail, memory_order_release);
    // The completion queue is empty when a batch starts (the caller takes every
    // completion before the next one) and every SQE the kernel consumes posts exactly
    // one completion: `min_complete`, which counts completions already in the queue,
    // is the total expected so far, never what is left.
    unsigned submitted = 0;
    while (submitted < want) {
        // Submit and wait in one call: a batch normally costs exactly one system call.
        int n = ring_enter(r->fd, want - submitted, want, IORING_ENTER_GETEVENTS);
        if (n < 0) {
            if (errno == EINTR) continue;   // nothing was consumed (else n is the count)
            if (errno == EAGAIN || errno == EBUSY) {
                // Out of kernel resources for now: let what is in flight finish first,
                // or, with nothing in flight, leave the rest to the caller.
                unsigned ready = ready_completions(r);
                if (ready >= submitted) break;
                if (ring_enter(r->fd, 0, ready + 1, IORING_ENTER_GETEVENTS) < 0 && errno != EINTR && errno != EAGAIN
                    && errno != EBUSY) {
                    break;
                }
                continue;
            }
            break;   // what is left is withdrawn; the caller does it itself
        }
        if (n == 0) break;
        submitted += (unsigned)n;
    }
    if (submitted < want) {
        // Withdraw what the kernel did not take: it reads the tail only in io_uring_enter.
        r->sq_tail = atomic_load_explicit(r->sq_head, memory_order_acquire);
        atomic_store_explicit(r->sq_tail_shared, r->sq_tail, memory_order_release);
    }
    // The call above returns once the batch is submitted, even when its wait was
    // interrupted: wait until every submitted operation has completed. Returning with
    // one in flight would let it land in guest memory (or on the disk) after the caller
    // has answered the request otherwise, so only an error that says the ring itself is
    // gone ends this early.
    while (ready_completions(r) < submitted) {
        if (ring_enter(r->fd, 0, submitted, IORING_ENTER_GETEVENTS) < 0 && errno != EINTR && errno != EAGAIN
            && errno != EBUSY) {
            return -errno;
        }
    }
    return (int)submitted;
}

int csys_ring_complete(struct csys_ring *r, uint64_t *tag, int32_t *result)
{
    unsigned head = atomic_load_explicit(r->cq_head, memory_order_relaxed);
    if (head == atomic_load_explicit(r->cq_tail, memory_order_acquire)) return 0;
    struct io_uring_cqe *cqe = &r->cqes[head & r->cq_mask];
    *tag = cqe->user_data;
    *result = cqe->res;
    atomic_store_explicit(r->cq_head, head + 1, memory_order_release);
    return 1;
}
