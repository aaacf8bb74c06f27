# hypercall-ring3.S - hypercalls from ring 3, and the hypercall benchmark loop.
#
# Drops to ring 3 (ring3.inc; IOPL=3 so ring 3 can reach the doorbell), then:
# power_off, a ring-0-only call, must return -1 (not permitted) and do nothing;
# abi_info, allowed from any ring, must answer. Then N more abi_info calls, N
# read from 0x9000 (written by the host; 0 when it did not), and a debug-exit
# write of 0 (status 1).
        .include "pvh.inc"
        .include "ring3.inc"
        .include "hypercall.inc"

        PVH_NOTE _start

        .text
        .code32
        .globl _start
_start:
        ENTER_RING3 ring3
ring3:
        HCALL   HC_POWER_OFF
        pushl   %eax
        PUTS    s_poweroff
        popl    %eax
        PUTHEX
        HCALL   HC_ABI_INFO
        pushl   %eax
        PUTS    s_abi
        popl    %eax
        PUTHEX
        PUTS    s_nl
        movl    SCRATCH, %edi           # N
        testl   %edi, %edi
        jz      2f
        movw    $HC_PORT, %dx
1:      xorl    %eax, %eax              # HC_ABI_INFO
        outl    %eax, %dx
        decl    %edi
        jnz     1b
2:      xorl    %eax, %eax
        outb    %al, $DEBUG_EXIT_PORT   # status 1
        ud2

        .section .rodata
s_poweroff: .asciz "ring3 power_off="
s_abi:      .asciz " abi="
s_nl:       .asciz "\n"
