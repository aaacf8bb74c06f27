# touch.S - writes N MiB of guest memory, then waits for a byte on COM1: the snapshot
# benchmark's guest (vmm-bench, and QEMU for its comparison).
#
# N is the u32 at 0x9000 (64 when 0). From ring 3 (native speed on the test host, see
# bench.S) it fills [16 MiB, 16 MiB + N MiB) with a pattern, prints "touched\n" on COM1
# and writes 0x55 to port 0x80 (the host's cue), then polls COM1's line status until a
# byte arrives and ends with isa-debug-exit 0x10 (exit status 33). A snapshot taken
# while it polls, with a byte queued in the UART, restores to a guest whose first
# instructions end it: what "restore to the guest's first instruction" measures.
        .include "pvh.inc"
        .include "ring3.inc"
        .set COM1_LSR, 0x3fd
        .set FILL_START, 0x1000000

        PVH_NOTE _start

        .text
        .code32
        .globl _start
_start:
        ENTER_RING3 ring3
ring3:
        movl    SCRATCH, %ecx
        testl   %ecx, %ecx
        jnz     1f
        movl    $64, %ecx
1:      shll    $18, %ecx               # MiB -> dwords
        movl    $FILL_START, %edi
        movl    $0x5a5aa5a5, %eax
        cld
        rep stosl
        movl    $s_touched, %esi
        movw    $COM1_THR, %dx
2:      lodsb
        testb   %al, %al
        jz      3f
        outb    %al, %dx
        jmp     2b
3:      movb    $0x55, %al
        outb    %al, $0x80
4:      movw    $COM1_LSR, %dx
        inb     %dx, %al
        testb   $1, %al
        jz      4b
        movb    $0x10, %al
        outb    %al, $DEBUG_EXIT_PORT
5:      jmp     5b

        .section .rodata
s_touched:      .asciz "touched\n"
