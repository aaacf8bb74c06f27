/*
 * virtio.c - a freestanding virtio-mmio driver guest for swift-vmm's tests.
 *
 * Boots through PVH (c-hello/start.S calls c_main), finds the virtio-mmio windows the
 * VMM placed from 0xd0000000 (one 4 KiB window per device), and runs the test its
 * command line names:
 *
 *   test=rw serial=ID   virtio-blk: reset, negotiate, one queue; write two sectors,
 *                       flush, read them back and compare; GET_ID must equal ID;
 *                       then virtio-rng (the next device): 64 bytes, not all zero
 *   test=ro             a read-only disk: VIRTIO_BLK_F_RO offered, a write answered
 *                       with VIRTIO_BLK_S_IOERR, a read still works
 *   test=loop           a descriptor chain that loops: the device must set
 *                       DEVICE_NEEDS_RESET and use nothing; after a reset it works
 *   test=hole           a data buffer in the MMIO hole: IOERR, device still works
 *   test=huge           a data buffer of 0xfffffe00 bytes: IOERR, device still works
 *   test=qsize0         queue size 0: QueueReady must read back 0
 *   test=early          a notify before DRIVER_OK is ignored; then the device works
 *   test=config         config space past its end and the window past the registers
 *                       read as 0; then the device works
 *   test=persist        write sector 8 with "persisted!", flush, print "flushed",
 *                       then idle forever (the test kills the VMM)
 *
 * Result: isa-debug-exit with 0x10 (exit status 33) for success, or 0x20 + the number
 * of the check that failed (status 65 + 2n). Every instruction at CPL 0 is emulated on
 * the test host (~1 us each), so buffers are small and loops short.
 */

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

#define F_BLK_RO (1u << 5)
#define F_BLK_FLUSH (1u << 9)
#define F_VERSION_1_HI 1u /* bit 32 */

#define D_NEXT 1
#define D_WRITE 2

#define QSIZE 8

struct desc { u64 addr; u32 len; u16 flags; u16 next; };
struct avail { u16 flags; u16 idx; u16 ring[QSIZE]; u16 used_event; };
struct used_elem { u32 id; u32 len; };
struct used { u16 flags; u16 idx; struct used_elem ring[QSIZE]; u16 avail_event; };
struct blk_header { u32 type; u32 reserved; u64 sector; };

static struct desc descs[QSIZE] __attribute__((aligned(16)));
static struct avail avail __attribute__((aligned(2)));
static struct used used __attribute__((aligned(4)));
static struct blk_header header;
static u8 data[1024] __attribute__((aligned(512)));
static u8 back[1024] __attribute__((aligned(512)));
static volatile u8 status_byte;
static u16 last_used;

static inline void outb(u16 port, u8 value) { __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port)); }
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
static inline u32 rd(u32 base, u32 off) { return *(volatile u32 *)(base + off); }
static inline void wr(u32 base, u32 off, u32 v) { *(volatile u32 *)(base + off) = v; }

static void puts(const char *s) { while (*s) outb(COM1, (u8)*s++); }

static void __attribute__((noreturn)) finish(u8 code)
{
    puts(code == 0x10 ? "virtio: ok\n" : "virtio: FAILED\n");
    outb(DEBUG_EXIT, code);
    for (;;) __asm__ volatile("cli; hlt");
}

#define CHECK(n, cond) do { if (!(cond)) finish(0x20 + (n)); } while (0)

/* "key=value" in the command line: returns value (terminated by space or NUL) or 0. */
static const char *arg(const char *cmdline, const char *key)
{
    for (const char *p = cmdline; p && *p; p++) {
        if (p != cmdline && p[-1] != ' ') continue;
        const char *k = key, *q = p;
        while (*k && *q == *k) { k++; q++; }
        if (!*k && *q == '=') return q + 1;
    }
    return 0;
}

static int word_is(const char *v, const char *w)
{
    if (!v) return 0;
    while (*w && *v == *w) { v++; w++; }
    return !*w && (*v == ' ' || *v == 0);
}

/* Reset and negotiate: VERSION_1 plus what `want` asks of the low word. Returns the
 * device's low feature word; checks fail with `n`. */
static u32 negotiate(u32 base, u32 want, int n)
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

static void setup_queue(u32 base, u32 size, int n)
{
    for (u32 i = 0; i < sizeof used; i++) ((volatile u8 *)&used)[i] = 0;
    avail.idx = 0;
    avail.flags = 0;
    last_used = 0;
    wr(base, R_QUEUE_SEL, 0);
    CHECK(n, rd(base, R_QUEUE_NUM_MAX) >= QSIZE);
    wr(base, R_QUEUE_NUM, size);
    wr(base, R_QUEUE_DESC_LOW, (u32)descs);
    wr(base, R_QUEUE_DESC_HIGH, 0);
    wr(base, R_QUEUE_DRIVER_LOW, (u32)&avail);
    wr(base, R_QUEUE_DRIVER_HIGH, 0);
    wr(base, R_QUEUE_DEVICE_LOW, (u32)&used);
    wr(base, R_QUEUE_DEVICE_HIGH, 0);
    wr(base, R_QUEUE_READY, 1);
}

static void driver_ok(u32 base) { wr(base, R_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK); }

/* Makes chain `head` available and notifies; returns after the device used it, or
 * when the status has DEVICE_NEEDS_RESET, or after a bounded wait (returns 0). */
static int submit(u32 base, u16 head)
{
    avail.ring[avail.idx % QSIZE] = head;
    barrier();
    avail.idx++;
    barrier();
    wr(base, R_QUEUE_NOTIFY, 0);
    for (u32 spins = 0; spins < 2000000; spins++) {
        barrier();
        if (*(volatile u16 *)&used.idx != last_used) { last_used++; return 1; }
        if (rd(base, R_STATUS) & S_NEEDS_RESET) return 0;
    }
    return 0;
}

/* A three-descriptor block request: header, data (len bytes, device-writable for a
 * read), status. Returns the status byte, or 0xee when the request was not used. */
static u8 blk_request(u32 base, u32 type, u64 sector, u32 data_addr, u32 len)
{
    header.type = type;
    header.reserved = 0;
    header.sector = sector;
    status_byte = 0xee;
    descs[0] = (struct desc){ (u32)&header, sizeof header, D_NEXT, 1 };
    descs[1] = (struct desc){ data_addr, len, (u16)(D_NEXT | (type == 0 || type == 8 ? D_WRITE : 0)), 2 };
    descs[2] = (struct desc){ (u32)&status_byte, 1, D_WRITE, 0 };
    if (len == 0) descs[0].next = 2;
    if (!submit(base, 0)) return 0xee;
    return status_byte;
}

static void fill(u8 *p, u32 n, u8 seed) { for (u32 i = 0; i < n; i++) p[i] = (u8)(seed + i * 7); }
static int same(const u8 *a, const u8 *b, u32 n) { for (u32 i = 0; i < n; i++) if (a[i] != b[i]) return 0; return 1; }

static u32 find(u32 device_id, u32 from)
{
    for (u32 i = from; i < 8; i++) {
        u32 base = WINDOW_BASE + i * WINDOW_SIZE;
        if (rd(base, R_MAGIC) == 0x74726976 && rd(base, R_VERSION) == 2 && rd(base, R_DEVICE_ID) == device_id)
            return base;
    }
    return 0;
}

/* A working block queue: one write + read back of sector 4 (used after a hostile step). */
static void blk_works(u32 base, int n)
{
    negotiate(base, F_BLK_FLUSH, n);
    setup_queue(base, QSIZE, n);
    driver_ok(base);
    fill(data, 512, 0x5a);
    CHECK(n, blk_request(base, 1, 4, (u32)data, 512) == 0);
    CHECK(n, blk_request(base, 0, 4, (u32)back, 512) == 0);
    CHECK(n, same(data, back, 512));
}

static void test_rw(u32 blk, const char *serial)
{
    u32 offered = negotiate(blk, F_BLK_FLUSH, 1);
    CHECK(2, !(offered & F_BLK_RO) && (offered & F_BLK_FLUSH));
    CHECK(3, rd(blk, R_CONFIG) >= 8 && rd(blk, R_CONFIG + 4) == 0);   /* capacity: >= 4 KiB */
    setup_queue(blk, QSIZE, 4);
    CHECK(4, rd(blk, R_QUEUE_READY) == 1);
    driver_ok(blk);
    fill(data, sizeof data, 0x11);
    CHECK(5, blk_request(blk, 1, 1, (u32)data, sizeof data) == 0);       /* write sectors 1-2 */
    CHECK(6, blk_request(blk, 4, 0, 0, 0) == 0);                         /* flush */
    CHECK(7, blk_request(blk, 0, 1, (u32)back, sizeof back) == 0);       /* read them back */
    CHECK(8, same(data, back, sizeof data));
    CHECK(9, (rd(blk, R_INTERRUPT_STATUS) & 1) == 1);
    wr(blk, R_INTERRUPT_ACK, 1);
    CHECK(9, (rd(blk, R_INTERRUPT_STATUS) & 1) == 0);
    for (u32 i = 0; i < 20; i++) back[i] = 0xff;
    CHECK(10, blk_request(blk, 8, 0, (u32)back, 20) == 0);               /* GET_ID */
    u32 i = 0;
    for (; serial && serial[i] && serial[i] != ' ' && i < 20; i++) CHECK(11, back[i] == (u8)serial[i]);
    CHECK(11, i == 20 || back[i] == 0);
    CHECK(12, blk_request(blk, 0, rd(blk, R_CONFIG), (u32)back, 512) == 1);   /* past the end */
    CHECK(13, blk_request(blk, 77, 0, (u32)back, 512) == 2);                  /* unsupported */

    u32 rng = find(4, 0);
    CHECK(14, rng != 0);
    negotiate(rng, 0, 14);
    setup_queue(rng, QSIZE, 14);
    driver_ok(rng);
    for (i = 0; i < 64; i++) back[i] = 0;
    descs[0] = (struct desc){ (u32)back, 64, D_WRITE, 0 };
    CHECK(15, submit(rng, 0) && used.ring[0].len == 64);
    u32 nonzero = 0;
    for (i = 0; i < 64; i++) nonzero += back[i] != 0;
    CHECK(16, nonzero > 32);
}

static void test_ro(u32 blk)
{
    u32 offered = negotiate(blk, F_BLK_RO | F_BLK_FLUSH, 1);
    CHECK(2, offered & F_BLK_RO);
    setup_queue(blk, QSIZE, 3);
    driver_ok(blk);
    fill(data, 512, 0x33);
    CHECK(4, blk_request(blk, 1, 0, (u32)data, 512) == 1);   /* write refused: IOERR */
    CHECK(5, blk_request(blk, 0, 0, (u32)back, 512) == 0);   /* read works */
    CHECK(6, back[0] == 'R' && back[1] == 'O');               /* the test's image starts "RO" */
}

static void test_hostile(u32 blk, const char *which)
{
    if (word_is(which, "loop")) {
        negotiate(blk, 0, 1);
        setup_queue(blk, QSIZE, 1);
        driver_ok(blk);
        descs[0] = (struct desc){ (u32)&header, sizeof header, D_NEXT, 1 };
        descs[1] = (struct desc){ (u32)data, 512, D_NEXT, 0 };   /* back to 0: a loop */
        CHECK(2, !submit(blk, 0));
        CHECK(3, rd(blk, R_STATUS) & S_NEEDS_RESET);
        CHECK(4, *(volatile u16 *)&used.idx == 0);
        CHECK(5, rd(blk, R_INTERRUPT_STATUS) & 2);                 /* configuration change */
    } else if (word_is(which, "hole")) {
        negotiate(blk, 0, 1);
        setup_queue(blk, QSIZE, 1);
        driver_ok(blk);
        CHECK(2, blk_request(blk, 0, 0, 0xe0000000u, 512) == 1);
    } else if (word_is(which, "huge")) {
        negotiate(blk, 0, 1);
        setup_queue(blk, QSIZE, 1);
        driver_ok(blk);
        CHECK(2, blk_request(blk, 0, 0, (u32)data, 0xfffffe00u) == 1);
    } else if (word_is(which, "qsize0")) {
        negotiate(blk, 0, 1);
        setup_queue(blk, 0, 1);
        CHECK(2, rd(blk, R_QUEUE_READY) == 0);
        setup_queue(blk, 3, 1);                                      /* not a power of two */
        CHECK(3, rd(blk, R_QUEUE_READY) == 0);
    } else if (word_is(which, "early")) {
        negotiate(blk, 0, 1);
        setup_queue(blk, QSIZE, 1);
        header.type = 0;
        header.sector = 0;
        descs[0] = (struct desc){ (u32)&header, sizeof header, D_NEXT, 1 };
        descs[1] = (struct desc){ (u32)back, 512, D_NEXT | D_WRITE, 2 };
        descs[2] = (struct desc){ (u32)&status_byte, 1, D_WRITE, 0 };
        avail.ring[0] = 0;
        avail.idx = 1;
        wr(blk, R_QUEUE_NOTIFY, 0);                                  /* before DRIVER_OK */
        for (u32 i = 0; i < 2000; i++) barrier();
        CHECK(2, *(volatile u16 *)&used.idx == 0);
        wr(blk, R_QUEUE_NOTIFY, 7);                                  /* a queue that does not exist */
    } else if (word_is(which, "config")) {
        CHECK(2, rd(blk, R_CONFIG + 60) == 0);                       /* virtio_blk_config is 60 bytes */
        CHECK(3, rd(blk, 0xffc) == 0 && rd(blk, 0x200) == 0);
        CHECK(4, *(volatile u8 *)(blk + 0x7f) == 0);                 /* a byte read of a register */
        *(volatile u8 *)(blk + R_STATUS) = 0xff;                     /* a byte write is ignored */
        CHECK(5, rd(blk, R_STATUS) == 0 || rd(blk, R_STATUS) != 0xff);
    } else {
        finish(0x3f);
    }
    blk_works(blk, 9);   /* and after all that the device still works */
}

static void test_persist(u32 blk)
{
    negotiate(blk, F_BLK_FLUSH, 1);
    setup_queue(blk, QSIZE, 1);
    driver_ok(blk);
    const char *text = "persisted!";
    for (u32 i = 0; i < 512; i++) data[i] = 0;
    for (u32 i = 0; text[i]; i++) data[i] = (u8)text[i];
    CHECK(2, blk_request(blk, 1, 8, (u32)data, 512) == 0);
    CHECK(3, blk_request(blk, 4, 0, 0, 0) == 0);
    puts("flushed\n");
    for (;;) __asm__ volatile("sti; hlt");   /* idle until the VMM is killed */
}

void c_main(const struct hvm_start_info *si);

void c_main(const struct hvm_start_info *si)
{
    const char *cmdline = si->magic == 0x336ec578u && si->cmdline_paddr && si->cmdline_paddr < 0x100000000ull
        ? (const char *)(u32)si->cmdline_paddr : "";
    const char *test = arg(cmdline, "test");
    u32 blk = find(2, 0);
    CHECK(0, blk != 0);
    puts("virtio: start\n");
    if (word_is(test, "rw")) test_rw(blk, arg(cmdline, "serial"));
    else if (word_is(test, "ro")) test_ro(blk);
    else if (word_is(test, "persist")) test_persist(blk);
    else test_hostile(blk, test);
    finish(0x10);
}
