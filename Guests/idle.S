# idle.S - prints "idle\n" and then sleeps with interrupts on, forever.
#
# `sti; hlt` with nothing programmed to interrupt it: the vCPU sleeps inside KVM
# (in-kernel LAPIC) and costs no host CPU, yet is not "halted for good" (IF=1),
# so the machine keeps running. For tests of pause/resume/reset/kill and of
# long-lived VMs.

        .include "pvh.inc"

        PVH_NOTE _start

        .text
        .code32
        .globl _start
_start:
        movl    $stack_top, %esp
        cld
        PUTS    msg
1:      sti
        hlt
        jmp     1b

        .section .rodata
msg:    .asciz "idle\n"
