# triple.S - ends in a triple fault (KVM_EXIT_SHUTDOWN).
#
# With an IDT of limit 0 no exception can be delivered: ud2 raises #UD,
# vector 6 is outside the IDT -> #GP, which is outside too -> #DF, outside
# too -> triple fault.  The VMM must treat that as a guest shutdown/reset
# and must not hang or crash.  (QEMU -no-reboot exits with status 0.)

        .include "pvh.inc"

        PVH_NOTE _start

        .text
        .code32
        .globl _start
_start:
        movl    $stack_top, %esp
        cld
        lidt    pvh_null_idt            # before printing: a VMM sees the
        PUTS    msg                     # line, then the shutdown
        ud2
        HALT_FOREVER                    # not reached

        .section .rodata
msg:    .asciz "triple\n"
