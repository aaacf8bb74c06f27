# smp.S - brings up the second vCPU with INIT + STARTUP IPIs.
#
# BSP (the PVH entry): zero the counter at 0x9004, software-enable its LAPIC,
# send INIT and then two STARTUP IPIs (vector 0x08 -> the AP starts in real
# mode at 0x0800:0000 = 0x8000) to all-excluding-self through the ICR, then
# spin (bounded) until the AP has checked in.
# AP: the real-mode trampoline below, which the loader placed at 0x8000 (its
# own PT_LOAD, see pvh-smp.ld).  It prints 'A' and increments the counter.
#
# Expected COM1 output: "A\nsmp: 2 cpus\n", then power-off (status 0 under
# swift-vmm; in QEMU the fallback isa-debug-exit 0 gives status 1).
# If the AP never checks in: "smp: AP missing\n" and isa-debug-exit 3 (status 7).

        .include "pvh.inc"

        .set AP_COUNTER,  0x9004        # scratch page; not part of the ELF image
        .set LAPIC_SVR,   0xfee000f0    # spurious-interrupt vector register
        .set LAPIC_ICR_LO, 0xfee00300   # writing the low half sends the IPI
        # ICR low: shorthand all-excluding-self (bits 18-19 = 11b),
        # level assert (bit 14), delivery mode in bits 8-10, vector in 0-7.
        .set ICR_INIT,    0x000c4500    # delivery mode 101b = INIT
        .set ICR_STARTUP, 0x000c4608    # delivery mode 110b = STARTUP, vector 8
        # Spin budget: 3 instructions per turn.  Under swift-vmm each CPL 0
        # instruction is emulated (~1 us), so this is about 2 s; natively or
        # under QEMU it is far less, but the AP is also far quicker there.
        .set SPIN_LIMIT,  700000

        PVH_NOTE _start

# ---------------------------------------------------------------------------
# AP trampoline: 16-bit real mode, CS base 0x8000, IP 0.  Only relative jumps
# and absolute addresses below 64 KiB with DS=0 are used, so it does not
# matter that the labels are linked at 0x8000 while IP starts at 0.
        .section .tramp, "awx"
        .code16
ap_entry:
        cli
        xorw    %ax, %ax
        movw    %ax, %ds                # DS base 0: 0x9004 is a plain offset
        movw    $COM1_THR, %dx
        movb    $'A', %al
        outb    %al, %dx
        # Check in *after* printing, so the BSP's message is always printed
        # after the 'A' and the output is deterministic.
        lock incl AP_COUNTER
1:      cli
        hlt
        jmp     1b

# ---------------------------------------------------------------------------
        .text
        .code32
        .globl _start
_start:
        movl    $stack_top, %esp
        cld
        movl    $0, AP_COUNTER

        # Software-enable the LAPIC (SVR bit 8; spurious vector 0xff).  It is
        # disabled after reset, and sending IPIs from a disabled LAPIC is not
        # something to rely on.
        movl    $0x1ff, LAPIC_SVR

        # INIT, then STARTUP twice (the MP spec sequence).  The real-hardware
        # delays (10 ms, 200 us) are left out: the in-kernel LAPIC delivers
        # IPIs synchronously, and a second SIPI to a running AP is ignored.
        movl    $ICR_INIT, LAPIC_ICR_LO
        movl    $ICR_STARTUP, LAPIC_ICR_LO
        movl    $ICR_STARTUP, LAPIC_ICR_LO

        movl    $SPIN_LIMIT, %ecx
1:      cmpl    $1, AP_COUNTER
        je      ap_ok
        loop    1b

        PUTS    msg_missing
        DEBUG_EXIT 3                    # status 7
        HALT_FOREVER

ap_ok:
        PUTS    msg_ok
        POWEROFF                        # swift-vmm: status 0
        DEBUG_EXIT 0                    # QEMU: no 0x600 device -> status 1
        HALT_FOREVER

        .section .rodata
msg_ok:         .asciz "\nsmp: 2 cpus\n"
msg_missing:    .asciz "smp: AP missing\n"
