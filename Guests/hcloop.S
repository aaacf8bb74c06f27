# hcloop.S - makes hypercalls in a loop until a byte arrives on COM1, then says who it is.
#
# Prints "hcloop: ready\n", then calls abi_info over and over (one exit each) and polls
# COM1's line status (another). The addresses of the instructions after the doorbell
# (`hc_done`) and after the status read (`lsr_done`) are left at 0x9008 and 0x900C: a
# VMM that pauses the vCPU at one of them must show EAX = the call's result, or AL =
# the status it read — the exit completed — never what the register held before.
# Once a byte arrives, it prints
#   hcloop: generation GGGGGGGG id IIIIIIII name NAME
# from the vm_generation and vm_name hypercalls (restores behind it, the first 4 bytes
# of its instance ID, its name), then powers off. Needs hypercalls on.
        .include "pvh.inc"
        .include "hypercall.inc"
        .set COM1_LSR, 0x3fd
        .set DONE_ADDRESS, 0x9008
        .set LSR_DONE_ADDRESS, 0x900c

        PVH_NOTE _start

        .text
        .code32
        .globl _start
_start:
        movl    $stack_top, %esp
        cld
        movl    $hc_done, DONE_ADDRESS
        movl    $lsr_done, LSR_DONE_ADDRESS
        PUTS    s_ready
1:      HCALL   HC_ABI_INFO
hc_done:
        movl    %eax, %ebx
        movw    $COM1_LSR, %dx
        inb     %dx, %al
lsr_done:
        testb   $1, %al
        jz      1b
        movl    $generation, %ebx
        movl    $24, %ecx
        HCALL   HC_VM_GENERATION
        PUTS    s_generation
        movl    generation, %eax
        PUTHEX
        PUTS    s_id
        movl    generation + 8, %eax
        PUTHEX
        PUTS    s_name
        movl    $name, %ebx
        movl    $64, %ecx
        HCALL   HC_VM_NAME
        movb    $0, name(%eax)
        PUTS    name
        PUTS    s_newline
        POWEROFF
        HALT_FOREVER

        .section .rodata
s_ready:        .asciz "hcloop: ready\n"
s_generation:   .asciz "hcloop: generation "
s_id:           .asciz " id "
s_name:         .asciz " name "
s_newline:      .asciz "\n"

        .bss
        .balign 8
generation:     .space 24
name:           .space 65
