# hostile.S - a guest that pokes at everything it can reach; the VMM must survive.
#
# Run with exactly 32 MiB of RAM.  Stages (each announced on COM1):
#  (a) every I/O port 0..0xffff except the ones that would end the run
#      (0x64 i8042 reset, 0xf4-0xf7 isa-debug-exit, 0x600-0x602 ACPI sleep/
#      reset): inb, then outb 0.  Note this also writes a 0 byte to COM1's
#      THR (one NUL in the output) and zeroes the UART's other registers.
#      Then 16- and 32-bit in/out on a few ports, including accesses that run
#      past port 0xffff and widths the in-kernel PIT/PIC do not handle.
#  (b) rep insb / rep outsb of 4096 bytes at an unclaimed port (0x1234).
#      KVM's emulator turns the insb into KVM_EXIT_IO exits with count > 1
#      (measured on the test host: 4 exits of count 1024) and the outsb into
#      4096 exits of count 1.  The VMM must honour io.count.
#  (c) a 32-bit read and a 32-bit write of 0 at every 1 MiB step from 32 MiB
#      (the end of RAM) to 0xfff00000, skipping the LAPIC page range
#      0xfee00000-0xfeefffff: unbacked guest-physical addresses -> MMIO exits.
#  (d) "survived\n" and ACPI power-off (QEMU fallback: isa-debug-exit 0).
#
# The whole sweep is ~70k port pairs and ~4k MMIO pairs, so the loops are
# kept to 4-5 instructions per step (every CPL 0 instruction is emulated).
#
# Why 0xf5-0xf7 are skipped too: QEMU's usual isa-debug-exit config
# (iobase=0xf4,iosize=4) exits on a write to any of the four ports.
# Not for QEMU's "pc" machine: there, writing 0 to port 0x92 turns off A20
# and the guest (running at 1 MiB) crashes.  KVM has no A20 gate; QEMU
# microvm has no port 0x92.

        .include "pvh.inc"

        .set IO_UNCLAIMED, 0x1234
        .set RAM_END,      0x02000000   # 32 MiB
        .set LAPIC_LO,     0xfee00000
        .set LAPIC_HI,     0xfef00000   # first address past the skipped MiB
        .set STEP,         0x00100000   # 1 MiB

        PVH_NOTE _start

# inb + outb 0 on ports [lo, hi).  %eax is zero on entry and inb only writes
# %al, so %ah stays 0 and `movb %ah, %al` rezeroes %al in one instruction.
.macro PORT_SWEEP lo, hi
        movl    $\lo, %edx
        movl    $(\hi - \lo), %ecx
1:      inb     %dx, %al
        movb    %ah, %al
        outb    %al, %dx
        incl    %edx
        loop    1b
.endm

# 16- and 32-bit in and out (of 0) on one port.
.macro WIDE_IO port
        movl    $\port, %edx
        inw     %dx, %ax
        inl     %dx, %eax
        xorl    %eax, %eax
        outw    %ax, %dx
        outl    %eax, %dx
.endm

        .text
        .code32
        .globl _start
_start:
        movl    $stack_top, %esp
        cld

        # (a) byte sweep of the whole port space
        PUTS    msg_ports
        xorl    %eax, %eax
        PORT_SWEEP 0x0000, 0x0064       # up to the i8042 command port
        PORT_SWEEP 0x0065, 0x00f4       # up to isa-debug-exit
        PORT_SWEEP 0x00f8, 0x0600       # up to ACPI sleep control/status/reset
        PORT_SWEEP 0x0603, 0x10000      # the rest, up to 0xffff

        # (a) wider accesses
        WIDE_IO 0x0020                  # PIC: in-kernel, byte-only device
        WIDE_IO 0x0040                  # PIT: in-kernel, byte-only device
        WIDE_IO 0x0060                  # i8042 data (covers 0x60-0x63 only)
        WIDE_IO 0x0080                  # POST code: byte device, wide access
        WIDE_IO IO_UNCLAIMED
        WIDE_IO 0x0cfc                  # PCI config data (no PCI here)
        movl    $0x0cf8, %edx           # PCI config address: enable bit, reg 0
        movl    $0x80000000, %eax
        outl    %eax, %dx
        movw    $0x0cfc, %dx
        inl     %dx, %eax               # vendor/device of 00:00.0, if any
        movw    $0x0cf8, %dx
        xorl    %eax, %eax
        outl    %eax, %dx
        WIDE_IO 0xfffe                  # 32-bit access runs past 0xffff
        WIDE_IO 0xffff                  # both widths run past 0xffff

        # (b) string I/O: one exit each with a full page of data
        PUTS    msg_string
        movw    $IO_UNCLAIMED, %dx
        movl    $iobuf, %edi
        movl    $4096, %ecx
        rep insb
        movl    $iobuf, %esi
        movl    $4096, %ecx
        rep outsb

        # (c) MMIO sweep beyond RAM, 1 MiB steps
        PUTS    msg_mmio
        movl    $RAM_END, %esi
1:      movl    (%esi), %eax
        movl    $0, (%esi)
        addl    $STEP, %esi
        cmpl    $LAPIC_LO, %esi
        jne     1b
        movl    $LAPIC_HI, %esi
2:      movl    (%esi), %eax
        movl    $0, (%esi)
        addl    $STEP, %esi             # 0xfff00000 + 1 MiB wraps to 0: ZF
        jnz     2b

        # (d)
        PUTS    msg_survived
        POWEROFF                        # swift-vmm: status 0
        DEBUG_EXIT 0                    # QEMU: status 1
        HALT_FOREVER

        .section .rodata
msg_ports:      .asciz "hostile: port sweep\n"
msg_string:     .asciz "hostile: string I/O\n"
msg_mmio:       .asciz "hostile: MMIO sweep\n"
msg_survived:   .asciz "survived\n"

        .bss
        .balign 4096
iobuf:  .space  4096
