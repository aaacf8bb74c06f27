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

#define GUEST_NAME "virtio"
#include "mmio.h"

#define F_BLK_RO (1u << 5)
#define F_BLK_FLUSH (1u << 9)


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
