/*
 * mmio.h - what swift-vmm's C virtio guests share: types, the PVH start info, the
 * virtio-mmio register layout (virtio 1.2, 4.2.2), COM1 output, the result through
 * isa-debug-exit, command-line arguments, feature negotiation and finding a device.
 * Define GUEST_NAME (the prefix of the result line) before including it; a guest that
 * runs at ring 3 defines RING3 (no cli/hlt there: the debug-exit write ends the VM).
 * Builds for 32-bit and 64-bit guests: guest-physical addresses are below 4 GiB, and
 * ADDR()/PTR() convert between them and pointers.
 */
#ifndef GUEST_MMIO_H
#define GUEST_MMIO_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

struct hvm_start_info {
    u32 magic, version, flags, nr_modules;
    u64 modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
    u32 memmap_entries, reserved;
};

#define COM1 0x3f8
#define DEBUG_EXIT 0xf4
#define WINDOW_BASE 0xd0000000u
#define WINDOW_SIZE 0x1000u

/* virtio-mmio registers (virtio 1.2, 4.2.2) */
#define R_MAGIC 0x000
#define R_VERSION 0x004
#define R_DEVICE_ID 0x008
#define R_DEVICE_FEATURES 0x010
#define R_DEVICE_FEATURES_SEL 0x014
#define R_DRIVER_FEATURES 0x020
#define R_DRIVER_FEATURES_SEL 0x024
#define R_QUEUE_SEL 0x030
#define R_QUEUE_NUM_MAX 0x034
#define R_QUEUE_NUM 0x038
#define R_QUEUE_READY 0x044
#define R_QUEUE_NOTIFY 0x050
#define R_INTERRUPT_STATUS 0x060
#define R_INTERRUPT_ACK 0x064
#define R_STATUS 0x070
#define R_QUEUE_DESC_LOW 0x080
#define R_QUEUE_DESC_HIGH 0x084
#define R_QUEUE_DRIVER_LOW 0x090
#define R_QUEUE_DRIVER_HIGH 0x094
#define R_QUEUE_DEVICE_LOW 0x0a0
#define R_QUEUE_DEVICE_HIGH 0x0a4
#define R_CONFIG 0x100

#define S_ACKNOWLEDGE 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define S_NEEDS_RESET 64

#define F_VERSION_1_HI 1u /* bit 32 */

#define ADDR(p) ((u32)(unsigned long)(p))
#define PTR(a) ((void *)(unsigned long)(a))

#define D_NEXT 1
#define D_WRITE 2

#ifdef RING3
static inline void halt(void) { for (;;) __asm__ volatile("pause"); }
#else
static inline void halt(void) { __asm__ volatile("cli; hlt"); }
#endif

static inline void outb(u16 port, u8 value) { __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port)); }
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
static inline u32 rd(u32 base, u32 off) { return *(volatile u32 *)(unsigned long)(base + off); }
static inline void wr(u32 base, u32 off, u32 v) { *(volatile u32 *)(unsigned long)(base + off) = v; }

static inline void puts(const char *s) { while (*s) outb(COM1, (u8)*s++); }

static inline void __attribute__((noreturn)) finish(u8 code)
{
    puts(code == 0x10 ? GUEST_NAME ": ok\n" : GUEST_NAME ": FAILED\n");
    outb(DEBUG_EXIT, code);
    for (;;) halt();
}

#define CHECK(n, cond) do { if (!(cond)) finish(0x20 + (n)); } while (0)

/* "key=value" in the command line: returns value (terminated by space or NUL) or 0. */
static inline const char *arg(const char *cmdline, const char *key)
{
    for (const char *p = cmdline; p && *p; p++) {
        if (p != cmdline && p[-1] != ' ') continue;
        const char *k = key, *q = p;
        while (*k && *q == *k) { k++; q++; }
        if (!*k && *q == '=') return q + 1;
    }
    return 0;
}

static inline int word_is(const char *v, const char *w)
{
    if (!v) return 0;
    while (*w && *v == *w) { v++; w++; }
    return !*w && (*v == ' ' || *v == 0);
}

/* Reset and negotiate: VERSION_1 plus what `want` asks of the low word. Returns the
 * device's low feature word; checks fail with `n`. */
static inline u32 negotiate(u32 base, u32 want, int n)
{
    wr(base, R_STATUS, 0);
    CHECK(n, rd(base, R_STATUS) == 0);
    wr(base, R_STATUS, S_ACKNOWLEDGE);
    wr(base, R_STATUS, S_ACKNOWLEDGE | S_DRIVER);
    wr(base, R_DEVICE_FEATURES_SEL, 1);
    CHECK(n, rd(base, R_DEVICE_FEATURES) & F_VERSION_1_HI);
    wr(base, R_DEVICE_FEATURES_SEL, 0);
    u32 offered = rd(base, R_DEVICE_FEATURES);
    wr(base, R_DRIVER_FEATURES_SEL, 0);
    wr(base, R_DRIVER_FEATURES, offered & want);
    wr(base, R_DRIVER_FEATURES_SEL, 1);
    wr(base, R_DRIVER_FEATURES, F_VERSION_1_HI);
    wr(base, R_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
    CHECK(n, rd(base, R_STATUS) & S_FEATURES_OK);
    return offered;
}

static inline u32 find(u32 device_id, u32 from)
{
    for (u32 i = from; i < 8; i++) {
        u32 base = WINDOW_BASE + i * WINDOW_SIZE;
        if (rd(base, R_MAGIC) == 0x74726976 && rd(base, R_VERSION) == 2 && rd(base, R_DEVICE_ID) == device_id)
            return base;
    }
    return 0;
}

#endif
