// CKVM: the C surface swift-vmm needs from Linux, and nothing else.
// Re-exports: <linux/kvm.h>, ioctl request numbers as constants (Swift cannot import
// the function-like _IO/_IOW macros), and non-variadic wrappers for the few variadic or
// GNU-only libc calls. The only logic is the ioctl clock (CKVM.c), which a benchmark
// switches on.
#ifndef CKVM_H
#define CKVM_H

#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/prctl.h>

// --- /dev/kvm (system) ---
static const unsigned long CKVM_GET_API_VERSION = KVM_GET_API_VERSION;
static const unsigned long CKVM_CREATE_VM = KVM_CREATE_VM;
static const unsigned long CKVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
static const unsigned long CKVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
static const unsigned long CKVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;
static const unsigned long CKVM_GET_MSR_INDEX_LIST = KVM_GET_MSR_INDEX_LIST;
static const unsigned long CKVM_GET_MSR_FEATURE_INDEX_LIST = KVM_GET_MSR_FEATURE_INDEX_LIST;

// --- VM fd ---
static const unsigned long CKVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
static const unsigned long CKVM_CREATE_IRQCHIP = KVM_CREATE_IRQCHIP;
static const unsigned long CKVM_CREATE_PIT2 = KVM_CREATE_PIT2;
static const unsigned long CKVM_IRQ_LINE = KVM_IRQ_LINE;
static const unsigned long CKVM_IRQ_LINE_STATUS = KVM_IRQ_LINE_STATUS;
static const unsigned long CKVM_SIGNAL_MSI = KVM_SIGNAL_MSI;
static const unsigned long CKVM_CREATE_VCPU = KVM_CREATE_VCPU;
static const unsigned long CKVM_GET_STATS_FD = KVM_GET_STATS_FD;
static const unsigned long CKVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
static const unsigned long CKVM_SET_IDENTITY_MAP_ADDR = KVM_SET_IDENTITY_MAP_ADDR;
static const unsigned long CKVM_GET_DIRTY_LOG = KVM_GET_DIRTY_LOG;
static const unsigned long CKVM_ENABLE_CAP = KVM_ENABLE_CAP;
static const unsigned long CKVM_GET_CLOCK = KVM_GET_CLOCK;
static const unsigned long CKVM_SET_CLOCK = KVM_SET_CLOCK;
static const unsigned long CKVM_SET_GSI_ROUTING = KVM_SET_GSI_ROUTING;
static const unsigned long CKVM_IRQFD = KVM_IRQFD;
static const unsigned long CKVM_IOEVENTFD = KVM_IOEVENTFD;
static const unsigned int CKVM_IOEVENTFD_FLAG_DATAMATCH = KVM_IOEVENTFD_FLAG_DATAMATCH;
static const unsigned int CKVM_IOEVENTFD_FLAG_PIO = KVM_IOEVENTFD_FLAG_PIO;
static const unsigned int CKVM_IOEVENTFD_FLAG_DEASSIGN = KVM_IOEVENTFD_FLAG_DEASSIGN;
static const unsigned int CKVM_IRQFD_FLAG_DEASSIGN = KVM_IRQFD_FLAG_DEASSIGN;
static const unsigned int CKVM_CAP_SPLIT_IRQCHIP = KVM_CAP_SPLIT_IRQCHIP;
static const unsigned int CKVM_IRQ_ROUTING_MSI = KVM_IRQ_ROUTING_MSI;
// Snapshots: the interrupt controllers, the PIT and the clock.
static const unsigned long CKVM_GET_IRQCHIP = KVM_GET_IRQCHIP;
static const unsigned long CKVM_SET_IRQCHIP = KVM_SET_IRQCHIP;
static const unsigned long CKVM_GET_PIT2 = KVM_GET_PIT2;
static const unsigned long CKVM_SET_PIT2 = KVM_SET_PIT2;

// --- vCPU fd ---
static const unsigned long CKVM_RUN = KVM_RUN;
static const unsigned long CKVM_GET_REGS = KVM_GET_REGS;
static const unsigned long CKVM_SET_REGS = KVM_SET_REGS;
static const unsigned long CKVM_GET_SREGS = KVM_GET_SREGS;
static const unsigned long CKVM_SET_SREGS = KVM_SET_SREGS;
static const unsigned long CKVM_GET_FPU = KVM_GET_FPU;
static const unsigned long CKVM_SET_FPU = KVM_SET_FPU;
static const unsigned long CKVM_GET_MSRS = KVM_GET_MSRS;
static const unsigned long CKVM_SET_MSRS = KVM_SET_MSRS;
static const unsigned long CKVM_GET_LAPIC = KVM_GET_LAPIC;
static const unsigned long CKVM_SET_LAPIC = KVM_SET_LAPIC;
static const unsigned long CKVM_GET_VCPU_EVENTS = KVM_GET_VCPU_EVENTS;
static const unsigned long CKVM_SET_VCPU_EVENTS = KVM_SET_VCPU_EVENTS;
static const unsigned long CKVM_GET_MP_STATE = KVM_GET_MP_STATE;
static const unsigned long CKVM_SET_MP_STATE = KVM_SET_MP_STATE;
static const unsigned long CKVM_GET_XCRS = KVM_GET_XCRS;
static const unsigned long CKVM_SET_XCRS = KVM_SET_XCRS;
static const unsigned long CKVM_GET_DEBUGREGS = KVM_GET_DEBUGREGS;
static const unsigned long CKVM_SET_DEBUGREGS = KVM_SET_DEBUGREGS;
static const unsigned long CKVM_SET_CPUID2 = KVM_SET_CPUID2;
static const unsigned long CKVM_GET_CPUID2 = KVM_GET_CPUID2;
static const unsigned long CKVM_SET_GUEST_DEBUG = KVM_SET_GUEST_DEBUG;
static const unsigned long CKVM_NMI = KVM_NMI;
static const unsigned long CKVM_TRANSLATE = KVM_TRANSLATE;
// Snapshots: XSAVE state (KVM_GET_XSAVE2 sized by KVM_CAP_XSAVE2) and the TSC frequency.
static const unsigned long CKVM_GET_XSAVE = KVM_GET_XSAVE;
static const unsigned long CKVM_GET_XSAVE2 = KVM_GET_XSAVE2;
static const unsigned long CKVM_SET_XSAVE = KVM_SET_XSAVE;
static const unsigned long CKVM_GET_TSC_KHZ = KVM_GET_TSC_KHZ;

/// The ioctl clock: while `ckvm_ioctl_clock_on` is set (ckvm_ioctl_clock_start), every
/// ioctl below adds the nanoseconds it spent in the kernel to `ckvm_ioctl_clock_ns[0]`,
/// or to `[1]` for KVM_RUN. For benchmarks that split a restore into the kernel's part
/// and the VMM's; off, it costs one relaxed load per ioctl.
extern int ckvm_ioctl_clock_on;
extern unsigned long long ckvm_ioctl_clock_ns[2];
void ckvm_ioctl_clock_start(void);
void ckvm_ioctl_clock_stop(void);
/// Nanoseconds counted since the start: `which` 0 for every ioctl but KVM_RUN, 1 for KVM_RUN.
unsigned long long ckvm_ioctl_clock_read(int which);
int ckvm_ioctl_timed(int fd, unsigned long request, unsigned long arg);

/// ioctl(2) with a pointer argument, non-variadic so Swift can call it.
static inline int ckvm_ioctl(int fd, unsigned long request, void *arg) {
    if (__builtin_expect(__atomic_load_n(&ckvm_ioctl_clock_on, __ATOMIC_RELAXED), 0)) {
        return ckvm_ioctl_timed(fd, request, (unsigned long)arg);
    }
    return ioctl(fd, request, arg);
}

/// ioctl(2) with an integer argument (KVM_CREATE_VM's type, KVM_CREATE_VCPU's id, ...).
static inline int ckvm_ioctl_int(int fd, unsigned long request, unsigned long arg) {
    if (__builtin_expect(__atomic_load_n(&ckvm_ioctl_clock_on, __ATOMIC_RELAXED), 0)) {
        return ckvm_ioctl_timed(fd, request, arg);
    }
    return ioctl(fd, request, arg);
}

/// memfd_create(2) through the raw system call: glibc's wrapper needs _GNU_SOURCE.
static inline int ckvm_memfd_create(const char *name, unsigned int flags) {
    return (int)syscall(SYS_memfd_create, name, flags);
}

/// open(2) without the variadic mode argument.
static inline int ckvm_open(const char *path, int flags) {
    return open(path, flags);
}

/// fcntl(2) with an integer argument (F_ADD_SEALS and friends).
static inline int ckvm_fcntl_int(int fd, int cmd, int arg) {
    return fcntl(fd, cmd, arg);
}

/// prctl(PR_SET_NAME): names the calling thread (prctl is variadic).
static inline int ckvm_set_thread_name(const char *name) {
    return prctl(PR_SET_NAME, name, 0, 0, 0);
}

/// eventfd(2) (KVM_IOEVENTFD and KVM_IRQFD signal through these); <sys/eventfd.h>
/// is not visible to Swift's Glibc module.
static inline int ckvm_eventfd(unsigned int initval, int flags) {
    return (int)syscall(SYS_eventfd2, initval, flags);
}
static const int CKVM_EFD_CLOEXEC = 02000000;
static const int CKVM_EFD_NONBLOCK = 04000;

/// getrandom(2) (glibc declares it only in <sys/random.h>, hidden from Swift).
static inline long ckvm_getrandom(void *buffer, size_t length, unsigned int flags) {
    return syscall(SYS_getrandom, buffer, length, flags);
}

/// fallocate(2) (GNU-only in glibc): hole punching and zeroing for block devices.
static inline int ckvm_fallocate(int fd, int mode, long long offset, long long length) {
    return (int)syscall(SYS_fallocate, fd, mode, offset, length);
}
static const int CKVM_FALLOC_FL_KEEP_SIZE = 0x01;
static const int CKVM_FALLOC_FL_PUNCH_HOLE = 0x02;
static const int CKVM_FALLOC_FL_ZERO_RANGE = 0x10;
/// lseek whence values for sparse files (GNU-only in glibc's <unistd.h>; Linux ABI values).
static const int CKVM_SEEK_DATA = 3;
static const int CKVM_SEEK_HOLE = 4;
/// O_DIRECT (GNU-only in glibc's <fcntl.h>; the value is the x86-64 ABI's).
static const int CKVM_O_DIRECT = 040000;

#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 0x0001U
#endif
#ifndef MFD_ALLOW_SEALING
#define MFD_ALLOW_SEALING 0x0002U
#endif
// memfd seals (<linux/fcntl.h> clashes with glibc's <fcntl.h>; values are ABI).
#ifndef F_ADD_SEALS
#define F_ADD_SEALS 1033
#define F_SEAL_SHRINK 0x0002
#define F_SEAL_GROW 0x0004
#endif
static const int CKVM_F_ADD_SEALS = F_ADD_SEALS;
static const int CKVM_F_SEAL_SHRINK = F_SEAL_SHRINK;
static const int CKVM_F_SEAL_GROW = F_SEAL_GROW;
static const unsigned int CKVM_MFD_CLOEXEC = MFD_CLOEXEC;
static const unsigned int CKVM_MFD_ALLOW_SEALING = MFD_ALLOW_SEALING;

// --- struct kvm_run field offsets ---
// The exit path reads kvm_run through these byte offsets so that no Swift code copies
// the (2 KiB+) struct or its anonymous union on every exit.
#include <stddef.h>
static const size_t CKVM_RUN_IMMEDIATE_EXIT = offsetof(struct kvm_run, immediate_exit);
static const size_t CKVM_RUN_EXIT_REASON = offsetof(struct kvm_run, exit_reason);
static const size_t CKVM_RUN_IF_FLAG = offsetof(struct kvm_run, if_flag);
static const size_t CKVM_RUN_IO_DIRECTION = offsetof(struct kvm_run, io.direction);
static const size_t CKVM_RUN_IO_SIZE = offsetof(struct kvm_run, io.size);
static const size_t CKVM_RUN_IO_PORT = offsetof(struct kvm_run, io.port);
static const size_t CKVM_RUN_IO_COUNT = offsetof(struct kvm_run, io.count);
static const size_t CKVM_RUN_IO_DATA_OFFSET = offsetof(struct kvm_run, io.data_offset);
static const size_t CKVM_RUN_MMIO_PHYS_ADDR = offsetof(struct kvm_run, mmio.phys_addr);
static const size_t CKVM_RUN_MMIO_DATA = offsetof(struct kvm_run, mmio.data);
static const size_t CKVM_RUN_MMIO_LEN = offsetof(struct kvm_run, mmio.len);
static const size_t CKVM_RUN_MMIO_IS_WRITE = offsetof(struct kvm_run, mmio.is_write);
static const size_t CKVM_RUN_SYSTEM_EVENT_TYPE = offsetof(struct kvm_run, system_event.type);
static const size_t CKVM_RUN_SYSTEM_EVENT_NDATA = offsetof(struct kvm_run, system_event.ndata);
static const size_t CKVM_RUN_SYSTEM_EVENT_DATA = offsetof(struct kvm_run, system_event.data);
static const size_t CKVM_RUN_INTERNAL_SUBERROR = offsetof(struct kvm_run, internal.suberror);
static const size_t CKVM_RUN_INTERNAL_NDATA = offsetof(struct kvm_run, internal.ndata);
static const size_t CKVM_RUN_INTERNAL_DATA = offsetof(struct kvm_run, internal.data);
static const size_t CKVM_RUN_DEBUG_EXCEPTION = offsetof(struct kvm_run, debug.arch.exception);
static const size_t CKVM_RUN_DEBUG_PC = offsetof(struct kvm_run, debug.arch.pc);
static const size_t CKVM_RUN_DEBUG_DR6 = offsetof(struct kvm_run, debug.arch.dr6);
static const size_t CKVM_RUN_DEBUG_DR7 = offsetof(struct kvm_run, debug.arch.dr7);
static const size_t CKVM_RUN_FAIL_ENTRY_REASON = offsetof(struct kvm_run, fail_entry.hardware_entry_failure_reason);
static const size_t CKVM_RUN_FAIL_ENTRY_CPU = offsetof(struct kvm_run, fail_entry.cpu);
static const size_t CKVM_RUN_HW_EXIT_REASON = offsetof(struct kvm_run, hw.hardware_exit_reason);
static const size_t CKVM_RUN_EX_EXCEPTION = offsetof(struct kvm_run, ex.exception);
static const size_t CKVM_RUN_VALID_REGS = offsetof(struct kvm_run, kvm_valid_regs);
static const size_t CKVM_RUN_DIRTY_REGS = offsetof(struct kvm_run, kvm_dirty_regs);
static const size_t CKVM_RUN_SYNC_REGS = offsetof(struct kvm_run, s.regs.regs);
static const size_t CKVM_RUN_SYNC_SS_DPL = offsetof(struct kvm_run, s.regs.sregs.ss.dpl);
static const size_t CKVM_RUN_SYNC_CS_L = offsetof(struct kvm_run, s.regs.sregs.cs.l);
static const unsigned long long CKVM_SYNC_X86_REGS = KVM_SYNC_X86_REGS;
static const unsigned long long CKVM_SYNC_X86_SREGS = KVM_SYNC_X86_SREGS;
static const size_t CKVM_RUN_EX_ERROR_CODE = offsetof(struct kvm_run, ex.error_code);
static const size_t CKVM_RUN_EOI_VECTOR = offsetof(struct kvm_run, eoi.vector);
static const size_t CKVM_RUN_SYNC_SREGS = offsetof(struct kvm_run, s.regs.sregs);
static const size_t CKVM_RUN_EMULATION_FAILURE_FLAGS = offsetof(struct kvm_run, emulation_failure.flags);
static const size_t CKVM_RUN_EMULATION_FAILURE_INSN_SIZE = offsetof(struct kvm_run, emulation_failure.insn_size);
static const size_t CKVM_RUN_EMULATION_FAILURE_INSN_BYTES = offsetof(struct kvm_run, emulation_failure.insn_bytes);
static const unsigned long long CKVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES = KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES;


#endif
