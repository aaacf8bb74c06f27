/*
 * target.c - the gdb test guest's program (64-bit, higher half, paging on).
 *
 * What the debugger tests do to it: break at checkpoint(), read greeting with x/s (a
 * virtual address the page walk must translate), change value with set var (the output
 * line "value=N" shows it), watch counter, stepi through stepping(), interrupt the spin
 * loop and end it by clearing keep_spinning, detach and see the exit status, which is
 * (value << 1) | 1 through isa-debug-exit.
 *
 * The command line picks extras: "spin" spins until keep_spinning is cleared, "smp"
 * waits for the second vCPU first.
 */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;

struct hvm_start_info {
    u32 magic;
    u32 version;
    u32 flags;
    u32 nr_modules;
    u64 modlist_paddr;
    u64 cmdline_paddr;
    u64 rsdp_paddr;
};

#define COM1 0x3f8
#define DEBUG_EXIT 0xf4
#define AP_COUNTER ((volatile u32 *)0x9004)   /* identity-mapped: the AP writes it in real mode */

const char greeting[] = "hello from the gdb target";
volatile int value = 7;
volatile int counter;
volatile int keep_spinning = 1;
volatile u64 spins;
volatile int reached;

int stepping(void);
void c_main(u64 start_info);

static inline void outb(u16 port, u8 v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static void puts_com1(const char *s)
{
    while (*s)
        outb(COM1, (u8)*s++);
}

static void putnum(int n)
{
    char buf[12];
    int i = sizeof buf - 1;
    unsigned v = n < 0 ? -(unsigned)n : (unsigned)n;

    buf[i] = 0;
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v && i > 1);
    if (n < 0)
        buf[--i] = '-';
    puts_com1(&buf[i]);
}

/* Whether the command line holds word w. */
static int has_word(const char *cmdline, const char *w)
{
    for (const char *p = cmdline; p && *p; p++) {
        const char *a = p, *b = w;
        while (*b && *a == *b) {
            a++;
            b++;
        }
        if (!*b && (*a == 0 || *a == ' ') && (p == cmdline || p[-1] == ' '))
            return 1;
    }
    return 0;
}

__attribute__((noinline)) void checkpoint(int n)
{
    reached = n;
    __asm__ volatile("" : : : "memory");
}

void c_main(u64 start_info)
{
    const struct hvm_start_info *si = (const struct hvm_start_info *)start_info;
    const char *cmdline = si->cmdline_paddr ? (const char *)si->cmdline_paddr : "";

    puts_com1("gdb-target: ");
    puts_com1(greeting);
    puts_com1("\n");
    if (has_word(cmdline, "smp")) {
        for (u32 i = 0; i < 2000000 && *AP_COUNTER == 0; i++)
            ;
        puts_com1(*AP_COUNTER ? "gdb-target: 2 cpus\n" : "gdb-target: AP missing\n");
    }
    checkpoint(1);
    stepping();
    puts_com1("value=");
    putnum(value);
    puts_com1("\n");
    counter = 1;
    counter = 2;
    if (has_word(cmdline, "spin")) {
        puts_com1("spinning\n");
        while (keep_spinning)
            spins++;
        puts_com1("spun\n");
    }
    checkpoint(2);
    puts_com1("bye\n");
    outb(DEBUG_EXIT, (u8)(value & 0x7f));
    for (;;)
        __asm__ volatile("cli; hlt");
}
