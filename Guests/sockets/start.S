# start.S - PVH entry of the sockets guest: from the 32-bit entry (paging off) to
# 64-bit long mode with paging, then to ring 3, where c_main(start_info) runs.
#
# Why: the test host's KVM emulates CPL 0 code, and code without paging, instruction
# by instruction (~1 us each); 64-bit code with paging at CPL 3 runs natively. The
# page tables are static (the first 4 GiB, MMIO windows included, as 2 MiB user pages),
# so the emulated part is a few dozen instructions. The IDT has limit 0: a fault in
# ring 3 becomes a triple fault, a clean stop.
        .set XEN_ELFNOTE_PHYS32_ENTRY, 18
        # Linux's layout (__KERNEL_CS 0x10, __KERNEL_DS 0x18, __USER_DS 0x2b, __USER_CS
        # 0x33): the host's KVM runs CPL 3 with exactly these selectors.
        .set SEL_KCODE, 0x10
        .set SEL_KDATA, 0x18
        .set SEL_UDATA, 0x28 | 3
        .set SEL_UCODE, 0x30 | 3
        .set SEL_TSS, 0x40
        .set MSR_EFER, 0xc0000080

        .pushsection .note.Xen, "a", @note
        .balign 4
        .long   4, 8, XEN_ELFNOTE_PHYS32_ENTRY
        .asciz  "Xen"
        .quad   pvh_entry
        .popsection

        .text
        .code32
        .globl  pvh_entry
pvh_entry:
        movl    %ebx, %esi              # struct hvm_start_info *, for c_main
        movl    $tss, %eax              # the TSS base into its descriptor
        movw    %ax, gdt_tss + 2
        shrl    $16, %eax
        movb    %al, gdt_tss + 4
        movb    %ah, gdt_tss + 7
        lgdt    gdt_desc
        movl    %cr4, %eax
        orl     $0x20, %eax             # PAE
        movl    %eax, %cr4
        movl    $pml4, %eax
        movl    %eax, %cr3
        movl    $MSR_EFER, %ecx
        rdmsr
        orl     $0x100, %eax            # LME
        wrmsr
        movl    %cr0, %eax
        orl     $0x80000001, %eax       # PG | PE
        movl    %eax, %cr0
        ljmp    $SEL_KCODE, $long_mode

        .code64
long_mode:
        movw    $SEL_KDATA, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movq    $kernel_stack_top, %rsp
        movw    $SEL_TSS, %ax
        ltr     %ax
        lidt    null_idt
        pushq   $SEL_UDATA              # iretq to ring 3: SS, RSP, RFLAGS, CS, RIP
        pushq   $user_stack_top
        pushq   $0x0002                 # IF 0; IOPL 0 (the host's KVM forces it at CPL 3): ports via the TSS bitmap
        pushq   $SEL_UCODE
        pushq   $ring3
        iretq
ring3:
        movl    %esi, %edi              # zero-extended: the start info for c_main
        cld
        call    c_main
        ud2                             # c_main does not return

        .data
        .balign 8
gdt:
        .quad   0, 0
        .quad   0x00af9a000000ffff      # 0x10 ring-0 code, 64-bit
        .quad   0x00cf92000000ffff      # 0x18 ring-0 data
        .quad   0x00cffa000000ffff      # 0x20 ring-3 code, 32-bit (unused)
        .quad   0x00cff2000000ffff      # 0x28 ring-3 data
        .quad   0x00affa000000ffff      # 0x30 ring-3 code, 64-bit
        .quad   0
gdt_tss:                                # 0x40 64-bit TSS (16 bytes), base patched
        .word   tss_end - tss - 1, 0
        .byte   0, 0x89, 0, 0
        .long   0, 0
gdt_end:
gdt_desc:
        .word   gdt_end - gdt - 1
        .quad   gdt
null_idt:
        .word   0
        .quad   0

        .balign 16
tss:                                    # RSP0 (a ring-3 fault's stack) and the I/O bitmap
        .long   0
        .quad   kernel_stack_top
        .fill   0x66 - 12, 1, 0
        .word   0x68                    # the I/O permission bitmap follows: every port allowed
        .fill   8192, 1, 0
        .byte   0xff
tss_end:

        .balign 4096
pml4:   .quad   pdpt + 7
        .fill   511, 8, 0
pdpt:   .quad   pd + 7, pd + 0x1007, pd + 0x2007, pd + 0x3007
        .fill   508, 8, 0
pd:                                     # 2048 x 2 MiB: present, writable, user, large
        .set    page, 0
        .rept   2048
        .quad   (page << 21) | 0x87
        .set    page, page + 1
        .endr

        .bss
        .balign 16
        .space  4096
kernel_stack_top:
        .space  16384
user_stack_top:

        .section .note.GNU-stack, "", @progbits
