/* kvm_ref.h - the C reference VM as a library, for vmm-bench's interleaved mode.
 *
 * The same code as the kvm_ref program (kvm_ref.c, built with KVMREF_LIBRARY so
 * that it has no main): one VM on raw KVM ioctls, set up like swift-vmm's, that
 * can run the benchmark guest in batches so C and Swift batches alternate inside
 * one process and see the same host conditions. Errors end the process. */
#ifndef KVM_REF_H
#define KVM_REF_H
#include <stdint.h>

struct kvmref;

/* Opens /dev/kvm and builds the VM for `guest_path` (bench.elf, or
 * hypercall-ring3.elf with `hypercalls` set). */
struct kvmref *kvmref_open(const char *guest_path, int hypercalls);

/* Reloads the guest, writes `n` at 0x9000, runs it to its debug-exit write and
 * returns the nanoseconds the KVM_RUN loop took. */
uint64_t kvmref_run_batch(struct kvmref *ref, uint32_t n);

void kvmref_close(struct kvmref *ref);

/* process_timer.c: runs `command` (an absolute path and its arguments, separated
 * by 0x1f) with stdin, stdout and stderr on /dev/null, waits for it, and returns
 * the wall-clock nanoseconds from the spawn to the reap (0 if it could not be
 * started); `status` gets its exit status (128 + signal when killed) and
 * `cpu_ns` its user + system CPU time. */
uint64_t kvmref_time_command(const char *command, int *status, uint64_t *cpu_ns);

#endif
