/*
 * hello.c - a PVH guest written in C, independent of the swift-vmm sources.
 *
 * Prints "Hello from C, cmdline=<cmdline>\n" on COM1 using the command line
 * from the PVH start_info, then exits through isa-debug-exit with 0x05
 * (exit status (5 << 1) | 1 = 11).
 *
 * Build (see ../build.sh):
 *   cc -m32 -ffreestanding -fno-pic -fno-stack-protector -nostdlib -O2 ...
 */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

/* struct hvm_start_info from Xen's public/arch-x86/hvm/start_info.h (v1). */
struct hvm_start_info {
    u32 magic;              /* 0x336ec578 */
    u32 version;
    u32 flags;
    u32 nr_modules;
    u64 modlist_paddr;
    u64 cmdline_paddr;
    u64 rsdp_paddr;
    u64 memmap_paddr;       /* version >= 1 */
    u32 memmap_entries;
    u32 reserved;
};

#define HVM_START_MAGIC 0x336ec578u
#define COM1            0x3f8
#define DEBUG_EXIT      0xf4

static inline void outb(u16 port, u8 value)
{
    __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static void puts_com1(const char *s)
{
    while (*s)
        outb(COM1, (u8)*s++);
}

void c_main(const struct hvm_start_info *si);

void c_main(const struct hvm_start_info *si)
{
    puts_com1("Hello from C, cmdline=");
    /* Paging is off, so only a pointer below 4 GiB is reachable. */
    if (si->magic == HVM_START_MAGIC && si->cmdline_paddr != 0 &&
        si->cmdline_paddr < 0x100000000ull)
        puts_com1((const char *)(u32)si->cmdline_paddr);
    else if (si->magic != HVM_START_MAGIC)
        puts_com1("<bad start_info magic>");
    puts_com1("\n");

    outb(DEBUG_EXIT, 0x05);             /* exit status 11 */
    for (;;)
        __asm__ volatile("cli; hlt");
}
