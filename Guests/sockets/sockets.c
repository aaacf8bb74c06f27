/*
 * sockets.c - a freestanding virtio-vsock and virtio-net driver guest for swift-vmm's
 * tests and benchmark. It runs in 64-bit mode with paging at ring 3 (start.S gets
 * there), where the test host runs guest code natively: its KVM emulates CPL 0, and
 * code without paging, at ~1 us an instruction, far too slow to echo megabytes. It polls its rings (no interrupts;
 * every avail ring says VRING_AVAIL_F_NO_INTERRUPT) and notifies through QueueNotify.
 *
 * Command line (all optional):
 *   ip=A.B.C.D peer=A.B.C.D  virtio-net: ARP for peer, then an ICMP echo to it; the
 *                            answers must come (from the kernel behind the tap)
 *   connect=P                vsock: open a connection to host port P, send
 *                            "hello from the guest\n", expect "welcome\n" back and
 *                            the host's close (SHUTDOWN, answered with RST)
 *   refused=P                vsock: a connection to host port P must be reset
 *   credit=N                 vsock: the receive buffer advertised per connection
 *   hostile=P                vsock: a driver that breaks the rules, then carries on: an
 *                            rx buffer too small for a header, a packet with a spoofed
 *                            source CID, a header outside RAM, data for a connection that
 *                            does not exist (reset), and on a connection to host port P
 *                            (whose listener never reads) 300000 bytes past the device's
 *                            256 KiB credit in one packet (reset)
 * With a vsock device it then prints "vsock: ready" and serves an echo on port 5252
 * (every byte back, with credit flow control both ways; a host SHUTDOWN is answered
 * once the echo is through), a sink on 5254 (bytes consumed, credit given back) and a
 * source on 5255 (bytes sent as fast as the host's credit allows, until it resets the
 * connection) until a connection to port 5253 arrives, and ends with isa-debug-exit
 * 0x10 (exit status 33). A failed check n ends with 0x20 + n.
 * A transport-reset event drops every connection and prints "vsock: transport reset".
 */
#define GUEST_NAME "sockets"
#define RING3
#include "../virtio/mmio.h"

static void puthex2(u8 v) { char b[3] = { "0123456789abcdef"[v >> 4], "0123456789abcdef"[v & 15], 0 }; puts(b); }
static void putdec(u32 v) { char b[11]; int i = 10; b[i] = 0; do { b[--i] = (char)('0' + v % 10); v /= 10; } while (v); puts(b + i); }
static void copy(void *d, const void *s, u32 n) { u8 *dd = d; const u8 *ss = s; while (n--) *dd++ = *ss++; }
static void zero(void *d, u32 n) { u8 *dd = d; while (n--) *dd++ = 0; }
static inline u64 rdtsc(void) { u32 lo, hi; __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); return (u64)hi << 32 | lo; }
static u32 number(const char *s) { u32 v = 0; while (s && *s >= '0' && *s <= '9') v = v * 10 + (u32)(*s++ - '0'); return v; }

/* ---- split virtqueues (2.7), polled ---- */

struct desc { u64 addr; u32 len; u16 flags; u16 next; };
#define QMAX 128

struct vq {
    u32 base;
    u16 index, size, avail_idx, last_used, pending_notify;
    struct desc *desc;
    volatile u16 *avail;     /* flags, idx, ring[size], used_event */
    volatile u8 *used;       /* flags u16, idx u16, ring[size] {id u32, len u32}, avail_event */
};

static u8 qmem[6][8192] __attribute__((aligned(4096)));
static int qmem_next;

static void vq_setup(struct vq *q, u32 base, u16 index, u16 size, int n)
{
    u8 *m = qmem[qmem_next++];
    q->base = base; q->index = index; q->size = size;
    q->avail_idx = q->last_used = q->pending_notify = 0;
    q->desc = (struct desc *)m;
    q->avail = (volatile u16 *)(m + 2048);
    q->used = m + 4096;
    q->avail[0] = 1;   /* VRING_AVAIL_F_NO_INTERRUPT: this driver polls */
    wr(base, R_QUEUE_SEL, index);
    CHECK(n, rd(base, R_QUEUE_NUM_MAX) >= size);
    wr(base, R_QUEUE_NUM, size);
    wr(base, R_QUEUE_DESC_LOW, ADDR(q->desc)); wr(base, R_QUEUE_DESC_HIGH, 0);
    wr(base, R_QUEUE_DRIVER_LOW, ADDR(q->avail)); wr(base, R_QUEUE_DRIVER_HIGH, 0);
    wr(base, R_QUEUE_DEVICE_LOW, ADDR(q->used)); wr(base, R_QUEUE_DEVICE_HIGH, 0);
    wr(base, R_QUEUE_READY, 1);
    CHECK(n, rd(base, R_QUEUE_READY) == 1);
}

static void vq_put(struct vq *q, u16 head, u32 addr, u32 len, u16 flags)
{
    q->desc[head] = (struct desc){ addr, len, flags, 0 };
    q->avail[2 + q->avail_idx % q->size] = head;
    barrier();
    q->avail_idx++;
    q->avail[1] = q->avail_idx;
    q->pending_notify = 1;
}

static void vq_kick(struct vq *q)
{
    if (!q->pending_notify) return;
    q->pending_notify = 0;
    barrier();
    wr(q->base, R_QUEUE_NOTIFY, q->index);
}

static int vq_used(struct vq *q, u32 *id, u32 *len)
{
    u16 idx = *(volatile u16 *)(q->used + 2);
    if (idx == q->last_used) return 0;
    barrier();
    volatile u32 *e = (volatile u32 *)(q->used + 4 + 8 * (q->last_used % q->size));
    *id = e[0];
    *len = e[1];
    q->last_used++;
    return 1;
}

/* ---- virtio-net (5.1): ARP and ICMP echo to a peer ---- */

#define NET_HDR 12
#define NET_BUF 2048
#define NET_Q 16
#define F_NET_MAC (1u << 5)
#define F_NET_MRG_RXBUF (1u << 15)
#define F_NET_STATUS (1u << 16)

static u8 net_rx[NET_Q][NET_BUF] __attribute__((aligned(16)));
static u8 net_tx[NET_BUF] __attribute__((aligned(16)));
static struct vq nrxq, ntxq;
static u8 mac[6], peer_mac[6];
static u32 my_ip, peer_ip;

static u32 parse_ip(const char *s)
{
    u32 ip = 0;
    for (int i = 0; i < 4; i++) {
        ip = ip << 8 | (number(s) & 255);
        while (s && *s >= '0' && *s <= '9') s++;
        if (s && *s == '.') s++;
    }
    return ip;
}

static void put16(u8 *p, u16 v) { p[0] = (u8)(v >> 8); p[1] = (u8)v; }
static void put32(u8 *p, u32 v) { put16(p, (u16)(v >> 16)); put16(p + 2, (u16)v); }
static u16 get16(const u8 *p) { return (u16)(p[0] << 8 | p[1]); }
static u32 get32(const u8 *p) { return (u32)get16(p) << 16 | get16(p + 2); }

static u16 checksum(const u8 *p, u32 n)
{
    u32 sum = 0;
    for (u32 i = 0; i + 1 < n; i += 2) sum += get16(p + i);
    if (n & 1) sum += (u32)p[n - 1] << 8;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return (u16)~sum;
}

static void net_send(u32 frame_len, int n)
{
    u32 id, len;
    zero(net_tx, NET_HDR);
    vq_put(&ntxq, 0, ADDR(net_tx), NET_HDR + frame_len, 0);
    vq_kick(&ntxq);
    u64 until = rdtsc() + 10000000000ull;
    while (!vq_used(&ntxq, &id, &len)) CHECK(n, rdtsc() < until);
}

/* Waits for a frame `match` accepts, resending with `resend` every ~half second. */
static int net_wait(int (*match)(const u8 *frame, u32 len), void (*resend)(void), int n)
{
    for (int tries = 0; tries < 20; tries++) {
        resend();
        u64 until = rdtsc() + 1500000000ull;
        while (rdtsc() < until) {
            u32 id, len;
            if (!vq_used(&nrxq, &id, &len)) continue;
            CHECK(n, id < NET_Q && len > NET_HDR && len <= NET_BUF);
            CHECK(n, get16(net_rx[id] + 10) == 0x0100);   /* num_buffers = 1 (le16) */
            int ok = match(net_rx[id] + NET_HDR, len - NET_HDR);
            vq_put(&nrxq, (u16)id, ADDR(net_rx[id]), NET_BUF, D_WRITE);
            vq_kick(&nrxq);
            if (ok) return 1;
        }
    }
    return 0;
}

static void send_arp(void)
{
    u8 *f = net_tx + NET_HDR;
    for (int i = 0; i < 6; i++) { f[i] = 0xff; f[6 + i] = mac[i]; }
    put16(f + 12, 0x0806);
    u8 *a = f + 14;
    put16(a, 1); put16(a + 2, 0x0800); a[4] = 6; a[5] = 4; put16(a + 6, 1);
    copy(a + 8, mac, 6); put32(a + 14, my_ip);
    zero(a + 18, 6); put32(a + 24, peer_ip);
    net_send(14 + 28, 40);
}

static int is_arp_reply(const u8 *f, u32 len)
{
    if (len < 42 || get16(f + 12) != 0x0806 || get16(f + 20) != 2 || get32(f + 28) != peer_ip) return 0;
    copy(peer_mac, f + 22, 6);
    return 1;
}

#define PING_ID 0x5356
#define PING_SEQ 7
static void send_ping(void)
{
    u8 *f = net_tx + NET_HDR;
    copy(f, peer_mac, 6); copy(f + 6, mac, 6); put16(f + 12, 0x0800);
    u8 *ip = f + 14, *icmp = ip + 20;
    zero(ip, 20);
    ip[0] = 0x45; put16(ip + 2, 20 + 8 + 32); ip[8] = 64; ip[9] = 1;
    put32(ip + 12, my_ip); put32(ip + 16, peer_ip);
    put16(ip + 10, checksum(ip, 20));
    zero(icmp, 8);
    icmp[0] = 8; put16(icmp + 4, PING_ID); put16(icmp + 6, PING_SEQ);
    for (int i = 0; i < 32; i++) icmp[8 + i] = (u8)('a' + i % 26);
    put16(icmp + 2, checksum(icmp, 40));
    net_send(14 + 20 + 40, 41);
}

static int is_ping_reply(const u8 *f, u32 len)
{
    if (len < 14 + 20 + 40 || get16(f + 12) != 0x0800) return 0;
    const u8 *ip = f + 14, *icmp = ip + (ip[0] & 15) * 4;
    if (ip[9] != 1 || get32(ip + 12) != peer_ip || get32(ip + 16) != my_ip) return 0;
    if (icmp[0] != 0 || get16(icmp + 4) != PING_ID || get16(icmp + 6) != PING_SEQ) return 0;
    for (int i = 0; i < 32; i++) if (icmp[8 + i] != (u8)('a' + i % 26)) return 0;
    return 1;
}

static void test_net(u32 base, const char *cmdline)
{
    my_ip = parse_ip(arg(cmdline, "ip"));
    peer_ip = parse_ip(arg(cmdline, "peer"));
    u32 offered = negotiate(base, F_NET_MAC | F_NET_STATUS | F_NET_MRG_RXBUF, 30);
    CHECK(31, (offered & (F_NET_MAC | F_NET_STATUS | F_NET_MRG_RXBUF)) == (F_NET_MAC | F_NET_STATUS | F_NET_MRG_RXBUF));
    for (int i = 0; i < 6; i++) mac[i] = *(volatile u8 *)PTR(base + R_CONFIG + i);
    CHECK(32, (*(volatile u16 *)PTR(base + R_CONFIG + 6) & 1) == 1);   /* VIRTIO_NET_S_LINK_UP */
    vq_setup(&nrxq, base, 0, NET_Q, 33);
    vq_setup(&ntxq, base, 1, NET_Q, 33);
    wr(base, R_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    for (u16 i = 0; i < NET_Q; i++) vq_put(&nrxq, i, ADDR(net_rx[i]), NET_BUF, D_WRITE);
    vq_kick(&nrxq);
    puts("net: mac ");
    for (int i = 0; i < 6; i++) { puthex2(mac[i]); if (i < 5) puts(":"); }
    puts("\n");
    CHECK(34, net_wait(is_arp_reply, send_arp, 34));
    puts("net: arp reply\n");
    CHECK(35, net_wait(is_ping_reply, send_ping, 35));
    puts("net: ping reply\n");
}

/* ---- virtio-vsock (5.10) ---- */

struct vhdr {
    u64 src_cid, dst_cid;
    u32 src_port, dst_port, len;
    u16 type, op;
    u32 flags, buf_alloc, fwd_cnt;
} __attribute__((packed));

#define HDR 44
#define OP_REQUEST 1
#define OP_RESPONSE 2
#define OP_RST 3
#define OP_SHUTDOWN 4
#define OP_RW 5
#define OP_CREDIT_UPDATE 6
#define OP_CREDIT_REQUEST 7
#define SHUT_RCV 1
#define SHUT_SEND 2
#define HOST_CID 2
#define ECHO_PORT 5252
#define QUIT_PORT 5253
#define SINK_PORT 5254
#define SOURCE_PORT 5255

#define NRX 128
#define RXSIZE (HDR + 16384)
#define NTX 128
#define NCONN 64
#define NPEND 32

static u8 rxbuf[NRX][RXSIZE] __attribute__((aligned(16)));
static u8 ctl[NTX][HDR + 64] __attribute__((aligned(16)));
#define SOURCE_CHUNK 16384
static u8 srcbuf[NTX][HDR + SOURCE_CHUNK] __attribute__((aligned(16)));
static short tx_owner[NTX];            /* rx buffer an echo came from, or -1 */
static u16 tx_free[NTX];
static int tx_nfree;
static u8 ev[4][4] __attribute__((aligned(4)));
static struct vq rxq, txq, evq;
static u64 cid;
static u32 credit = 32768;
static u64 echoed;
static int resets_seen, quit;

struct conn {
    u8 used, state;                    /* 1 connecting (ours), 2 established */
    u8 peer_shut, shut_sent, got_rst, client, sink, source;
    u32 credit_told;                   /* fwd_cnt in the last credit update (sink) */
    u32 lport, pport;                  /* guest port, host port */
    u32 peer_buf, peer_fwd, tx_cnt, fwd_cnt;
    u16 pend[NPEND];
    u8 ph, pt;                         /* pending rx buffers: echo waits for host credit */
    u8 data[64];
    u32 ndata;
};
static struct conn conns[NCONN];

static void recycle(u32 i) { vq_put(&rxq, (u16)i, ADDR(rxbuf[i]), RXSIZE, D_WRITE); }

static void reclaim_tx(void)
{
    u32 id, len;
    while (vq_used(&txq, &id, &len)) {
        if (id >= NTX) finish(0x2f);
        if (tx_owner[id] >= 0) recycle((u32)tx_owner[id]);
        tx_owner[id] = -1;
        tx_free[tx_nfree++] = (u16)id;
    }
}

static u16 tx_slot(void)
{
    u64 until = rdtsc() + 10000000000ull;
    while (tx_nfree == 0) { vq_kick(&txq); reclaim_tx(); CHECK(14, rdtsc() < until); }
    return tx_free[--tx_nfree];
}

static void fill_hdr(struct vhdr *h, u32 lport, u32 pport, u16 op, u32 flags, u32 len, u32 fwd)
{
    h->src_cid = cid; h->dst_cid = HOST_CID;
    h->src_port = lport; h->dst_port = pport;
    h->len = len; h->type = 1; h->op = op; h->flags = flags;
    h->buf_alloc = credit; h->fwd_cnt = fwd;
}

static void send_ctl(u32 lport, u32 pport, u16 op, u32 flags, u32 fwd, const char *payload)
{
    u16 s = tx_slot();
    u32 n = 0;
    while (payload && payload[n]) { ctl[s][HDR + n] = (u8)payload[n]; n++; }
    fill_hdr((struct vhdr *)ctl[s], lport, pport, op, flags, n, fwd);
    tx_owner[s] = -1;
    vq_put(&txq, s, ADDR(ctl[s]), HDR + n, 0);
}

static struct conn *lookup(u32 lport, u32 pport)
{
    for (int i = 0; i < NCONN; i++)
        if (conns[i].used && conns[i].lport == lport && conns[i].pport == pport) return &conns[i];
    return 0;
}

static struct conn *new_conn(u32 lport, u32 pport)
{
    for (int i = 0; i < NCONN; i++) {
        if (conns[i].used) continue;
        zero(&conns[i], sizeof conns[i]);
        conns[i].used = 1; conns[i].lport = lport; conns[i].pport = pport;
        return &conns[i];
    }
    return 0;
}

static u32 host_credit(struct conn *c) { return c->peer_buf - (c->tx_cnt - c->peer_fwd); }

static void free_conn(struct conn *c)
{
    while (c->ph != c->pt) recycle(c->pend[c->ph++ % NPEND]);
    c->used = 0;
}

/* Echoes what waits, as far as the host's credit reaches; then a host that stopped
 * sending hears our SHUTDOWN once the echo is through (and answers with RST). */
static void flush(struct conn *c)
{
    while (c->ph != c->pt) {
        u32 i = c->pend[c->ph % NPEND];
        struct vhdr *h = (struct vhdr *)rxbuf[i];
        u32 len = h->len;
        if (host_credit(c) < len) return;
        c->ph++;
        c->fwd_cnt += len;
        c->tx_cnt += len;
        fill_hdr(h, c->lport, c->pport, OP_RW, 0, len, c->fwd_cnt);
        u16 s = tx_slot();
        tx_owner[s] = (short)i;
        vq_put(&txq, s, ADDR(rxbuf[i]), HDR + len, 0);
        echoed += len;
    }
    if ((c->peer_shut & SHUT_SEND) && !c->shut_sent && !c->client) {
        send_ctl(c->lport, c->pport, OP_SHUTDOWN, SHUT_RCV | SHUT_SEND, c->fwd_cnt, 0);
        c->shut_sent = 1;
    }
}

static void handle_rx(u32 i, u32 used_len)
{
    struct vhdr *h = (struct vhdr *)rxbuf[i];
    int keep = 0;
    if (used_len < HDR || h->dst_cid != cid || h->src_cid != HOST_CID || h->type != 1 || h->len > used_len - HDR) {
        recycle(i);
        return;
    }
    struct conn *c = lookup(h->dst_port, h->src_port);
    if (c) { c->peer_buf = h->buf_alloc; c->peer_fwd = h->fwd_cnt; }
    switch (h->op) {
    case OP_REQUEST:
        if (!c && h->dst_port >= ECHO_PORT && h->dst_port <= SOURCE_PORT && (c = new_conn(h->dst_port, h->src_port))) {
            c->peer_buf = h->buf_alloc; c->peer_fwd = h->fwd_cnt; c->state = 2;
            c->sink = h->dst_port == SINK_PORT;
            c->source = h->dst_port == SOURCE_PORT;
            send_ctl(c->lport, c->pport, OP_RESPONSE, 0, 0, 0);
            if (h->dst_port == QUIT_PORT) quit = 1;
        } else {
            send_ctl(h->dst_port, h->src_port, OP_RST, 0, 0, 0);
        }
        break;
    case OP_RESPONSE:
        if (c && c->state == 1) c->state = 2;
        break;
    case OP_RW:
        if (!c || c->state != 2) { send_ctl(h->dst_port, h->src_port, OP_RST, 0, 0, 0); break; }
        if (c->sink) {
            c->fwd_cnt += h->len;
            if (c->fwd_cnt - c->credit_told >= credit / 2) {
                send_ctl(c->lport, c->pport, OP_CREDIT_UPDATE, 0, c->fwd_cnt, 0);
                c->credit_told = c->fwd_cnt;
            }
            break;
        }
        if (c->client) {
            for (u32 k = 0; k < h->len && c->ndata < sizeof c->data; k++) c->data[c->ndata++] = rxbuf[i][HDR + k];
            c->fwd_cnt += h->len;
            send_ctl(c->lport, c->pport, OP_CREDIT_UPDATE, 0, c->fwd_cnt, 0);
            break;
        }
        if ((u8)(c->pt - c->ph) >= NPEND) { send_ctl(c->lport, c->pport, OP_RST, 0, 0, 0); free_conn(c); break; }
        c->pend[c->pt++ % NPEND] = (u16)i;
        keep = 1;
        flush(c);
        break;
    case OP_SHUTDOWN:
        if (!c) break;
        c->peer_shut |= (u8)h->flags;
        if (c->peer_shut == (SHUT_RCV | SHUT_SEND) && (c->ph == c->pt || c->client)) {
            send_ctl(c->lport, c->pport, OP_RST, 0, 0, 0);   /* as Linux: a full shutdown is answered with RST */
            if (c->client) { c->got_rst = 2; c->state = 0; } else free_conn(c);
        } else {
            flush(c);
        }
        break;
    case OP_RST:
        if (c) {
            if (c->client) { c->got_rst = 1; c->state = 0; } else free_conn(c);
        }
        break;
    case OP_CREDIT_REQUEST:
        if (c) send_ctl(c->lport, c->pport, OP_CREDIT_UPDATE, 0, c->fwd_cnt, 0);
        break;
    case OP_CREDIT_UPDATE:
        if (c) flush(c);
        break;
    default:
        break;
    }
    if (!keep) recycle(i);
}

/* The source connections send what the host's credit allows. */
static void feed_sources(void)
{
    for (int k = 0; k < NCONN; k++) {
        struct conn *c = &conns[k];
        if (!c->used || !c->source || c->state != 2) continue;
        while (tx_nfree > 0 && host_credit(c) >= SOURCE_CHUNK) {
            u16 s = tx_free[--tx_nfree];
            fill_hdr((struct vhdr *)srcbuf[s], c->lport, c->pport, OP_RW, 0, SOURCE_CHUNK, c->fwd_cnt);
            c->tx_cnt += SOURCE_CHUNK;
            tx_owner[s] = -1;
            vq_put(&txq, s, ADDR(srcbuf[s]), HDR + SOURCE_CHUNK, 0);
        }
    }
}

static void poll_vsock(void)
{
    u32 id, len;
    for (int budget = 0; budget < 64 && vq_used(&rxq, &id, &len); budget++) {
        if (id >= NRX) finish(0x2e);
        handle_rx(id, len);
    }
    while (vq_used(&evq, &id, &len)) {
        if (id < 4 && len == 4 && *(volatile u32 *)ev[id] == 0) {
            puts("vsock: transport reset\n");
            resets_seen++;
            cid = *(volatile u64 *)PTR(rxq.base + R_CONFIG);
            for (int k = 0; k < NCONN; k++) if (conns[k].used) free_conn(&conns[k]);
        }
        vq_put(&evq, (u16)(id & 3), ADDR(ev[id & 3]), 4, D_WRITE);
        vq_kick(&evq);
    }
    reclaim_tx();
    feed_sources();
    vq_kick(&txq);
    vq_kick(&rxq);
}

/* Polls until `done` says so, or about five seconds pass. */
static int wait_for(struct conn *c, int (*done)(struct conn *))
{
    u64 until = rdtsc() + 15000000000ull;
    while (!done(c)) {
        poll_vsock();
        if (rdtsc() > until) return 0;
    }
    return 1;
}
static int settled(struct conn *c) { return c->state != 1; }
static int welcomed(struct conn *c) { return c->got_rst || c->ndata >= 8; }
static int closed(struct conn *c) { return c->got_rst != 0; }

static void test_connect(u32 port)
{
    struct conn *c = new_conn(40000, port);
    CHECK(15, c != 0);
    c->client = 1; c->state = 1;
    send_ctl(c->lport, c->pport, OP_REQUEST, 0, 0, 0);
    CHECK(16, wait_for(c, settled) && c->state == 2);
    c->tx_cnt += 21;
    send_ctl(c->lport, c->pport, OP_RW, 0, 0, "hello from the guest\n");
    CHECK(17, wait_for(c, welcomed));
    const char *w = "welcome\n";
    for (int k = 0; k < 8; k++) CHECK(18, c->data[k] == (u8)w[k]);
    CHECK(19, wait_for(c, closed) && c->got_rst == 2);   /* the host closed: SHUTDOWN, our RST */
    c->used = 0;
    puts("vsock: connect ok\n");
}

static void test_refused(u32 port)
{
    struct conn *c = new_conn(40001, port);
    CHECK(20, c != 0);
    c->client = 1; c->state = 1;
    send_ctl(c->lport, c->pport, OP_REQUEST, 0, 0, 0);
    CHECK(21, wait_for(c, settled) && c->got_rst == 1);   /* nobody listens: RST, the ECONNRESET of a driver */
    c->used = 0;
    puts("vsock: refused ok\n");
}

static u16 raw_packet(u32 addr, u32 len)
{
    u16 s = tx_slot();
    tx_owner[s] = -1;
    vq_put(&txq, s, addr, len, 0);
    vq_kick(&txq);
    return s;
}

static void test_hostile(u32 port)
{
    /* A packet claiming another CID: dropped by the device, nothing comes back. */
    struct vhdr *h = (struct vhdr *)srcbuf[0];
    fill_hdr(h, 40010, 7100, OP_REQUEST, 0, 0, 0);
    h->src_cid = cid + 1;
    raw_packet(ADDR(srcbuf[0]), HDR);
    /* A header in the MMIO hole: the device counts an error and uses the buffer. */
    raw_packet(0xe0000000u, HDR);
    /* Data for a connection that does not exist: reset. */
    struct conn *c = new_conn(40011, 7101);
    CHECK(22, c != 0);
    c->client = 1; c->state = 2;
    send_ctl(c->lport, c->pport, OP_RW, 0, 0, "x");
    CHECK(23, wait_for(c, closed) && c->got_rst == 1);
    c->used = 0;
    /* Past the credit on a live connection: reset. */
    c = new_conn(40012, port);
    CHECK(24, c != 0);
    c->client = 1; c->state = 1;
    send_ctl(c->lport, c->pport, OP_REQUEST, 0, 0, 0);
    CHECK(25, wait_for(c, settled) && c->state == 2 && c->peer_buf == 262144);
    fill_hdr(h, c->lport, c->pport, OP_RW, 0, 300000, 0);
    raw_packet(ADDR(srcbuf[0]), HDR + 300000);
    CHECK(26, wait_for(c, closed) && c->got_rst == 1);
    c->used = 0;
    puts("vsock: hostile ok\n");
}

static void test_vsock(u32 base, const char *cmdline)
{
    const char *cr = arg(cmdline, "credit");
    if (cr) credit = number(cr);
    negotiate(base, 1 /* VIRTIO_VSOCK_F_STREAM */, 10);
    cid = *(volatile u64 *)PTR(base + R_CONFIG);
    CHECK(11, cid >= 3);
    vq_setup(&rxq, base, 0, NRX, 12);
    vq_setup(&txq, base, 1, NTX, 12);
    vq_setup(&evq, base, 2, 4, 12);
    wr(base, R_STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
    const char *hostile = arg(cmdline, "hostile");
    for (u16 i = 0; i < NRX; i++) recycle(i);
    if (hostile) rxq.desc[rxq.avail[2]].len = 8;   /* the first rx buffer cannot hold a header */
    for (u16 i = 0; i < NTX; i++) { tx_owner[i] = -1; tx_free[tx_nfree++] = i; }
    for (u16 i = 0; i < 4; i++) vq_put(&evq, i, ADDR(ev[i]), 4, D_WRITE);
    vq_kick(&rxq);
    vq_kick(&evq);
    const char *p = arg(cmdline, "connect");
    if (p) test_connect(number(p));
    p = arg(cmdline, "refused");
    if (p) test_refused(number(p));
    if (hostile) test_hostile(number(hostile));
    puts("vsock: ready cid ");
    putdec((u32)cid);
    puts("\n");
    while (!quit) poll_vsock();
    for (int k = 0; k < 1000; k++) poll_vsock();   /* the quit connection's RESPONSE goes out */
    puts("vsock: echoed ");
    putdec((u32)(echoed >> 10));
    puts(" KiB, transport resets ");
    putdec((u32)resets_seen);
    puts("\n");
}

void c_main(const struct hvm_start_info *si);

void c_main(const struct hvm_start_info *si)
{
    const char *cmdline = si->magic == 0x336ec578u && si->cmdline_paddr && si->cmdline_paddr < 0x100000000ull
        ? (const char *)PTR(si->cmdline_paddr) : "";
    puts("sockets: start\n");
    if (arg(cmdline, "ip")) {
        u32 net = find(1, 0);
        CHECK(1, net != 0);
        test_net(net, cmdline);
    }
    u32 vsock = find(19, 0);
    if (vsock) test_vsock(vsock, cmdline);
    finish(0x10);
}
