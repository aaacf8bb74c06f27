# uart-irq.S - COM1 interrupt-driven through the in-kernel IOAPIC, in both directions.
#
# Routes IOAPIC pin 4 (COM1's ISA IRQ, edge, active high: the MADT has no override for
# it) to vector 0x24 on the boot CPU, enables the local APIC, and lets the UART raise
# received-data interrupts: the handler echoes every byte it reads until it sees 'q'.
# Then it enables the transmitter-empty interrupt and waits for one. Output:
#   uart-irq: ready
#   <the bytes received before 'q'>
#   uart-irq: thre
# then power-off. Everything after "ready" happens in the interrupt handler or after
# an interrupt woke `hlt`: no polling of LSR.
#
# The handler does not `iret`: this host's instruction emulator cannot execute a
# 32-bit iret even to ring 0. It drops the interrupt frame and jumps back to the wait
# loop instead (same ring, same stack), which is all a test guest needs.
        .include "pvh.inc"

        PVH_NOTE _start

        .set LAPIC_SVR, 0xfee000f0
        .set LAPIC_EOI, 0xfee000b0
        .set IOAPIC_SEL, 0xfec00000
        .set IOAPIC_WIN, 0xfec00010
        .set VECTOR, 0x24
        .set COM1_IER, 0x3f9
        .set COM1_IIR, 0x3fa

        .text
        .code32
        .globl _start
_start:
        movl    $stack_top, %esp
        cld
        # IDT gate for VECTOR: 32-bit interrupt gate, present, DPL 0, our CS.
        movl    $irq_handler, %eax
        movw    %ax, idt + VECTOR * 8
        shrl    $16, %eax
        movw    %ax, idt + VECTOR * 8 + 6
        movw    %cs, %ax
        movw    %ax, idt + VECTOR * 8 + 2
        movw    $0x8e00, idt + VECTOR * 8 + 4
        lidt    idt_desc
        movl    $0x1ff, LAPIC_SVR       # APIC software-enabled, spurious vector 0xff
        movl    $0x18, IOAPIC_SEL       # redirection entry 4, low half
        movl    $VECTOR, IOAPIC_WIN     # fixed, physical, edge, active high, unmasked
        movl    $0x19, IOAPIC_SEL       # high half: destination APIC ID 0
        movl    $0, IOAPIC_WIN
        PUTS    s_ready
        movw    $COM1_IER, %dx
        movb    $0x01, %al              # received-data interrupt
        outb    %al, %dx
1:      cmpb    $0, quit                # interrupts are off here: the handler returns to 1b
        jne     2f
        movl    $1b, resume
        sti
        hlt                             # sti's shadow: no interrupt before hlt
        cli
        jmp     1b
2:      PUTS    s_newline
        movw    $COM1_IER, %dx
        movb    $0x03, %al              # and now transmitter-empty too
        outb    %al, %dx
3:      cmpl    $0, thre_count
        jne     4f
        movl    $3b, resume
        sti
        hlt
        cli
        jmp     3b
4:      movw    $COM1_IER, %dx
        xorb    %al, %al
        outb    %al, %dx
        PUTS    s_thre
        POWEROFF
        HALT_FOREVER

# The 8250 driver's loop: read IIR until it says no interrupt is pending.
irq_handler:
        pushl   %eax
        pushl   %edx
9:      movw    $COM1_IIR, %dx
        inb     %dx, %al
        testb   $1, %al                 # bit 0 set: nothing pending
        jnz     5f
        andb    $0x0e, %al
        cmpb    $0x04, %al              # received data available
        jne     4f
        movw    $COM1_THR, %dx
        inb     %dx, %al                # RBR
        cmpb    $'q', %al
        je      6f
        outb    %al, %dx                # echo
        jmp     9b
6:      movb    $1, quit
        jmp     9b
4:      incl    thre_count              # 0x02: THRE (reading IIR acknowledged it)
        movw    $COM1_IER, %dx          # one is enough: stop further THRE interrupts
        movb    $0x01, %al
        outb    %al, %dx
        jmp     9b
5:      movl    $0, LAPIC_EOI
        popl    %edx
        popl    %eax
        addl    $12, %esp               # EIP, CS, EFLAGS: dropped, see above
        jmp     *resume

        .section .rodata
s_ready:        .asciz "uart-irq: ready\n"
s_newline:      .asciz "\n"
s_thre:         .asciz "uart-irq: thre\n"
        .balign 8
idt_desc:
        .word   256 * 8 - 1
        .long   idt

        .data
quit:           .byte 0
        .balign 4
resume:         .long 0
        .balign 4
thre_count:     .long 0

        .bss
        .balign 8
idt:    .space  256 * 8
