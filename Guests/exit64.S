# exit64.S - exit.S linked as an ELF64 file, to test the ELF64 loader path.
#
# The entry code is still 32-bit (PVH always enters in 32-bit protected mode);
# only the container format differs: ELF64 headers and an 8-byte note
# descriptor (built with `as --64 --defsym PVH_ELF64=1`, `ld -m elf_x86_64`).
# Writes 0x2a to port 0xf4: expected exit status (0x2a << 1) | 1 = 85.

        .include "pvh.inc"

        PVH_NOTE _start

        .text
        .code32                         # in a 64-bit object: PVH entry is 32-bit
        .globl _start
_start:
        movl    $stack_top, %esp
        cld
        PUTS    msg
        DEBUG_EXIT 0x2a                 # status 85
        HALT_FOREVER

        .section .rodata
msg:    .asciz "exit64 guest\n"
