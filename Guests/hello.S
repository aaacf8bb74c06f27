# hello.S - smoke test: COM1 output, the PVH start_info/cmdline, ACPI power-off.
#
# Prints "Hello from a swift-vmm guest!\n", then "cmdline: <cmdline>\n" with the
# command line the VMM passed through hvm_start_info.cmdline_paddr, then powers
# off through the ACPI sleep control register (exit status 0 under swift-vmm).
# QEMU microvm has no 0x600 device, so the guest then falls back to
# isa-debug-exit with 0 (status 1) and finally halts.

        .include "pvh.inc"

        .set HVM_START_MAGIC, 0x336ec578
        .set SI_MAGIC,        0         # u32 offsets in struct hvm_start_info
        .set SI_CMDLINE_LO,   24        # cmdline_paddr is a u64
        .set SI_CMDLINE_HI,   28

        PVH_NOTE _start

        .text
        .code32
        .globl _start
_start:
        # PVH entry: protected mode, paging off, flat segments, IF=0,
        # %ebx = physical address of struct hvm_start_info.  No stack.
        movl    $stack_top, %esp
        cld
        movl    %ebx, %ebp              # puts clobbers eax/edx/esi only

        PUTS    msg_hello
        PUTS    msg_cmdline

        # Check the start_info magic: a wrong %ebx is a VMM bug worth seeing.
        cmpl    $HVM_START_MAGIC, SI_MAGIC(%ebp)
        jne     bad_magic

        # Print the command line if there is one.  Without paging we can only
        # reach the low 4 GiB, so a pointer with high bits set is skipped.
        movl    SI_CMDLINE_LO(%ebp), %esi
        cmpl    $0, SI_CMDLINE_HI(%ebp)
        jne     1f
        testl   %esi, %esi
        jz      1f
        call    puts
1:      PUTS    msg_newline

        POWEROFF                        # swift-vmm stops here with status 0
        DEBUG_EXIT 0                    # QEMU: no 0x600 device -> status 1
        HALT_FOREVER

bad_magic:
        PUTS    msg_bad_magic
        POWEROFF
        DEBUG_EXIT 0
        HALT_FOREVER

        .section .rodata
msg_hello:      .asciz "Hello from a swift-vmm guest!\n"
msg_cmdline:    .asciz "cmdline: "
msg_newline:    .asciz "\n"
msg_bad_magic:  .asciz "\nhello: bad hvm_start_info magic\n"
