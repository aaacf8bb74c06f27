# int3.S - executes int3 with no usable IDT.
#
# int3 (vector 3) is a software interrupt; with an IDT limit of 0 the gate
# lookup fails -> #GP -> #DF -> triple fault.  A VMM that enabled
# KVM_GUESTDBG_USE_SW_BP would instead get a KVM_EXIT_DEBUG here; either way it
# must not mistake this for a breakpoint of its own or hang.

        .include "pvh.inc"

        PVH_NOTE _start

        .text
        .code32
        .globl _start
_start:
        movl    $stack_top, %esp
        cld
        lidt    pvh_null_idt
        PUTS    msg
        int3
        HALT_FOREVER                    # not reached

        .section .rodata
msg:    .asciz "int3\n"
