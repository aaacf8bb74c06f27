# hypercall.S - exercises the hypercall ABI from ring 0.
#
# Prints the CPUID view (our signature at 0x40000000, KVM's moved to 0x40000100,
# the enabled bit, ABI version and doorbell port), then, with hypercalls on,
# calls every built-in, the error paths (wild, wrapping and hole addresses, a
# short buffer, a bad log level) and an unknown call number, whose #UD lands in
# the guest's own IDT handler. It ends with the power_off hypercall.
# With hypercalls off it rings the doorbell anyway, checks that RAX came back
# untouched, and powers off through ACPI.
        .include "pvh.inc"
        .include "hypercall.inc"

        PVH_NOTE _start

        .text
        .code32
        .globl _start
_start:
        movl    $stack_top, %esp
        cld
        movl    $0x40000000, %eax       # our signature
        cpuid
        movl    %ebx, sig
        movl    %ecx, sig + 4
        movl    %edx, sig + 8
        movl    $0x40000100, %eax       # KVM's leaves, moved up
        cpuid
        movl    %ebx, kvmsig
        movl    %ecx, kvmsig + 4
        movl    %edx, kvmsig + 8
        PUTS    s_sig
        PUTS    sig
        PUTS    s_kvm
        PUTS    kvmsig
        movl    $0x40000001, %eax       # enabled bit, version, port
        cpuid
        movl    %eax, info
        movl    %ebx, info + 4
        movl    %ecx, info + 8
        PUTS    s_hc
        movl    info, %eax
        PUTHEX
        PUTS    s_ver
        movl    info + 4, %eax
        PUTHEX
        PUTS    s_port
        movl    info + 8, %eax
        PUTHEX
        PUTS    s_nl
        testl   $1, info
        jnz     enabled

        # Off: the doorbell is an unclaimed port; RAX must come back as it went.
        movl    $0x1234, %eax
        movw    $HC_PORT, %dx
        outl    %eax, %dx
        cmpl    $0x1234, %eax
        jne     1f
        PUTS    s_inert
1:      POWEROFF
        HALT_FOREVER

enabled:
        HCALL   HC_ABI_INFO
        pushl   %eax
        PUTS    s_abi
        popl    %eax
        PUTHEX
        PUTS    s_nl

        movl    $s_console, %ebx
        movl    $s_console_end - s_console, %ecx
        HCALL   HC_CONSOLE_WRITE
        pushl   %eax
        PUTS    s_cw
        popl    %eax
        PUTHEX
        PUTS    s_nl

        movl    $timebuf, %ebx
        movl    $16, %ecx
        HCALL   HC_TIME
        pushl   %eax
        PUTS    s_time
        popl    %eax
        PUTHEX
        movl    timebuf + 4, %eax       # high half of realtime ns: non-zero since 1970 + 4 s
        orl     timebuf + 12, %eax      # or of monotonic
        jz      1f
        PUTS    s_nonzero
1:      PUTS    s_nl

        movl    $namebuf, %ebx
        movl    $63, %ecx
        HCALL   HC_VM_NAME
        PUTS    s_name
        PUTS    namebuf
        PUTS    s_nl

        movl    $2, %ebx
        movl    $s_logline, %ecx
        movl    $s_logline_end - s_logline, %esi
        HCALL   HC_LOG
        pushl   %eax
        PUTS    s_log
        popl    %eax
        PUTHEX
        PUTS    s_nl

        PUTS    s_bad
        movl    $0xfffffff0, %ebx       # runs off the end of the 32-bit space
        movl    $0x100, %ecx
        HCALL   HC_CONSOLE_WRITE
        PUTHEX
        PUTS    s_sp
        movl    $0xffffffff, %ebx       # address + length wraps
        movl    $0xffffffff, %ecx
        HCALL   HC_CONSOLE_WRITE
        PUTHEX
        PUTS    s_sp
        movl    $0xfee00000, %ebx       # the LAPIC, in the MMIO hole
        movl    $16, %ecx
        HCALL   HC_CONSOLE_WRITE
        PUTHEX
        PUTS    s_sp
        movl    $timebuf, %ebx          # 8 bytes is too small for the time
        movl    $8, %ecx
        HCALL   HC_TIME
        PUTHEX
        PUTS    s_sp
        movl    $9, %ebx                # no log level 9
        movl    $s_logline, %ecx
        movl    $4, %esi
        HCALL   HC_LOG
        PUTHEX
        PUTS    s_nl

        # An unknown call raises #UD: install vector 6 (interrupt gate, selector
        # 0x08 = the flat code segment of the VMM's boot GDT) and ring.
        movl    $ud_handler, %eax
        movw    %ax, idt + 6 * 8
        shrl    $16, %eax
        movw    %ax, idt + 6 * 8 + 6
        lidt    idt_desc
        HCALL   0x999
        PUTS    s_noud                  # reached only if no #UD came
        HALT_FOREVER

ud_handler:
        addl    $12, %esp               # drop EIP, CS, EFLAGS: no iret needed
        PUTS    s_ud
        HCALL   HC_POWER_OFF
        PUTS    s_alive                 # power_off does not return
        HALT_FOREVER

        .section .rodata
s_sig:      .asciz "sig="
s_kvm:      .asciz " kvm="
s_hc:       .asciz "\nhc="
s_ver:      .asciz " ver="
s_port:     .asciz " port="
s_nl:       .asciz "\n"
s_sp:       .asciz " "
s_inert:    .asciz "doorbell inert\n"
s_abi:      .asciz "abi="
s_console:  .ascii "via hypercall\n"
s_console_end:
s_cw:       .asciz "cw="
s_time:     .asciz "time="
s_nonzero:  .asciz " nonzero"
s_name:     .asciz "name="
s_logline:  .ascii "hello from the guest log"
s_logline_end:
s_log:      .asciz "log="
s_bad:      .asciz "bad="
s_ud:       .asciz "UD\n"
s_noud:     .asciz "no UD\n"
s_alive:    .asciz "power_off returned\n"

        .data
        .balign 8
idt:
        .fill   6, 8, 0                 # vectors 0-5: not present
        .word   0                       # vector 6: offset 15:0 (patched)
        .word   0x08                    # selector
        .byte   0
        .byte   0x8e                    # present, DPL 0, 32-bit interrupt gate
        .word   0                       # offset 31:16 (patched)
idt_end:
idt_desc:
        .word   idt_end - idt - 1
        .long   idt

        .bss
        .balign 16
sig:        .space 16
kvmsig:     .space 16
info:       .space 12
timebuf:    .space 16
namebuf:    .space 64
