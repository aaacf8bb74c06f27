# echo.S - serial echo: every byte received on COM1 is sent back; 'q' powers off.
#
# Prints "echo ready\n", then polls the line status register for received data.
# Polling costs one port-I/O exit per look, so keep this guest's life short: it
# exists to test console input paths (vmmctl run's stdin, vmmd's console API).

        .include "pvh.inc"

        .set COM1_LSR, 0x3fd            # line status: bit 0 = data ready

        PVH_NOTE _start

        .text
        .code32
        .globl _start
_start:
        movl    $stack_top, %esp
        cld
        PUTS    msg_ready
1:      movw    $COM1_LSR, %dx
        inb     %dx, %al
        testb   $1, %al
        jz      1b
        movw    $COM1_THR, %dx
        inb     %dx, %al                # RBR shares the THR's port
        outb    %al, %dx
        cmpb    $'q', %al
        jne     1b
        PUTS    msg_bye
        POWEROFF
        HALT_FOREVER

        .section .rodata
msg_ready:      .asciz "echo ready\n"
msg_bye:        .asciz "\nbye\n"
