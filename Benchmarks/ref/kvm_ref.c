/*
 * kvm_ref.c - reference numbers for the swift-vmm benchmarks, on raw KVM ioctls.
 *
 * Build:  cc -O2 -o kvm_ref kvm_ref.c
 *
 *   kvm_ref exit-path GUEST.elf N
 *       One VM (64 MiB RAM, in-kernel irqchip + PIT, one vCPU), N written to
 *       guest-physical 0x9000, then run until the guest writes port 0xf4.
 *       Meant for Guests/bench.S, which does N `outb` to port 0x80 from
 *       ring 3.  Only the KVM_RUN loop is timed.
 *       Prints: exit-path iterations=N ns_total=T ns_per_exit=T/N
 *
 *   kvm_ref lifecycle GUEST.elf K
 *       K times: open /dev/kvm, create and set up a VM exactly as above,
 *       load the ELF, run it until it writes port 0xf4, tear everything
 *       down.  Meant for Guests/exit.S.  The whole loop is timed.
 *       Prints: lifecycle iterations=K ns_total=T ns_per_vm=T/K
 *               teardown_ns_per_vm=D/K (D: the time spent closing VMs)
 *
 *   kvm_ref run GUEST.elf
 *       The whole-process cold start: one VM as above, COM1 bytes to stdout,
 *       run until the guest writes port 0xf4 or powers off (port 0x600).
 *
 *   --irqchip=split before the mode: KVM_CAP_SPLIT_IRQCHIP (swift-vmm --irqchip
 *   split) instead of KVM_CREATE_IRQCHIP + KVM_CREATE_PIT2 (its default).
 *
 * The set-up mirrors what swift-vmm does, so the numbers are comparable:
 * memfd-backed RAM, KVM_SET_TSS_ADDR, KVM_CAP_SPLIT_IRQCHIP (or KVM_CREATE_IRQCHIP
 * and KVM_CREATE_PIT2),
 * KVM_SET_CPUID2 from KVM_GET_SUPPORTED_CPUID, PVH entry state.  Port 0x80
 * writes are stored and counted (like swift-vmm's POST-code device), COM1
 * bytes are counted, every other port is ignored (reads return 0xff).
 *
 * Guests are PVH ELF files (ELF32 or ELF64): PT_LOAD segments are copied to
 * guest memory at p_paddr, PT_NOTE segments are searched for the Xen note
 * of type 18 (XEN_ELFNOTE_PHYS32_ENTRY) that gives the 32-bit entry point.
 *
 * Any failure prints what failed (the ioctl name for ioctls) and
 * strerror(errno), and exits with status 2.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "include/kvm_ref.h"

#define GUEST_MEM_SIZE      (64ull << 20)
#define TSS_ADDR            0xfffbd000ul
#define START_INFO_ADDR     0x6000u
#define SCRATCH_ADDR        0x9000u    /* bench.S reads N from here */
#define HVM_START_MAGIC     0x336ec578u
#define XEN_ELFNOTE_PHYS32_ENTRY 18

#define PORT_POST           0x80
#define PORT_DEBUG_EXIT     0xf4
#define PORT_ACPI_SLEEP     0x600      /* swift-vmm's ACPI sleep control: power-off */
#define PORT_COM1_BASE      0x3f8
#define PORT_COM1_END       0x400

#define MAX_ELF_SIZE        (16u << 20)

/* ------------------------------------------------------------------------ */
/* Error handling                                                           */

static void fail(const char *what)
{
    fprintf(stderr, "kvm_ref: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void failx(const char *fmt, ...)
{
    va_list ap;

    fputs("kvm_ref: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

/* ioctl that dies with the request's name on failure */
#define IOCTL(fd, req, arg) xioctl((fd), (req), (arg), #req)

static int xioctl(int fd, unsigned long req, void *arg, const char *name)
{
    int r;

    do {
        r = ioctl(fd, req, arg);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        fail(name);
    return r;
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        fail("clock_gettime");
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------------------ */
/* ELF loading                                                              */

struct file_buf {
    uint8_t *data;
    size_t size;
};

static struct file_buf read_file(const char *path)
{
    struct file_buf f = { 0 };
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        fail(path);
    if (fstat(fd, &st) != 0)
        fail("fstat");
    if (st.st_size <= 0 || (uint64_t)st.st_size > MAX_ELF_SIZE)
        failx("%s: unreasonable file size %lld", path, (long long)st.st_size);
    f.size = (size_t)st.st_size;
    f.data = malloc(f.size);
    if (!f.data)
        fail("malloc");
    for (size_t done = 0; done < f.size;) {
        ssize_t n = read(fd, f.data + done, f.size - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            fail("read");
        if (n == 0)
            failx("%s: file shrank while reading", path);
        done += (size_t)n;
    }
    close(fd);
    return f;
}

/* Program header fields we use, independent of ELF class. */
struct phdr {
    uint32_t type;
    uint64_t offset, paddr, filesz, memsz, align;
};

/* true if [off, off + len) lies inside [0, size) (no overflow) */
static int in_bounds(uint64_t off, uint64_t len, uint64_t size)
{
    return off <= size && len <= size - off;
}

static uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);     /* ELF data is little-endian, as is the host */
    return v;
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) & ~(a - 1);
}

/*
 * Search one PT_NOTE segment for the Xen PHYS32_ENTRY note.  Returns 1 and
 * sets *entry if found.  Each note is a 12-byte header, the name and the
 * descriptor; name and descriptor start at offsets aligned to 4 (or to 8 in
 * a segment with p_align 8, e.g. .note.gnu.property), counted from the start
 * of the segment.
 */
static int scan_notes(const struct file_buf *f, const struct phdr *ph,
                      uint32_t *entry)
{
    const uint8_t *seg;
    uint64_t a = ph->align == 8 ? 8 : 4;
    uint64_t pos = 0;

    if (!in_bounds(ph->offset, ph->filesz, f->size))
        failx("PT_NOTE outside the file");
    seg = f->data + ph->offset;

    while (ph->filesz - pos >= 12) {
        uint32_t namesz = rd32(seg + pos);
        uint32_t descsz = rd32(seg + pos + 4);
        uint32_t type = rd32(seg + pos + 8);
        uint64_t name = pos + 12;
        uint64_t desc = align_up(name + namesz, a);
        uint64_t next = align_up(desc + descsz, a);

        if (desc + descsz > ph->filesz)
            failx("malformed ELF note");
        if (type == XEN_ELFNOTE_PHYS32_ENTRY && namesz == 4 &&
            memcmp(seg + name, "Xen", 4) == 0) {
            /* 4-byte (Xen) or 8-byte (Linux x86-64) descriptor */
            if (descsz != 4 && descsz != 8)
                failx("PHYS32_ENTRY note with descsz %u", descsz);
            *entry = rd32(seg + desc);
            return 1;
        }
        if (next >= ph->filesz)
            break;
        pos = next;
    }
    return 0;
}

/*
 * Copy the PT_LOAD segments of an ELF32/ELF64 x86 file into guest memory and
 * return the PVH entry point.
 */
static uint32_t load_pvh_elf(const struct file_buf *f, uint8_t *mem,
                             uint64_t mem_size)
{
    const uint8_t *d = f->data;
    int is64;
    uint64_t phoff;
    unsigned phnum, phentsize;
    uint32_t entry = 0;
    int have_entry = 0, nload = 0;

    if (f->size < EI_NIDENT || memcmp(d, ELFMAG, SELFMAG) != 0)
        failx("not an ELF file");
    if (d[EI_DATA] != ELFDATA2LSB)
        failx("not a little-endian ELF file");
    if (d[EI_CLASS] == ELFCLASS32) {
        Elf32_Ehdr eh;
        if (f->size < sizeof eh)
            failx("truncated ELF header");
        memcpy(&eh, d, sizeof eh);
        if (eh.e_machine != EM_386 && eh.e_machine != EM_X86_64)
            failx("ELF machine %u is not x86", eh.e_machine);
        is64 = 0;
        phoff = eh.e_phoff;
        phnum = eh.e_phnum;
        phentsize = eh.e_phentsize;
        if (phentsize < sizeof(Elf32_Phdr))
            failx("bad e_phentsize");
    } else if (d[EI_CLASS] == ELFCLASS64) {
        Elf64_Ehdr eh;
        if (f->size < sizeof eh)
            failx("truncated ELF header");
        memcpy(&eh, d, sizeof eh);
        if (eh.e_machine != EM_386 && eh.e_machine != EM_X86_64)
            failx("ELF machine %u is not x86", eh.e_machine);
        is64 = 1;
        phoff = eh.e_phoff;
        phnum = eh.e_phnum;
        phentsize = eh.e_phentsize;
        if (phentsize < sizeof(Elf64_Phdr))
            failx("bad e_phentsize");
    } else {
        failx("unknown ELF class %u", d[EI_CLASS]);
    }
    if (phnum == 0 || !in_bounds(phoff, (uint64_t)phnum * phentsize, f->size))
        failx("program headers outside the file");

    for (unsigned i = 0; i < phnum; i++) {
        const uint8_t *p = d + phoff + (uint64_t)i * phentsize;
        struct phdr ph;

        if (is64) {
            Elf64_Phdr e;
            memcpy(&e, p, sizeof e);
            ph = (struct phdr){ e.p_type, e.p_offset, e.p_paddr,
                                e.p_filesz, e.p_memsz, e.p_align };
        } else {
            Elf32_Phdr e;
            memcpy(&e, p, sizeof e);
            ph = (struct phdr){ e.p_type, e.p_offset, e.p_paddr,
                                e.p_filesz, e.p_memsz, e.p_align };
        }

        if (ph.type == PT_LOAD) {
            if (ph.filesz > ph.memsz)
                failx("PT_LOAD %u: p_filesz > p_memsz", i);
            if (!in_bounds(ph.offset, ph.filesz, f->size))
                failx("PT_LOAD %u: file data outside the file", i);
            if (!in_bounds(ph.paddr, ph.memsz, mem_size))
                failx("PT_LOAD %u: [0x%" PRIx64 ", +0x%" PRIx64 ") outside "
                      "guest RAM", i, ph.paddr, ph.memsz);
            memcpy(mem + ph.paddr, d + ph.offset, ph.filesz);
            memset(mem + ph.paddr + ph.filesz, 0, ph.memsz - ph.filesz);
            nload++;
        } else if (ph.type == PT_NOTE && !have_entry) {
            have_entry = scan_notes(f, &ph, &entry);
        }
    }
    if (nload == 0)
        failx("no PT_LOAD segment");
    if (!have_entry)
        failx("no Xen PHYS32_ENTRY note (not a PVH kernel)");
    if (entry >= mem_size)
        failx("entry point 0x%x outside guest RAM", entry);
    return entry;
}

/* ------------------------------------------------------------------------ */
/* VM set-up                                                                */

struct vm {
    int kvm, vm, vcpu, memfd;
    uint8_t *mem;
    struct kvm_run *run;
    size_t run_size;
};

struct io_stats {
    uint64_t hypercalls;    /* doorbell rings handled (hypercall mode) */
    uint64_t post_count;    /* port 0x80 writes (bytes) */
    uint8_t post_last;      /* the last POST code, like swift-vmm keeps */
    uint64_t com1_bytes;    /* bytes written to the COM1 THR */
    int exit_value;         /* value written to 0xf4, -1 while running */
};

static struct kvm_cpuid2 *supported_cpuid(int kvm)
{
    unsigned nent = 128;

    for (;;) {
        struct kvm_cpuid2 *c = calloc(1, sizeof *c +
                                      nent * sizeof(struct kvm_cpuid_entry2));
        if (!c)
            fail("calloc");
        c->nent = nent;
        if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, c) == 0)
            return c;
        free(c);
        if (errno != E2BIG || nent >= 4096)
            fail("KVM_GET_SUPPORTED_CPUID");
        nent *= 2;
    }
}

/* 1: KVM_CREATE_IRQCHIP + KVM_CREATE_PIT2 (swift-vmm's default, --irqchip kernel);
 * 0: the split irqchip (--irqchip split: KVM's local APICs only, 24 IOAPIC GSIs). */
static int irqchip_kernel = 1;
/* 1: COM1 bytes go to stdout (the `run` mode, as `vmmctl run` prints them). */
static int echo_com1;

/* Open /dev/kvm and create a VM + one vCPU with RAM, irqchip (and PIT), CPUID. */
static void vm_create(struct vm *v)
{
    struct kvm_pit_config pit = { .flags = 0 };
    struct kvm_userspace_memory_region region;
    struct kvm_cpuid2 *cpuid;
    int r;

    memset(v, 0, sizeof *v);
    v->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (v->kvm < 0)
        fail("open /dev/kvm");
    r = IOCTL(v->kvm, KVM_GET_API_VERSION, NULL);
    if (r != KVM_API_VERSION)
        failx("KVM API version %d, expected %d", r, KVM_API_VERSION);

    v->vm = IOCTL(v->kvm, KVM_CREATE_VM, (void *)0);
    IOCTL(v->vm, KVM_SET_TSS_ADDR, (void *)TSS_ADDR);
    if (irqchip_kernel) {
        IOCTL(v->vm, KVM_CREATE_IRQCHIP, NULL);
        IOCTL(v->vm, KVM_CREATE_PIT2, &pit);
    } else {
        struct kvm_enable_cap cap = { .cap = KVM_CAP_SPLIT_IRQCHIP, .args = { 24 } };
        IOCTL(v->vm, KVM_ENABLE_CAP, &cap);
    }

    v->memfd = memfd_create("kvm_ref-ram", MFD_CLOEXEC);
    if (v->memfd < 0)
        fail("memfd_create");
    if (ftruncate(v->memfd, (off_t)GUEST_MEM_SIZE) != 0)
        fail("ftruncate");
    v->mem = mmap(NULL, GUEST_MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
                  v->memfd, 0);
    if (v->mem == MAP_FAILED)
        fail("mmap guest RAM");
    region = (struct kvm_userspace_memory_region){
        .slot = 0,
        .guest_phys_addr = 0,
        .memory_size = GUEST_MEM_SIZE,
        .userspace_addr = (uint64_t)(uintptr_t)v->mem,
    };
    IOCTL(v->vm, KVM_SET_USER_MEMORY_REGION, &region);

    v->vcpu = IOCTL(v->vm, KVM_CREATE_VCPU, (void *)0);
    r = IOCTL(v->kvm, KVM_GET_VCPU_MMAP_SIZE, NULL);
    v->run_size = (size_t)r;
    v->run = mmap(NULL, v->run_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                  v->vcpu, 0);
    if (v->run == MAP_FAILED)
        fail("mmap kvm_run");

    cpuid = supported_cpuid(v->kvm);
    IOCTL(v->vcpu, KVM_SET_CPUID2, cpuid);
    free(cpuid);
}

static void vm_destroy(struct vm *v)
{
    munmap(v->run, v->run_size);
    close(v->vcpu);
    close(v->vm);
    munmap(v->mem, GUEST_MEM_SIZE);
    close(v->memfd);
    close(v->kvm);
}

/* Load the guest, write start_info, and set the PVH entry register state. */
static void vm_boot_pvh(struct vm *v, const struct file_buf *elf)
{
    struct kvm_sregs sregs;
    struct kvm_regs regs;
    uint32_t entry = load_pvh_elf(elf, v->mem, GUEST_MEM_SIZE);
    uint32_t magic = HVM_START_MAGIC;
    struct kvm_segment code = {
        .base = 0, .limit = 0xffffffff, .selector = 0x08,
        .type = 0xb,                    /* execute/read, accessed */
        .present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1,
    };
    struct kvm_segment data = code;
    struct kvm_segment tr = {
        .base = 0, .limit = 0x67, .selector = 0x18,
        .type = 0xb,                    /* busy 32-bit TSS */
        .present = 1, .dpl = 0, .db = 0, .s = 0, .l = 0, .g = 0,
    };

    data.selector = 0x10;
    data.type = 0x3;                    /* read/write, accessed */

    /* hvm_start_info: magic, everything else (version, cmdline...) zero */
    memset(v->mem + START_INFO_ADDR, 0, 56);
    memcpy(v->mem + START_INFO_ADDR, &magic, 4);

    IOCTL(v->vcpu, KVM_GET_SREGS, &sregs);
    sregs.cs = code;
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
    sregs.tr = tr;
    sregs.cr0 = 0x11;                   /* PE | ET, paging off */
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    IOCTL(v->vcpu, KVM_SET_SREGS, &sregs);

    memset(&regs, 0, sizeof regs);
    regs.rip = entry;
    regs.rflags = 0x2;
    regs.rbx = START_INFO_ADDR;
    IOCTL(v->vcpu, KVM_SET_REGS, &regs);
}

/* ------------------------------------------------------------------------ */
/* Run loop                                                                 */

/* Hypercall mode: the swift-vmm doorbell (docs/hypercalls.md) served the way
 * swift-vmm serves it: registers from the sync-regs area, CPL from SS.DPL,
 * arguments masked to 32 bits outside 64-bit mode, the result written back to
 * RAX and marked dirty.  Only abi_info (any ring) and power_off (ring 0) are
 * known here; that is all the benchmark guest calls. */
#define PORT_DOORBELL 0x610
static int hypercalls_on;

static void handle_hypercall(struct kvm_run *run, struct io_stats *st)
{
    struct kvm_regs *regs = &run->s.regs.regs;
    uint64_t mask = run->s.regs.sregs.cs.l ? ~0ULL : 0xffffffffULL;
    uint64_t nr = regs->rax & mask;
    int ring = run->s.regs.sregs.ss.dpl & 3;
    uint64_t args[4] = { regs->rbx & mask, regs->rcx & mask, regs->rsi & mask, regs->rdi & mask };
    int64_t result;

    (void)args;
    st->hypercalls++;
    if (nr == 0)
        result = (0x7f << 16) | 1;          /* abi_info */
    else if (nr == 4)
        result = ring == 0 ? 0 : -1;        /* power_off: ring 0 only */
    else
        result = -2;
    regs->rax = (regs->rax & ~mask) | ((uint64_t)result & mask);
    run->kvm_dirty_regs |= KVM_SYNC_X86_REGS;
}

static void handle_io(struct kvm_run *run, struct io_stats *st)
{
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    uint16_t port = run->io.port;
    uint32_t n = run->io.count, size = run->io.size;

    if (hypercalls_on && port == PORT_DOORBELL && run->io.direction == KVM_EXIT_IO_OUT) {
        handle_hypercall(run, st);
        return;
    }

    if (run->io.direction == KVM_EXIT_IO_IN) {
        memset(data, 0xff, (size_t)size * n);   /* nothing claims any port */
        return;
    }
    if (port == PORT_POST) {
        st->post_last = data[(size_t)size * (n - 1)];
        st->post_count += n;
    } else if (port == PORT_DEBUG_EXIT) {
        st->exit_value = data[0];
    } else if (port == PORT_ACPI_SLEEP) {
        st->exit_value = 0;
    } else if (port >= PORT_COM1_BASE && port < PORT_COM1_END) {
        if (port == PORT_COM1_BASE) {
            st->com1_bytes += n;
            if (echo_com1 && write(1, data, (size_t)size * n) < 0)
                fail("write stdout");
        }
    }
    /* other ports: ignored */
}

/* KVM_EXIT_INTERNAL_ERROR: say where (suberror 1 = instruction emulation
 * failed, which on some hosts means "this instruction cannot be emulated"). */
static void report_internal_error(struct vm *v)
{
    struct kvm_regs regs;
    struct kvm_sregs sregs;

    fprintf(stderr, "kvm_ref: KVM_RUN: internal error, suberror %u",
            v->run->internal.suberror);
    if (ioctl(v->vcpu, KVM_GET_REGS, &regs) == 0 &&
        ioctl(v->vcpu, KVM_GET_SREGS, &sregs) == 0)
        fprintf(stderr, " at cs:rip %04x:%llx (cs base %llx, cpl %u)",
                sregs.cs.selector, (unsigned long long)regs.rip,
                (unsigned long long)sregs.cs.base, sregs.cs.dpl);
    for (uint32_t i = 0; i < v->run->internal.ndata && i < 16; i++)
        fprintf(stderr, "%s%llx", i ? " " : ", data ",
                (unsigned long long)v->run->internal.data[i]);
    fputc('\n', stderr);
    exit(2);
}

static void run_until_exit(struct vm *v, struct io_stats *st)
{
    struct kvm_run *run = v->run;

    st->exit_value = -1;
    while (st->exit_value < 0) {
        if (ioctl(v->vcpu, KVM_RUN, NULL) < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            fail("KVM_RUN");
        }
        switch (run->exit_reason) {
        case KVM_EXIT_IO:
            handle_io(run, st);
            break;
        case KVM_EXIT_MMIO:
            if (!run->mmio.is_write)
                memset(run->mmio.data, 0xff, sizeof run->mmio.data);
            break;
        case KVM_EXIT_SHUTDOWN:
            failx("guest shut down (triple fault) before writing port 0xf4");
            break;
        case KVM_EXIT_HLT:
            failx("guest halted before writing port 0xf4");
            break;
        case KVM_EXIT_FAIL_ENTRY:
            failx("KVM_RUN: entry failed, hardware reason 0x%llx",
                  (unsigned long long)
                  run->fail_entry.hardware_entry_failure_reason);
            break;
        case KVM_EXIT_INTERNAL_ERROR:
            report_internal_error(v);
            break;
        default:
            failx("KVM_RUN: unexpected exit reason %u", run->exit_reason);
        }
    }
}

/* ------------------------------------------------------------------------ */

/* ------------------------------------------------------------------------ */
/* Library API (kvm_ref.h)                                                  */

struct kvmref {
    struct vm v;
    struct file_buf elf;
    int hypercalls;
};

struct kvmref *kvmref_open(const char *guest_path, int hypercalls)
{
    struct kvmref *r = calloc(1, sizeof *r);

    if (!r)
        fail("calloc");
    r->elf = read_file(guest_path);
    r->hypercalls = hypercalls;
    vm_create(&r->v);
    return r;
}

uint64_t kvmref_run_batch(struct kvmref *r, uint32_t n)
{
    struct io_stats st = { 0 };
    uint64_t t0, t1;

    hypercalls_on = r->hypercalls;
    vm_boot_pvh(&r->v, &r->elf);
    if (r->hypercalls)
        r->v.run->kvm_valid_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
    memcpy(r->v.mem + SCRATCH_ADDR, &n, 4);
    t0 = now_ns();
    run_until_exit(&r->v, &st);
    t1 = now_ns();
    if (!r->hypercalls && st.post_count != n)
        failx("batch: %llu POST writes, expected %u", (unsigned long long)st.post_count, n);
    if (r->hypercalls && st.hypercalls != (uint64_t)n + 2)
        failx("batch: %llu hypercalls, expected %u", (unsigned long long)st.hypercalls, n + 2);
    return t1 - t0;
}

void kvmref_close(struct kvmref *r)
{
    vm_destroy(&r->v);
    free(r->elf.data);
    free(r);
}

#ifndef KVMREF_LIBRARY
static uint64_t parse_count(const char *s)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 0);
    if (errno || *s == '\0' || *end != '\0' || s[0] == '-')
        failx("bad count '%s'", s);
    return v;
}

static void cmd_exit_path(const char *path, uint64_t n)
{
    struct file_buf elf = read_file(path);
    struct io_stats st = { 0 };
    struct vm v;
    uint32_t n32 = (uint32_t)n;
    uint64_t t0, t1;

    if (n > UINT32_MAX)
        failx("N must fit in 32 bits");
    vm_create(&v);
    vm_boot_pvh(&v, &elf);
    memcpy(v.mem + SCRATCH_ADDR, &n32, 4);

    t0 = now_ns();
    run_until_exit(&v, &st);
    t1 = now_ns();

    if (st.post_count != n)
        failx("guest wrote port 0x80 %llu times, expected %llu",
              (unsigned long long)st.post_count, (unsigned long long)n);
    printf("exit-path iterations=%llu ns_total=%llu ns_per_exit=%.1f\n",
           (unsigned long long)n, (unsigned long long)(t1 - t0),
           n ? (double)(t1 - t0) / (double)n : 0.0);
    vm_destroy(&v);
    free(elf.data);
}

static void cmd_hypercall(const char *path, uint64_t n)
{
    struct file_buf elf = read_file(path);
    struct io_stats st = { 0 };
    struct vm v;
    uint32_t n32 = (uint32_t)n;
    uint64_t t0, t1;

    if (n > UINT32_MAX)
        failx("N must fit in 32 bits");
    hypercalls_on = 1;
    vm_create(&v);
    vm_boot_pvh(&v, &elf);
    v.run->kvm_valid_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS;
    memcpy(v.mem + SCRATCH_ADDR, &n32, 4);

    t0 = now_ns();
    run_until_exit(&v, &st);
    t1 = now_ns();

    /* the guest makes two calls before its loop of N */
    if (st.hypercalls != n + 2)
        failx("handled %llu hypercalls, expected %llu",
              (unsigned long long)st.hypercalls, (unsigned long long)n + 2);
    printf("hypercall iterations=%llu ns_total=%llu ns_per_call=%.1f\n",
           (unsigned long long)n, (unsigned long long)(t1 - t0),
           n ? (double)(t1 - t0) / (double)n : 0.0);
    vm_destroy(&v);
    free(elf.data);
}

static void cmd_lifecycle(const char *path, uint64_t k)
{
    uint64_t t0, t1, teardown = 0;

    t0 = now_ns();
    for (uint64_t i = 0; i < k; i++) {
        struct file_buf elf = read_file(path);
        struct io_stats st = { 0 };
        struct vm v;

        vm_create(&v);
        vm_boot_pvh(&v, &elf);
        run_until_exit(&v, &st);
        uint64_t d0 = now_ns();
        vm_destroy(&v);
        teardown += now_ns() - d0;
        free(elf.data);
    }
    t1 = now_ns();

    printf("lifecycle iterations=%llu ns_total=%llu ns_per_vm=%.1f teardown_ns_per_vm=%.1f\n",
           (unsigned long long)k, (unsigned long long)(t1 - t0),
           k ? (double)(t1 - t0) / (double)k : 0.0, k ? (double)teardown / (double)k : 0.0);
}

/* The whole-process cold start: one VM, COM1 to stdout, run to power-off or the
 * debug-exit write, torn down; what `vmmctl run --kernel GUEST` does. */
static void cmd_run(const char *path)
{
    struct file_buf elf = read_file(path);
    struct io_stats st = { 0 };
    struct vm v;

    echo_com1 = 1;
    vm_create(&v);
    vm_boot_pvh(&v, &elf);
    run_until_exit(&v, &st);
    vm_destroy(&v);
    free(elf.data);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strncmp(argv[1], "--irqchip=", 10) == 0) {
        if (strcmp(argv[1] + 10, "split") == 0)
            irqchip_kernel = 0;
        else if (strcmp(argv[1] + 10, "kernel") != 0)
            failx("unknown irqchip '%s' (kernel or split)", argv[1] + 10);
        argv[1] = argv[0];
        argv++;
        argc--;
    }
    if (argc == 3 && strcmp(argv[1], "run") == 0) {
        cmd_run(argv[2]);
        return 0;
    }
    if (argc != 4) {
        fprintf(stderr, "usage: %s [--irqchip=split|kernel] exit-path GUEST.elf N\n"
                        "       %s [--irqchip=...] hypercall GUEST.elf N\n"
                        "       %s [--irqchip=...] lifecycle GUEST.elf K\n"
                        "       %s [--irqchip=...] run GUEST.elf\n", argv[0], argv[0], argv[0], argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "exit-path") == 0)
        cmd_exit_path(argv[2], parse_count(argv[3]));
    else if (strcmp(argv[1], "hypercall") == 0)
        cmd_hypercall(argv[2], parse_count(argv[3]));
    else if (strcmp(argv[1], "lifecycle") == 0)
        cmd_lifecycle(argv[2], parse_count(argv[3]));
    else
        failx("unknown mode '%s'", argv[1]);
    return 0;
}
#endif /* KVMREF_LIBRARY */
