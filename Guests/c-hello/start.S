/*
 * start.S - PVH entry stub for the C hello guest.
 *
 * A PVH loader (Xen, QEMU -kernel, swift-vmm) jumps to the address in the
 * XEN_ELFNOTE_PHYS32_ENTRY note in 32-bit protected mode, paging off, with
 * %ebx pointing at struct hvm_start_info and no stack.  This stub gives C a
 * stack and calls c_main(start_info).  Preprocessed by cc, hence C comments.
 */

#define XEN_ELFNOTE_PHYS32_ENTRY 18

        .section .note.Xen, "a", @note
        .balign 4
        .long   4                       /* namesz: "Xen\0" */
        .long   4                       /* descsz: 32-bit entry address */
        .long   XEN_ELFNOTE_PHYS32_ENTRY
        .asciz  "Xen"
        .long   pvh_entry

        .text
        .code32
        .globl  pvh_entry
pvh_entry:
        movl    $boot_stack_top, %esp
        cld                             /* the C ABI wants DF=0 */
        pushl   %ebx                    /* arg: struct hvm_start_info * */
        call    c_main
1:      cli                             /* c_main does not return; just in case */
        hlt
        jmp     1b

        .bss
        .balign 16
        .space  8192
boot_stack_top:

        .section .note.GNU-stack, "", @progbits
