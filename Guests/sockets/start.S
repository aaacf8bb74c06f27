# start.S - PVH entry of the sockets guest: drop to ring 3 (ring3.inc: GDT, TSS,
# IOPL=3, SYSEXIT), where the test host runs guest code natively, give C a 16 KiB
# stack and call c_main(start_info). %ebx (the hvm_start_info) survives ENTER_RING3.
        .include "pvh.inc"
        .include "ring3.inc"

        PVH_NOTE pvh_entry

        .text
        .code32
        .globl pvh_entry
pvh_entry:
        ENTER_RING3 ring3
ring3:
        movl    $c_stack_top, %esp
        cld
        pushl   %ebx
        call    c_main
        ud2                             # c_main does not return

        .bss
        .balign 16
        .space  16384
c_stack_top:

        .section .note.GNU-stack, "", @progbits
