# reset.S - guest-initiated reset through the i8042, and the state kept across it.
#
# First boot: 0x9000 does not hold 'RSET' -> store it, print "resetting\n",
# write 0xFE (pulse reset line) to the i8042 command port 0x64.
# After the reset the ELF image is reloaded but RAM is not cleared, so the
# marker is still in the scratch page 0x9000 -> clear it, print "rebooted\n",
# power off (status 0 under swift-vmm); if the VM is still running (QEMU has
# no 0x600 device) write 0 to isa-debug-exit (status 1).
#
# If the i8042 write does nothing (QEMU microvm has no i8042), the guest says
# so and triple-faults, which QEMU (without -no-reboot) also turns into a reset.

        .include "pvh.inc"

        .set RESET_MAGIC, 0x52534554    # 'R','S','E','T' read as a big-endian number
        .set I8042_CMD,   0x64
        .set I8042_RESET, 0xfe

        PVH_NOTE _start

        .text
        .code32
        .globl _start
_start:
        movl    $stack_top, %esp
        cld
        cmpl    $RESET_MAGIC, SCRATCH
        je      second_boot

        # First boot.  Store the marker before asking for the reset.
        movl    $RESET_MAGIC, SCRATCH
        PUTS    msg_resetting
        movb    $I8042_RESET, %al
        outb    %al, $I8042_CMD
        # Still here: no i8042 reset.  Report it, then force a reset anyway.
        PUTS    msg_no_i8042
        TRIPLE_FAULT

second_boot:
        movl    $0, SCRATCH             # so the next fresh run starts over
        PUTS    msg_rebooted
        POWEROFF                        # swift-vmm: status 0
        DEBUG_EXIT 0                    # QEMU: status 1
        HALT_FOREVER

        .section .rodata
msg_resetting:  .asciz "resetting\n"
msg_rebooted:   .asciz "rebooted\n"
msg_no_i8042:   .asciz "reset: i8042 reset ignored, triple faulting\n"
