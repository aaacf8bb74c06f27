# count.S - counts on COM1, for the snapshot tests: a guest whose every step shows.
#
# Command line: the first number is how far to count (default 500); a second number,
# when it is 1, also starts the second vCPU (INIT/SIPI), which spins in real mode
# incrementing a counter at 0x9004. Output:
#   count: start
#   1
#   2
#   ...
#   N
#   count: memory ok      (or "count: memory BAD")
#   count: fpu ok         (or "count: fpu BAD")
#   count: ap ok          (only with the second vCPU; "count: ap stopped" if it is not spinning)
# then power-off (status 0).
#
# What a snapshot must carry for the output to come out right after a restore: the
# registers and the counter in memory (no gap, no repeat); 64 pages from 4 MiB, where
# each number i is stored in page i mod 64 (checked at the end against what counting
# to N leaves there); and the FPU state: XMM0-7 and MXCSR are loaded at the start
# (fxrstor) and compared at the end (fxsave).
        .include "pvh.inc"

        .set TABLE,       0x400000      # 64 pages, one per residue mod 64
        .set AP_COUNTER,  0x9004
        .set DELAY,       200           # `loop` turns between numbers (~1 us each, emulated)
        .set LAPIC_SVR,   0xfee000f0
        .set LAPIC_ICR_LO, 0xfee00300
        .set ICR_INIT,    0x000c4500
        .set ICR_STARTUP, 0x000c4608

        PVH_NOTE _start

# The second vCPU: real mode at 0x8000 (pvh-smp.ld's trampoline segment).
        .section .tramp, "awx"
        .code16
ap_entry:
        cli
        xorw    %ax, %ax
        movw    %ax, %ds
1:      lock incl AP_COUNTER
        jmp     1b

        .text
        .code32
        .globl _start
_start:
        movl    $stack_top, %esp
        cld
        movl    24(%ebx), %esi          # hvm_start_info.cmdline_paddr
        call    parse_number
        testl   %eax, %eax
        jnz     1f
        movl    $500, %eax
1:      movl    %eax, limit
        call    parse_number            # continues after the first number
        movl    %eax, want_ap
        # SSE on: CR0.EM off, CR0.MP on, CR4.OSFXSR and OSXMMEXCPT.
        movl    %cr0, %eax
        andl    $~4, %eax
        orl     $2, %eax
        movl    %eax, %cr0
        movl    %cr4, %eax
        orl     $0x600, %eax
        movl    %eax, %cr4
        fxrstor fx_pattern
        cmpl    $1, want_ap
        jne     2f
        movl    $0, AP_COUNTER
        movl    $0x1ff, LAPIC_SVR
        movl    $ICR_INIT, LAPIC_ICR_LO
        movl    $ICR_STARTUP, LAPIC_ICR_LO
        movl    $ICR_STARTUP, LAPIC_ICR_LO
2:      PUTS    s_start

count_loop:
        movl    counter, %eax
        cmpl    limit, %eax
        jae     counted
        incl    %eax
        movl    %eax, counter
        movl    %eax, %edx
        andl    $63, %edx
        shll    $12, %edx
        movl    %eax, TABLE(%edx)
        call    print_number
        movl    $DELAY, %ecx
3:      loop    3b
        jmp     count_loop

counted:
        # Page k must hold the largest i <= N with i = k (mod 64): N - ((N - k) & 63), or 0.
        xorl    %edi, %edi
4:      movl    limit, %eax
        xorl    %ecx, %ecx              # expected
        cmpl    %edi, %eax
        jb      5f
        movl    %eax, %ecx
        subl    %edi, %eax
        andl    $63, %eax
        subl    %eax, %ecx
5:      movl    %edi, %edx
        shll    $12, %edx
        cmpl    %ecx, TABLE(%edx)
        jne     memory_bad
        incl    %edi
        cmpl    $64, %edi
        jb      4b
        PUTS    s_memory_ok
        jmp     fpu_check
memory_bad:
        PUTS    s_memory_bad
fpu_check:
        fxsave  fx_check
        movl    fx_check + 24, %eax     # MXCSR
        cmpl    fx_pattern + 24, %eax
        jne     fpu_bad
        movl    $fx_pattern + 160, %esi # XMM0-7: 128 bytes
        movl    $fx_check + 160, %edi
        movl    $32, %ecx
        repe cmpsl
        jne     fpu_bad
        PUTS    s_fpu_ok
        jmp     ap_check
fpu_bad:
        PUTS    s_fpu_bad
ap_check:
        cmpl    $1, want_ap
        jne     finish
        movl    AP_COUNTER, %ebx
        movl    $20000, %ecx
6:      loop    6b
        cmpl    AP_COUNTER, %ebx
        je      ap_stopped
        PUTS    s_ap_ok
        jmp     finish
ap_stopped:
        PUTS    s_ap_stopped
finish:
        POWEROFF
        DEBUG_EXIT 0
        HALT_FOREVER

# print_number: %eax in decimal and a newline. Clobbers %eax, %ecx, %edx, %esi, %edi.
print_number:
        movl    $numbuf + 15, %edi      # numbuf[15] = '\n', numbuf[16] = 0
        movl    $10, %ecx
1:      xorl    %edx, %edx
        divl    %ecx
        addb    $'0', %dl
        decl    %edi
        movb    %dl, (%edi)
        testl   %eax, %eax
        jnz     1b
        movl    %edi, %esi
        call    puts
        ret

# parse_number: the next decimal number in the string at %esi (0 when none, or when
# %esi is 0); %esi is left after it. Clobbers %eax, %edx.
parse_number:
        xorl    %eax, %eax
        testl   %esi, %esi
        jz      3f
1:      movzbl  (%esi), %edx            # skip to a digit (or the end)
        testl   %edx, %edx
        jz      3f
        subl    $'0', %edx
        cmpl    $9, %edx
        jbe     2f
        incl    %esi
        jmp     1b
2:      imull   $10, %eax               # digits
        addl    %edx, %eax
        incl    %esi
        movzbl  (%esi), %edx
        subl    $'0', %edx
        cmpl    $9, %edx
        jbe     2b
3:      ret

        .section .rodata
s_start:        .asciz "count: start\n"
s_memory_ok:    .asciz "count: memory ok\n"
s_memory_bad:   .asciz "count: memory BAD\n"
s_fpu_ok:       .asciz "count: fpu ok\n"
s_fpu_bad:      .asciz "count: fpu BAD\n"
s_ap_ok:        .asciz "count: ap ok\n"
s_ap_stopped:   .asciz "count: ap stopped\n"

        .data
        .balign 16
# The FXSAVE image loaded at the start: FCW 0x37F, MXCSR 0x3F80 (round down), and a
# pattern in XMM0-7.
fx_pattern:
        .word   0x037f
        .fill   22, 1, 0
        .long   0x3f80                  # MXCSR at offset 24
        .fill   160 - 28, 1, 0
        .irp    reg, 1, 2, 3, 4, 5, 6, 7, 8
        .long   0x11111111 * \reg, 0x01020304 + \reg, 0xa5a5a5a5, 0x5a5a5a00 + \reg
        .endr
        .fill   512 - 288, 1, 0
numbuf:         .space 15
                .byte '\n', 0
        .balign 4
counter:        .long 0
limit:          .long 0
want_ap:        .long 0

        .bss
        .balign 16
fx_check:       .space 512
