# multiboot.S - a Multiboot (v1) kernel, no PVH note: swift-vmm must detect the format
# from the multiboot header and follow the Multiboot Specification's machine state
# (EAX = 0x2BADB002, EBX = the information structure, protected mode, paging off).
#
# It prints what the loader handed over, then powers off:
#   multiboot: <boot_loader_name>
#   cmdline: <cmdline>
#   module: <module 0 string> <module 0 contents, NUL-terminated>
#   mmap: <number of memory map entries, one digit>
# A wrong EAX ends with DEBUG_EXIT 1 (status 3) instead.
#
# Built twice: as an ELF (loaded by its program headers) and, with --defsym AOUT=1,
# as a flat binary placed by the header's a.out kludge (flag 16).
        .include "pvh.inc"

        .set MB_MAGIC, 0x1BADB002
.ifdef AOUT
        .set MB_FLAGS, (1 << 0) | (1 << 1) | (1 << 16)  # page-align modules, memory info, a.out kludge
.else
        .set MB_FLAGS, (1 << 0) | (1 << 1)
.endif

        .section .multiboot, "a"       # first in the image (multiboot.ld), 4-byte aligned
        .balign 4
mb_header:
        .long   MB_MAGIC
        .long   MB_FLAGS
        .long   -(MB_MAGIC + MB_FLAGS)
        .long   mb_header               # header_addr   (used with the a.out kludge only)
        .long   _load_start             # load_addr
        .long   _load_end               # load_end_addr
        .long   _bss_end                # bss_end_addr
        .long   _start                  # entry_addr

        .text
        .code32
        .globl _start
_start:
        cmpl    $0x2BADB002, %eax
        jne     bad
        movl    $stack_top, %esp
        movl    %ebx, %edi              # the multiboot information structure
        PUTS    msg_hello
        movl    64(%edi), %esi          # boot_loader_name
        call    puts
        PUTS    msg_cmdline
        movl    16(%edi), %esi          # cmdline
        call    puts
        PUTS    msg_module
        cmpl    $0, 20(%edi)            # mods_count
        je      1f
        movl    24(%edi), %ebx          # mods_addr
        movl    8(%ebx), %esi           # module 0's string
        call    puts
        PUTS    msg_space
        movl    (%ebx), %esi            # module 0's contents
        call    puts
1:      PUTS    msg_mmap
        movl    44(%edi), %eax          # mmap_length / 24 bytes per entry
        xorl    %edx, %edx
        movl    $24, %ecx
        divl    %ecx
        addb    $'0', %al
        movw    $COM1_THR, %dx
        outb    %al, %dx
        PUTS    msg_newline
        POWEROFF
        HALT_FOREVER
bad:
        DEBUG_EXIT 1
        HALT_FOREVER

        .section .rodata
msg_hello:      .asciz "multiboot: "
msg_cmdline:    .asciz "\ncmdline: "
msg_module:     .asciz "\nmodule: "
msg_space:      .asciz " "
msg_mmap:       .asciz "\nmmap: "
msg_newline:    .asciz "\n"
