# int3.S - executes int3 with no usable IDT.
#
# int3 (vector 3) is a software interrupt; with an IDT limit of 0 the gate
# lookup fails -> #GP -> #DF -> triple fault (KVM_EXIT_SHUTDOWN) on hardware
# virtualization.  A VMM that enabled KVM_GUESTDBG_USE_SW_BP would instead get
# KVM_EXIT_DEBUG.  On a host where CPL 0 code goes through KVM's instruction
# emulator (the swift-vmm test host), the emulator cannot deliver a
# protected-mode software interrupt and KVM_RUN returns
# KVM_EXIT_INTERNAL_ERROR (suberror 1, emulation failure) instead.  In every
# case the VMM must report the guest's end and must not hang or crash.

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
