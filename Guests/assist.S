# assist.S - the instructions the emulation assist finishes, checked from inside a guest.
#
# PVH entry (32-bit), then long mode with Linux's GDT layout (kernel CS/SS 0x10/0x18,
# user CS/SS 0x33/0x2b), an IDT (#BP, #GP, #PF, int $0x80), a TSS with RSP0 and IST1.
# Each test prints "ok NAME", "FAIL NAME" or "skip NAME" (the CPU does not offer the
# instruction) on COM1; the guest ends with a debug-exit write of the failure count
# (status (failures << 1) | 1: 1 when all passed). On hardware KVM every instruction
# runs natively; on a KVM that emulates CPL 0 most of them are emulation failures the
# assist finishes, and the syscall test needs the syscall repair.
#
#   int3       frame RIP = next instruction, CS 0x10, the interrupted RSP and SS
#   int80      int $0x80 through its own gate, RIP = next instruction
#   int3-ist   int3 through a gate with IST 1: the handler runs on the IST stack
#   cx16       lock cmpxchg16b: equal, unequal, %gs-relative, misaligned (#GP(0) at it)
#   popcnt     register and memory operands, ZF
#   clac       stac/clac set and clear RFLAGS.AC
#   rdtscp     ECX = IA32_TSC_AUX, EDX:EAX non-zero
#   fwait      continues after fninit
#   verw       writable data selector: ZF=1; code selector: ZF=0 (verr: 1)
#   lsl        flat data: 0xffffffff (G=1), the TSS: 0x67 (ZF=1 both); the null selector,
#              the first one past the GDT and RPL 3 for DPL 0: ZF=0, destination unchanged
#   xgetbv     XCR0 bit 0 (x87) set, with CR4.OSXSAVE
#   mxcsr      ldmxcsr/stmxcsr round trip, the same value in fxsave's image, a reserved
#              bit #GP(0) with MXCSR unchanged
#   syscall    ring 3: 4 syscall/sysretq round trips (the kernel entry at CPL 0), a
#              user jmp to LSTAR that must arrive as a #PF (error 5, RIP = LSTAR),
#              and a genuine #PF (write to a not-present page: error 6, CR2)

        .include "pvh.inc"

        PVH_NOTE _start

        .set SEL_KCODE, 0x10
        .set SEL_KDATA, 0x18
        .set SEL_UDATA, 0x2b
        .set SEL_UCODE, 0x33
        .set SEL_TSS,   0x40
        .set MSR_EFER, 0xc0000080
        .set MSR_STAR, 0xc0000081
        .set MSR_LSTAR, 0xc0000082
        .set MSR_SFMASK, 0xc0000084
        .set MSR_GS_BASE, 0xc0000101
        .set MSR_TSC_AUX, 0xc0000103
        .set SYSCALLS, 4

        .macro PASS name
        leaq    s_ok(%rip), %rsi
        leaq    \name(%rip), %rdi
        call    report
        .endm
        .macro FAIL name
        incb    failures(%rip)
        leaq    s_fail(%rip), %rsi
        leaq    \name(%rip), %rdi
        call    report
        .endm
        .macro SKIP name
        leaq    s_skip(%rip), %rsi
        leaq    \name(%rip), %rdi
        call    report
        .endm
        # An interrupt gate (type 0xE, DPL 0) for `vector` at `handler`.
        .macro GATE vector, handler
        leaq    \handler(%rip), %rax
        leaq    idt + \vector * 16(%rip), %rdi
        movw    %ax, (%rdi)
        movw    $SEL_KCODE, 2(%rdi)
        movw    $0x8e00, 4(%rdi)
        shrq    $16, %rax
        movw    %ax, 6(%rdi)
        shrq    $16, %rax
        movl    %eax, 8(%rdi)
        movl    $0, 12(%rdi)
        .endm


        .text
        .code32
        .globl _start
_start:
        movl    $stack_top, %esp
        cld
        # 4-KiB identity map of the first 2 MiB (supervisor, writable), the user pages
        # with U, the hole page not present.
        movl    $pt, %edi
        xorl    %ecx, %ecx
1:      movl    %ecx, %eax
        shll    $12, %eax
        orl     $3, %eax
        movl    %eax, (%edi,%ecx,8)
        movl    $0, 4(%edi,%ecx,8)
        incl    %ecx
        cmpl    $512, %ecx
        jb      1b
        movl    $user_code, %eax
        shrl    $12, %eax
        orl     $4, pt(,%eax,8)
        movl    $user_stack, %eax
        shrl    $12, %eax
        orl     $4, pt(,%eax,8)
        movl    $hole, %eax
        shrl    $12, %eax
        andl    $~1, pt(,%eax,8)
        movl    $pt + 7, pd
        movl    $pd + 7, pdpt
        movl    $pdpt + 7, pml4
        movl    $pml4, %eax
        movl    %eax, %cr3
        movl    %cr4, %eax
        orl     $0x20, %eax                     # PAE
        movl    %eax, %cr4
        movl    $MSR_EFER, %ecx
        rdmsr
        orl     $0x101, %eax                    # LME | SCE
        wrmsr
        movl    %cr0, %eax
        orl     $0x80010000, %eax               # PG | WP
        movl    %eax, %cr0
        lgdt    gdt_desc
        ljmp    $SEL_KCODE, $long_mode

        .code64
long_mode:
        movw    $SEL_KDATA, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        leaq    stack_top(%rip), %rsp
        # TSS descriptor base (64-bit, 16 bytes at 0x40), then ltr.
        leaq    tss(%rip), %rax
        movw    %ax, gdt_tss + 2(%rip)
        shrq    $16, %rax
        movb    %al, gdt_tss + 4(%rip)
        movb    %ah, gdt_tss + 7(%rip)
        shrq    $16, %rax
        movl    %eax, gdt_tss + 8(%rip)
        movw    $SEL_TSS, %ax
        ltr     %ax
        leaq    kstack_top(%rip), %rax
        movq    %rax, tss + 4(%rip)             # RSP0
        leaq    ist_top(%rip), %rax
        movq    %rax, tss + 36(%rip)            # IST1
        GATE    3, bp_handler
        GATE    13, gp_handler
        GATE    14, pf_handler
        GATE    0x80, int80_handler
        lidt    idt_desc(%rip)

# --- int3 ---
        movq    $0, bp_hits(%rip)
        movq    %rsp, saved_rsp(%rip)
        int3
int3_next:
        leaq    int3_next(%rip), %rax
        cmpq    $1, bp_hits(%rip)
        jne     1f
        cmpq    %rax, bp_rip(%rip)
        jne     1f
        cmpq    $SEL_KCODE, bp_cs(%rip)
        jne     1f
        movq    saved_rsp(%rip), %rax
        cmpq    %rax, bp_frame_rsp(%rip)
        jne     1f
        cmpq    $SEL_KDATA, bp_ss(%rip)
        jne     1f
        PASS    n_int3
        jmp     2f
1:      FAIL    n_int3
2:

# --- int $0x80 ---
        movq    $0, int80_rip(%rip)
        int     $0x80
int80_next:
        leaq    int80_next(%rip), %rax
        cmpq    %rax, int80_rip(%rip)
        jne     1f
        PASS    n_int80
        jmp     2f
1:      FAIL    n_int80
2:

# --- int3 through IST 1 ---
        movb    $1, idt + 3 * 16 + 4(%rip)      # gate 3: IST 1
        movq    $0, bp_hits(%rip)
        int3
        movb    $0, idt + 3 * 16 + 4(%rip)
        leaq    ist_top - 40(%rip), %rax        # five qwords pushed on the IST stack
        cmpq    $1, bp_hits(%rip)
        jne     1f
        cmpq    %rax, bp_rsp(%rip)
        jne     1f
        PASS    n_ist
        jmp     2f
1:      FAIL    n_ist
2:

# --- cmpxchg16b ---
        movl    $1, %eax
        cpuid
        btl     $13, %ecx                       # CX16
        jc      3f
        SKIP    n_cx16
        jmp     2f
3:      leaq    cx_mem(%rip), %rdi
        movq    $0x1111, (%rdi)
        movq    $0x2222, 8(%rdi)
        movq    $0x1111, %rax
        movq    $0x2222, %rdx
        movq    $0x3333, %rbx
        movq    $0x4444, %rcx
        lock cmpxchg16b (%rdi)                  # equal: ZF=1, memory = RCX:RBX
        jnz     1f
        cmpq    $0x3333, (%rdi)
        jne     1f
        cmpq    $0x4444, 8(%rdi)
        jne     1f
        movq    $1, %rax
        movq    $2, %rdx
        lock cmpxchg16b cx_mem(%rip)            # unequal: ZF=0, RDX:RAX = memory
        jz      1f
        cmpq    $0x3333, %rax
        jne     1f
        cmpq    $0x4444, %rdx
        jne     1f
        cmpq    $0x3333, (%rdi)
        jne     1f
        leaq    -0x100(%rdi), %rax              # %gs:0x100 is cx_mem
        movq    %rax, %rdx
        shrq    $32, %rdx
        movl    $MSR_GS_BASE, %ecx
        wrmsr
        movq    $0x3333, %rax
        movq    $0x4444, %rdx
        movq    $0x5555, %rbx
        movq    $0x6666, %rcx
        lock cmpxchg16b %gs:0x100
        jnz     1f
        cmpq    $0x5555, (%rdi)
        jne     1f
        cmpq    $0x6666, 8(%rdi)
        jne     1f
        movq    $0, gp_hits(%rip)
        leaq    cx_misaligned_resume(%rip), %rax
        movq    %rax, gp_resume(%rip)
cx_misaligned:
        lock cmpxchg16b 8(%rdi)                 # not 16-byte aligned: #GP(0)
cx_misaligned_resume:
        cmpq    $1, gp_hits(%rip)
        jne     1f
        leaq    cx_misaligned(%rip), %rax
        cmpq    %rax, gp_rip(%rip)
        jne     1f
        cmpq    $0, gp_error(%rip)
        jne     1f
        PASS    n_cx16
        jmp     2f
1:      FAIL    n_cx16
2:

# --- popcnt ---
        movl    $1, %eax
        cpuid
        btl     $23, %ecx                       # POPCNT
        jc      3f
        SKIP    n_popcnt
        jmp     2f
3:      movq    $0xf0f0f0f0f0f0f0f0, %rdi
        popcnt  %rdi, %rax
        jz      1f
        cmpq    $32, %rax
        jne     1f
        movl    $0xffffffff, %eax
        movq    $0, pc_mem(%rip)
        popcntl pc_mem(%rip), %eax              # zero: ZF=1, result 0
        jnz     1f
        testl   %eax, %eax
        jnz     1f
        PASS    n_popcnt
        jmp     2f
1:      FAIL    n_popcnt
2:

# --- clac / stac ---
        movl    $7, %eax
        xorl    %ecx, %ecx
        cpuid
        btl     $20, %ebx                       # SMAP
        jc      3f
        SKIP    n_clac
        jmp     2f
3:      stac
        pushfq
        popq    %rax
        btq     $18, %rax
        jnc     1f
        clac
        pushfq
        popq    %rax
        btq     $18, %rax
        jc      1f
        PASS    n_clac
        jmp     2f
1:      FAIL    n_clac
2:

# --- rdtscp ---
        movl    $0x80000001, %eax
        cpuid
        btl     $27, %edx                       # RDTSCP
        jc      3f
        SKIP    n_rdtscp
        jmp     2f
3:      leaq    4f(%rip), %rax                  # a KVM that does not offer it refuses TSC_AUX
        movq    %rax, gp_resume(%rip)
        movq    $0, gp_hits(%rip)
        movl    $MSR_TSC_AUX, %ecx
        movl    $0x5a, %eax
        xorl    %edx, %edx
        wrmsr
4:      movq    gp_hits(%rip), %r9              # 1: TSC_AUX was refused, ECX is whatever it is
        movq    $-1, %rcx
        rdtscp
        movq    %rcx, %r8
        shrq    $32, %r8                        # the upper half of RCX is cleared
        jnz     1f
        testq   %r9, %r9
        jnz     5f
        cmpq    $0x5a, %rcx                     # ECX = IA32_TSC_AUX
        jne     1f
5:      orq     %rdx, %rax
        jz      1f
        PASS    n_rdtscp
        jmp     2f
1:      FAIL    n_rdtscp
2:

# --- fwait ---
        fninit
        fwait
        PASS    n_fwait

# --- verw / verr ---
        verw    sel_data(%rip)                  # writable data: ZF=1
        jnz     1f
        movw    $SEL_KCODE, %ax
        verw    %ax                             # code: not writable
        jz      1f
        verr    %ax                             # readable code
        jnz     1f
        PASS    n_verw
        jmp     2f
1:      FAIL    n_verw
2:

# --- lsl ---
        movl    $SEL_KDATA, %eax
        lsl     %eax, %ebx                      # flat data, G=1: 0xffffffff
        jnz     1f
        cmpl    $0xffffffff, %ebx
        jne     1f
        movl    $SEL_TSS, %eax
        lsl     %eax, %ecx                      # the TSS, a system segment LSL accepts
        jnz     1f
        cmpl    $0x67, %ecx
        jne     1f
        xorl    %eax, %eax
        movl    $0x1234, %edx
        lsl     %eax, %edx                      # the null selector: ZF=0, EDX kept
        jz      1f
        movl    $gdt_end - gdt, %eax
        lsl     %eax, %edx                      # the first selector past the GDT: ZF=0, EDX kept
        jz      1f
        movl    $SEL_KDATA | 3, %eax
        lsl     %eax, %edx                      # RPL 3 for a DPL-0 segment: ZF=0, EDX kept
        jz      1f
        cmpl    $0x1234, %edx
        jne     1f
        PASS    n_lsl
        jmp     2f
1:      FAIL    n_lsl
2:

# --- xgetbv ---
        movl    $1, %eax
        cpuid
        btl     $26, %ecx                       # XSAVE
        jc      3f
        SKIP    n_xgetbv
        jmp     2f
3:      movq    %cr4, %rax
        orq     $0x40000, %rax                  # OSXSAVE
        movq    %rax, %cr4
        xorl    %ecx, %ecx
        xgetbv
        movq    %rax, %rbx
        movq    %cr4, %rax
        andq    $~0x40000, %rax
        movq    %rax, %cr4
        testq   $1, %rbx
        jz      1f
        PASS    n_xgetbv
        jmp     2f
1:      FAIL    n_xgetbv
2:

# --- ldmxcsr / stmxcsr ---
        movq    %cr4, %rax
        orq     $0x200, %rax                    # OSFXSR: the OS keeps SSE state
        movq    %rax, %cr4
        movl    $0x1fa0, mx_in(%rip)            # all exceptions masked, PE (a sticky flag) set
        ldmxcsr mx_in(%rip)
        movl    $0, mx_out(%rip)
        stmxcsr mx_out(%rip)
        cmpl    $0x1fa0, mx_out(%rip)
        jne     1f
        leaq    fx_area(%rip), %rdi
        fxsave64 (%rdi)                         # the FPU's own view: MXCSR at byte 24
        cmpl    $0x1fa0, 24(%rdi)
        jne     1f
        movq    $0, gp_hits(%rip)
        leaq    mx_resume(%rip), %rax
        movq    %rax, gp_resume(%rip)
        movl    $0x80001f80, mx_in(%rip)        # bit 31 is reserved: #GP(0), MXCSR unchanged
mx_reserved:
        ldmxcsr mx_in(%rip)
mx_resume:
        cmpq    $1, gp_hits(%rip)
        jne     1f
        leaq    mx_reserved(%rip), %rax
        cmpq    %rax, gp_rip(%rip)
        jne     1f
        cmpq    $0, gp_error(%rip)
        jne     1f
        stmxcsr mx_out(%rip)
        cmpl    $0x1fa0, mx_out(%rip)
        jne     1f
        movl    $0x1f80, mx_in(%rip)            # back to the power-on value
        ldmxcsr mx_in(%rip)
        PASS    n_mxcsr
        jmp     2f
1:      FAIL    n_mxcsr
2:

# --- syscall from ring 3 ---
        movl    $MSR_STAR, %ecx
        xorl    %eax, %eax
        movl    $(SEL_KCODE | (0x20 << 16)), %edx   # syscall CS 0x10; sysret CS 0x33, SS 0x2b
        wrmsr
        movl    $MSR_LSTAR, %ecx
        leaq    sys_entry(%rip), %rax
        movq    %rax, %rdx
        shrq    $32, %rdx
        wrmsr
        movl    $MSR_SFMASK, %ecx
        movl    $0x257fd5, %eax                 # as Linux: CF PF AF ZF SF TF IF DF OF IOPL NT RF AC ID
        xorl    %edx, %edx
        wrmsr
        movq    $0, sys_count(%rip)
        movq    $0, sys_bad(%rip)
        movq    $0, pf_hits(%rip)
        movq    %rsp, saved_rsp(%rip)
        pushq   $SEL_UDATA
        leaq    user_stack + 4096(%rip), %rax
        pushq   %rax
        pushq   $0x202                          # IF=1, as any user program runs
        pushq   $SEL_UCODE
        leaq    user_entry(%rip), %rax
        pushq   %rax
        iretq                                   # ring 3 from here; back through the #PF handler
syscall_done:
        movq    saved_rsp(%rip), %rsp
        cmpq    $SYSCALLS, sys_count(%rip)
        jne     1f
        cmpq    $0, sys_bad(%rip)
        jne     1f
        cmpq    $2, pf_hits(%rip)
        jne     1f
        leaq    sys_entry(%rip), %rax           # the user jmp: a fetch fault at LSTAR
        cmpq    %rax, pf1_rip(%rip)
        jne     1f
        cmpq    %rax, pf1_cr2(%rip)
        jne     1f
        movq    pf1_error(%rip), %rax
        andq    $~0x10, %rax                    # I/D is reported only with NXE/SMEP
        cmpq    $5, %rax
        jne     1f
        cmpq    $SEL_UCODE, pf1_cs(%rip)
        jne     1f
        cmpq    $6, pf2_error(%rip)             # the genuine #PF: user write, not present
        jne     1f
        leaq    hole(%rip), %rax
        cmpq    %rax, pf2_cr2(%rip)
        jne     1f
        leaq    user_fault(%rip), %rax
        cmpq    %rax, pf2_rip(%rip)
        jne     1f
        PASS    n_syscall
        jmp     2f
1:      FAIL    n_syscall
2:

        movb    failures(%rip), %al
        outb    %al, $DEBUG_EXIT_PORT
        HALT_FOREVER

# --- handlers ---
bp_handler:
        incq    bp_hits(%rip)
        movq    %rsp, bp_rsp(%rip)
        pushq   %rax
        movq    8(%rsp), %rax
        movq    %rax, bp_rip(%rip)
        movq    16(%rsp), %rax
        movq    %rax, bp_cs(%rip)
        movq    32(%rsp), %rax
        movq    %rax, bp_frame_rsp(%rip)
        movq    40(%rsp), %rax
        movq    %rax, bp_ss(%rip)
        popq    %rax
        iretq

int80_handler:
        pushq   %rax
        movq    8(%rsp), %rax
        movq    %rax, int80_rip(%rip)
        popq    %rax
        iretq

gp_handler:                                     # frame: error, RIP, CS, RFLAGS, RSP, SS
        incq    gp_hits(%rip)
        pushq   %rax
        movq    8(%rsp), %rax
        movq    %rax, gp_error(%rip)
        movq    16(%rsp), %rax
        movq    %rax, gp_rip(%rip)
        movq    gp_resume(%rip), %rax
        movq    %rax, 16(%rsp)
        popq    %rax
        addq    $8, %rsp
        iretq

pf_handler:
        nopl    (%rax)                          # what a kernel's first instruction may be
        incq    pf_hits(%rip)
        movq    %cr2, %rax
        cmpq    $1, pf_hits(%rip)
        jne     3f
        movq    %rax, pf1_cr2(%rip)             # the user's jmp to LSTAR
        movq    (%rsp), %rax
        movq    %rax, pf1_error(%rip)
        movq    8(%rsp), %rax
        movq    %rax, pf1_rip(%rip)
        movq    16(%rsp), %rax
        movq    %rax, pf1_cs(%rip)
        addq    $8, %rsp                        # drop the error code, resume the user
        leaq    user_phase2(%rip), %rax
        movq    %rax, (%rsp)
        iretq
3:      movq    %rax, pf2_cr2(%rip)             # the genuine #PF
        movq    (%rsp), %rax
        movq    %rax, pf2_error(%rip)
        movq    8(%rsp), %rax
        movq    %rax, pf2_rip(%rip)
        jmp     syscall_done

sys_entry:                                      # syscall lands here: it must be CPL 0
        movw    %cs, %r8w
        cmpw    $SEL_KCODE, %r8w
        je      1f
        incq    sys_bad(%rip)
1:      incq    sys_count(%rip)
        sysretq

# --- output ---
# report: %rsi = prefix, %rdi = name; prints "prefix name\n".
report:
        movw    $COM1_THR, %dx
1:      lodsb
        testb   %al, %al
        jz      2f
        outb    %al, %dx
        jmp     1b
2:      movq    %rdi, %rsi
3:      lodsb
        testb   %al, %al
        jz      4f
        outb    %al, %dx
        jmp     3b
4:      movb    $'\n', %al
        outb    %al, %dx
        ret

# --- ring 3 (its own page, mapped user) ---
        .balign 4096
user_code:
user_entry:
        movl    $SYSCALLS, %r12d
1:      movl    $39, %eax
        syscall
        decl    %r12d
        jnz     1b
        movabsq $sys_entry, %rax
        jmp     *%rax                           # a user jump to LSTAR: #PF, not a syscall
user_phase2:
        movabsq $hole, %rdi
user_fault:
        movq    $0x99, (%rdi)                   # not present: the genuine #PF
        ud2
        .balign 4096

        .section .rodata
s_ok:       .asciz "ok "
s_fail:     .asciz "FAIL "
s_skip:     .asciz "skip "
n_int3:     .asciz "int3"
n_int80:    .asciz "int80"
n_ist:      .asciz "int3-ist"
n_cx16:     .asciz "cx16"
n_popcnt:   .asciz "popcnt"
n_clac:     .asciz "clac"
n_rdtscp:   .asciz "rdtscp"
n_fwait:    .asciz "fwait"
n_verw:     .asciz "verw"
n_lsl:      .asciz "lsl"
n_xgetbv:   .asciz "xgetbv"
n_syscall:  .asciz "syscall"
n_mxcsr:    .asciz "mxcsr"
sel_data:   .word SEL_KDATA

        .data
        .balign 8
gdt:
        .quad   0                               # 0x00
        .quad   0                               # 0x08
        .quad   0x00af9b000000ffff              # 0x10 kernel code, 64-bit
        .quad   0x00cf93000000ffff              # 0x18 kernel data
        .quad   0x00cffb000000ffff              # 0x20 user code, 32-bit (sysret base)
        .quad   0x00cff3000000ffff              # 0x28 user data
        .quad   0x00affb000000ffff              # 0x30 user code, 64-bit
        .quad   0                               # 0x38
gdt_tss:                                        # 0x40 64-bit TSS, 16 bytes (base patched)
        .word   0x67, 0
        .byte   0, 0x89, 0, 0
        .long   0, 0
gdt_end:
gdt_desc:
        .word   gdt_end - gdt - 1
        .quad   gdt
idt_desc:
        .word   256 * 16 - 1
        .quad   idt
failures:   .byte 0
        .balign 8
bp_hits:    .quad 0
bp_rip:     .quad 0
bp_cs:      .quad 0
bp_ss:      .quad 0
bp_rsp:     .quad 0
bp_frame_rsp: .quad 0
saved_rsp:  .quad 0
int80_rip:  .quad 0
gp_hits:    .quad 0
gp_error:   .quad 0
gp_rip:     .quad 0
gp_resume:  .quad 0
pc_mem:     .quad 0
sys_count:  .quad 0
sys_bad:    .quad 0
pf_hits:    .quad 0
pf1_cr2:    .quad 0
pf1_error:  .quad 0
pf1_rip:    .quad 0
pf1_cs:     .quad 0
pf2_cr2:    .quad 0
pf2_error:  .quad 0
pf2_rip:    .quad 0
        .balign 16
cx_mem:     .quad 0, 0, 0, 0
mx_in:      .long 0
mx_out:     .long 0
        .balign 16
fx_area:    .space 512
        .balign 16
tss:        .space 0x68

        .bss
        .balign 4096
pml4:       .space 4096
pdpt:       .space 4096
pd:         .space 4096
pt:         .space 4096
idt:        .space 4096
user_stack: .space 4096
hole:       .space 4096
            .space 4096
kstack_top:
            .space 4096
ist_top:
