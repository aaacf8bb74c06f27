# bench.S - port-I/O exit benchmark guest.
#
# The host writes the iteration count N (u32) to guest-physical 0x9000 before
# the run.  Code at CPL 0 is emulated on the target host, so the guest only
# sets up the bare minimum to drop to ring 3, where it runs natively:
#   GDT: ring-0 and ring-3 flat 32-bit code/data + a 32-bit TSS
#   ltr (a TSS is what a later ring-3 -> ring-0 transition would need)
#   zero-limit IDT (any fault in ring 3 becomes a clean triple fault)
#   EFLAGS.IOPL=3 (popf at CPL 0), so ring 3 may use in/out directly
#   SYSEXIT to ring 3.
# Ring 3: read N, then N times `outb %al, $0x80` (one KVM_EXIT_IO each), then
# outb 0 to 0xf4 (exit status 1).  N == 0 goes straight to the 0xf4 write.
#
# Why SYSEXIT and not IRET: on the target host CPL 0 runs in KVM's
# instruction emulator, and KVM's emulator only implements IRET for real
# mode, and far RET only without a privilege change; both fail with
# KVM_EXIT_INTERNAL_ERROR (emulation failure).  SYSEXIT is implemented.
# SYSEXIT takes its selectors from IA32_SYSENTER_CS: CS = that + 16, SS =
# that + 24 (both RPL 3), hence the GDT order kcode, kdata, ucode, udata.
# It loads EIP from %edx and ESP from %ecx and leaves EFLAGS alone.

        .include "pvh.inc"

        .set SEL_KCODE, 0x08            # = IA32_SYSENTER_CS
        .set SEL_KDATA, 0x10            # SYSENTER_CS + 8
        .set SEL_UCODE, 0x18 | 3        # SYSENTER_CS + 16, RPL 3
        .set SEL_UDATA, 0x20 | 3        # SYSENTER_CS + 24, RPL 3
        .set SEL_TSS,   0x28
        .set MSR_IA32_SYSENTER_CS, 0x174
        .set EFLAGS_IOPL3, 0x3002       # IOPL=3 (bits 12-13), bit 1 reserved=1, IF=0
        .set POST_PORT, 0x80

        PVH_NOTE _start

        .text
        .code32
        .globl _start
_start:
        movl    $stack_top, %esp

        # Patch the TSS base into its descriptor (the assembler cannot split
        # a relocatable address into descriptor fields).
        movl    $tss, %eax
        movw    %ax, gdt_tss + 2        # base 15:0
        shrl    $16, %eax
        movb    %al, gdt_tss + 4        # base 23:16
        movb    %ah, gdt_tss + 7        # base 31:24

        lgdt    gdt_desc
        lidt    pvh_null_idt
        ljmp    $SEL_KCODE, $1f         # reload CS from our GDT
1:      movw    $SEL_KDATA, %ax
        movw    %ax, %ss
        movw    $SEL_UDATA, %ax         # DPL 3 data is usable at CPL 0 too;
        movw    %ax, %ds                # SYSEXIT does not touch DS/ES, and
        movw    %ax, %es                # ring 3 reads N through DS
        movw    $SEL_TSS, %ax
        ltr     %ax

        movl    $MSR_IA32_SYSENTER_CS, %ecx
        movl    $SEL_KCODE, %eax
        xorl    %edx, %edx
        wrmsr
        pushl   $EFLAGS_IOPL3
        popfl                           # IOPL=3; IF stays 0
        movl    $ring3, %edx            # SYSEXIT: EIP
        movl    $user_stack_top, %ecx   # SYSEXIT: ESP
        sysexit

# ---- ring 3, native speed ------------------------------------------------
ring3:
        movl    SCRATCH, %ecx           # N
        testl   %ecx, %ecx
        jz      2f
1:      movb    %cl, %al                # the POST device stores the byte
        outb    %al, $POST_PORT
        decl    %ecx
        jnz     1b
2:      xorl    %eax, %eax
        outb    %al, $DEBUG_EXIT_PORT   # status 1
        # hlt is privileged in ring 3; without debug-exit end the VM with a
        # triple fault instead of spinning (#UD -> zero-limit IDT -> shutdown).
        ud2

        .data
        .balign 8
gdt:
        .quad   0                       # 0x00 null
        .quad   0x00cf9a000000ffff      # 0x08 ring-0 code: base 0, 4 GiB, 32-bit, DPL 0
        .quad   0x00cf92000000ffff      # 0x10 ring-0 data: base 0, 4 GiB, DPL 0
        .quad   0x00cffa000000ffff      # 0x18 ring-3 code: DPL 3
        .quad   0x00cff2000000ffff      # 0x20 ring-3 data: DPL 3
gdt_tss:                                # 0x28 32-bit available TSS (type 9), DPL 0,
        .word   tss_end - tss - 1       #      limit 0x67, byte granular
        .word   0                       #      base 15:0  (patched at run time)
        .byte   0                       #      base 23:16 (patched)
        .byte   0x89                    #      P=1, DPL 0, type 9
        .byte   0                       #      limit 19:16 = 0, G=0
        .byte   0                       #      base 31:24 (patched)
gdt_end:

        .balign 4
gdt_desc:
        .word   gdt_end - gdt - 1
        .long   gdt

        # 32-bit TSS: only SS0:ESP0 (the stack for ring 3 -> ring 0) and the
        # I/O map base matter.  The map base points past the limit, i.e. no
        # I/O permission bitmap; IOPL=3 already allows all ports in ring 3.
        .balign 16
tss:
        .long   0                       # 0x00 previous task link
        .long   stack_top               # 0x04 ESP0
        .long   SEL_KDATA               # 0x08 SS0
        .space  0x66 - 0x0c             # ESP1..LDT, T flag: all 0
        .word   tss_end - tss           # 0x66 I/O map base = 0x68 (none)
tss_end:

        .bss
        .balign 16
        .space  256                     # ring-3 stack (unused by the loop,
user_stack_top:                         # but SYSEXIT sets ESP anyway)
