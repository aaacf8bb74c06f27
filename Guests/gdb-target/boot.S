/*
 * boot.S - entry of the gdb test guest: PVH entry in 32-bit protected mode with
 * paging off, 4-level page tables that map the image twice (identity for the boot
 * code, and at 0xffffffff80000000 + physical like Linux's kernel map), long mode,
 * then c_main() in target.c on a higher-half stack. Also the AP trampoline (the second
 * vCPU marks %ebx and halts) and a few instructions for stepi to step through.
 * Preprocessed by cc, hence C comments.
 */

#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define KERNEL_BASE 0xffffffff80000000
#define LAPIC_SVR    0xfee000f0
#define LAPIC_ICR_LO 0xfee00300
#define AP_COUNTER   0x9004

        .section .note.Xen, "a", @note
        .balign 4
        .long   4                       /* namesz: "Xen\0" */
        .long   8                       /* descsz: the 64-bit form Linux uses */
        .long   XEN_ELFNOTE_PHYS32_ENTRY
        .asciz  "Xen"
        .quad   pvh_entry

/* ------------------------------------------------------------------------
 * AP trampoline: real mode at 0x8000 (CS 0x0800, IP 0), placed by the loader.
 */
        .section .tramp, "awx"
        .code16
        .globl  ap_entry
ap_entry:
        cli
        xorw    %ax, %ax
        movw    %ax, %ds
        movl    $0xa11ce, %ebx          /* what gdb's "thread 2" shows */
        lock incl AP_COUNTER
        .globl  ap_halted
ap_halted:
        hlt
        jmp     ap_halted

/* ------------------------------------------------------------------------
 * BSP: 32-bit protected mode, paging off, %ebx = struct hvm_start_info (physical).
 */
        .section .boot, "ax"
        .code32
        .globl  pvh_entry
pvh_entry:
        movl    $boot_stack_top, %esp
        movl    %ebx, %edi              /* start_info: c_main's argument */
        movl    $0, AP_COUNTER
        .globl  before_paging
before_paging:                          /* hbreak target: paging still off */
        /* PML4[0] -> identity PDPT, PML4[511] -> kernel PDPT; both reach one PD
           of 2 MiB pages over the first 16 MiB. */
        movl    $pdpt_low + 3, pml4
        movl    $pdpt_high + 3, pml4 + 511 * 8
        movl    $pd + 3, pdpt_low
        movl    $pd + 3, pdpt_high + 510 * 8
        xorl    %ecx, %ecx
1:      movl    %ecx, %eax
        shll    $21, %eax
        orl     $0x83, %eax             /* present, writable, 2 MiB */
        movl    %eax, pd(, %ecx, 8)
        incl    %ecx
        cmpl    $8, %ecx
        jne     1b

        /* Wake the second vCPU, if there is one: INIT, then STARTUP (vector 0x08). */
        movl    $0x1ff, LAPIC_SVR
        movl    $0x000c4500, LAPIC_ICR_LO
        movl    $0x000c4608, LAPIC_ICR_LO

        movl    $pml4, %eax
        movl    %eax, %cr3
        movl    %cr4, %eax
        orl     $0x20, %eax             /* PAE */
        movl    %eax, %cr4
        movl    $0xc0000080, %ecx       /* EFER.LME */
        rdmsr
        orl     $0x100, %eax
        wrmsr
        movl    %cr0, %eax
        orl     $0x80000001, %eax       /* PG | PE */
        movl    %eax, %cr0
        lgdt    gdt_pointer
        ljmp    $0x08, $long_mode

        .code64
long_mode:
        .cfi_startproc
        .cfi_undefined rip              /* the outermost frame: backtraces end here */
        xorl    %ebp, %ebp
        movl    $0x10, %eax
        movl    %eax, %ds
        movl    %eax, %es
        movl    %eax, %ss
        movabsq $stack_top, %rsp
        movabsq $c_main, %rax
        call    *%rax
2:      cli
        hlt
        jmp     2b
        .cfi_endproc

        .balign 8
gdt:
        .quad   0
        .quad   0x00af9b000000ffff      /* 0x08: 64-bit code */
        .quad   0x00cf93000000ffff      /* 0x10: data */
gdt_pointer:
        .word   gdt_pointer - gdt - 1
        .long   gdt

        .section .boot.bss, "aw", @nobits
        .balign 4096
pml4:   .space  4096
pdpt_low:
        .space  4096
pdpt_high:
        .space  4096
pd:     .space  4096
        .space  1024
boot_stack_top:

/* ------------------------------------------------------------------------
 * Higher half.
 */
        .text
        .code64
        /* Instructions of known lengths for stepi: nop (1 byte), xor and inc (2), mov (5),
           and popcnt (4), which this project's hosts refuse at CPL 0 and the VMM's
           emulation assist finishes: a step over it must still stop right after it. */
        .globl  stepping
        .type   stepping, @function
stepping:
        nop
        xorl    %eax, %eax
        incl    %eax
        movl    $0xff, %ecx
        .globl  assisted_step
assisted_step:
        popcntl %ecx, %eax
        ret
        .size   stepping, . - stepping

        .bss
        .balign 16
        .space  16384
stack_top:

        .section .note.GNU-stack, "", @progbits
