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
# Assembled with `--defsym COUNT=N` (bench-100k.elf) N is fixed, for a VMM
# that cannot write guest memory before the run (`vmmctl run`).
# Assembled with `--defsym NOTIFY=1` (notify.elf) the loop body is instead a
# 32-bit store of 0 to the first virtio-mmio device's QueueNotify register
# (0xd0000050): a queue notification, through an MMIO exit or an ioeventfd.
#
# Why SYSEXIT and not IRET: on the target host CPL 0 runs in KVM's
# instruction emulator, and KVM's emulator only implements IRET for real
# mode, and far RET only without a privilege change; both fail with
# KVM_EXIT_INTERNAL_ERROR (emulation failure).  SYSEXIT is implemented.
# SYSEXIT takes its selectors from IA32_SYSENTER_CS: CS = that + 16, SS =
# that + 24 (both RPL 3), hence the GDT order kcode, kdata, ucode, udata.
# It loads EIP from %edx and ESP from %ecx and leaves EFLAGS alone.

        .include "pvh.inc"
        .include "ring3.inc"
        .set POST_PORT, 0x80

        PVH_NOTE _start

        .text
        .code32
        .globl _start
_start:
        ENTER_RING3 ring3
ring3:
.ifdef COUNT
        movl    $COUNT, %ecx            # N fixed at build time (bench-100k.elf)
.else
        movl    SCRATCH, %ecx           # N
.endif
        testl   %ecx, %ecx
        jz      2f
.ifdef NOTIFY
1:      movl    $0, 0xd0000050          # QueueNotify of queue 0
.else
1:      movb    %cl, %al                # the POST device stores the byte
        outb    %al, $POST_PORT
.endif
        decl    %ecx
        jnz     1b
2:      xorl    %eax, %eax
        outb    %al, $DEBUG_EXIT_PORT   # status 1
        # hlt is privileged in ring 3; without debug-exit end the VM with a
        # triple fault instead of spinning (#UD -> zero-limit IDT -> shutdown).
        ud2

