# exit.S - the minimal guest: one line on COM1, then isa-debug-exit.
#
# Writes 0x21 to port 0xf4, so the expected exit status is (0x21 << 1) | 1 =
# 0x43 = 67.  Also used by the VM lifecycle benchmark, so it stays tiny.

        .include "pvh.inc"

        PVH_NOTE _start

        .text
        .code32
        .globl _start
_start:
        movl    $stack_top, %esp        # PVH gives no stack; puts needs one
        cld
        PUTS    msg
        DEBUG_EXIT 0x21                 # status 67
        HALT_FOREVER                    # only if debug-exit is not enabled

        .section .rodata
msg:    .asciz "exit guest\n"
