# halt.S - halts forever with interrupts off.
#
# With the in-kernel LAPIC, hlt does not exit to user space: the vCPU thread
# just sleeps in KVM_RUN.  The VMM must still be able to stop such a VM
# (timeout / kill / signal to the vCPU thread).

        .include "pvh.inc"

        PVH_NOTE _start

        .text
        .code32
        .globl _start
_start:
        movl    $stack_top, %esp
        cld
        PUTS    msg
        HALT_FOREVER                    # cli; hlt; jmp back (NMI-safe)

        .section .rodata
msg:    .asciz "halt\n"
