#!/usr/bin/env bash
# build.sh OUTDIR - build every swift-vmm test guest into OUTDIR/NAME.elf.
#
# Needs only GNU as, ld and a C compiler (cc) that can target i386
# (-m32; no 32-bit libc is needed, everything is freestanding).
# Works from any current directory: sources are found next to this script.
set -eEu   # -E: the ERR trap below also fires inside functions
set -o pipefail

if [ "$#" -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi

src=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
obj=$(mktemp -d)
trap 'rm -rf "$obj"' EXIT

# Every build step is echoed; set -e stops at the first failure and the
# ERR trap says which guest it was.
current=""
trap 'echo "build.sh: FAILED while building ${current:-?}" >&2' ERR

run() {
    echo "  $*"
    "$@"
}

# All warnings are errors: a guest that links with a warning is suspect.
# RWX segments are intended (the SMP trampoline and the C guest's single
# image), so that one warning is switched off.
LDFLAGS="--fatal-warnings --no-warn-rwx-segments -z noexecstack"

# 32-bit assembly guests, all with the shared pvh.ld except smp.
for g in hello exit triple int3 reset halt hostile bench smp hypercall hypercall-ring3 echo idle uart-irq count hcloop touch; do
    current=$g
    script=pvh.ld
    [ "$g" = smp ] || [ "$g" = count ] && script=pvh-smp.ld
    run as --32 --fatal-warnings -I "$src" -o "$obj/$g.o" "$src/$g.S"
    run ld -m elf_i386 $LDFLAGS -T "$src/$script" -o "$out/$g.elf" "$obj/$g.o"
done

# bench.S with its loop notifying a virtio queue instead of writing port 0x80.
current=notify
run as --32 --fatal-warnings --defsym NOTIFY=1 -I "$src" -o "$obj/notify.o" "$src/bench.S"
run ld -m elf_i386 $LDFLAGS -T "$src/pvh.ld" -o "$out/notify.elf" "$obj/notify.o"
# bench.S with N = 100000 built in: the whole-process exit benchmark (vmm-bench --cold-start).
current=bench-100k
run as --32 --fatal-warnings --defsym COUNT=100000 -I "$src" -o "$obj/bench-100k.o" "$src/bench.S"
run ld -m elf_i386 $LDFLAGS -T "$src/pvh.ld" -o "$out/bench-100k.elf" "$obj/bench-100k.o"

# The multiboot kernel: an ELF, and a flat binary placed by the a.out kludge.
current=multiboot
run as --32 --fatal-warnings -I "$src" -o "$obj/multiboot.o" "$src/multiboot.S"
run ld -m elf_i386 $LDFLAGS -T "$src/multiboot.ld" -o "$out/multiboot.elf" "$obj/multiboot.o"
current=multiboot-aout
run as --32 --fatal-warnings --defsym AOUT=1 -I "$src" -o "$obj/multiboot-aout.o" "$src/multiboot.S"
run ld -m elf_i386 $LDFLAGS -T "$src/multiboot.ld" -o "$obj/multiboot-aout.elf" "$obj/multiboot-aout.o"
run objcopy -O binary "$obj/multiboot-aout.elf" "$out/multiboot-aout.bin"

# The ELF64 container with 32-bit entry code.
current=exit64
run as --64 --fatal-warnings --defsym PVH_ELF64=1 -I "$src" -o "$obj/exit64.o" "$src/exit64.S"
run ld -m elf_x86_64 $LDFLAGS -T "$src/pvh.ld" -o "$out/exit64.elf" "$obj/exit64.o"

# The emulation-assist guest: 64-bit code (long mode after the PVH entry) in an ELF64.
current=assist
run as --64 --fatal-warnings --defsym PVH_ELF64=1 -I "$src" -o "$obj/assist.o" "$src/assist.S"
run ld -m elf_x86_64 $LDFLAGS -T "$src/pvh.ld" -o "$out/assist.elf" "$obj/assist.o"

# The C guest (self-contained in c-hello/).
current=c-hello
CFLAGS="-m32 -ffreestanding -fno-pic -fno-pie -fno-stack-protector -nostdlib -O2
        -mgeneral-regs-only -fno-asynchronous-unwind-tables -Wall -Wextra -Werror"
run cc $CFLAGS -c -o "$obj/c-start.o" "$src/c-hello/start.S"
run cc $CFLAGS -c -o "$obj/c-hello.o" "$src/c-hello/hello.c"
run ld -m elf_i386 $LDFLAGS -T "$src/c-hello/link.ld" -o "$out/c-hello.elf" \
    "$obj/c-start.o" "$obj/c-hello.o"

# The gdb test guest (self-contained in gdb-target/): 64-bit C with debug info, linked
# in the higher half so that gdb's addresses go through the page walk.
current=gdb-target
GDB_CFLAGS="-m64 -mcmodel=kernel -ffreestanding -fno-pic -fno-pie -fno-stack-protector -nostdlib -O1 -g
          -mno-red-zone -mgeneral-regs-only -fno-omit-frame-pointer -fno-asynchronous-unwind-tables
          -Wall -Wextra -Werror"
run cc $GDB_CFLAGS -c -o "$obj/gdb-boot.o" "$src/gdb-target/boot.S"
run cc $GDB_CFLAGS -c -o "$obj/gdb-target.o" "$src/gdb-target/target.c"
run ld -m elf_x86_64 $LDFLAGS -T "$src/gdb-target/link.ld" -o "$out/gdb-target.elf" \
    "$obj/gdb-boot.o" "$obj/gdb-target.o"
# The virtio driver guest: c-hello's PVH entry stub and linker script, its own C.
current=virtio
run cc $CFLAGS -c -o "$obj/virtio.o" "$src/virtio/virtio.c"
run ld -m elf_i386 $LDFLAGS -T "$src/c-hello/link.ld" -o "$out/virtio.elf" \
    "$obj/c-start.o" "$obj/virtio.o"

# The vsock and net driver guest: 64-bit C at ring 3 with paging (see sockets/start.S).
current=sockets
CFLAGS64="-m64 -ffreestanding -fno-pic -fno-pie -fno-stack-protector -nostdlib -O2 -mno-red-zone
          -mgeneral-regs-only -fno-asynchronous-unwind-tables -fno-tree-loop-distribute-patterns -Wall -Wextra -Werror"
run as --64 --fatal-warnings -o "$obj/sockets-start.o" "$src/sockets/start.S"
run cc $CFLAGS64 -c -o "$obj/sockets.o" "$src/sockets/sockets.c"
run ld -m elf_x86_64 $LDFLAGS -T "$src/sockets/link.ld" -o "$out/sockets.elf" \
    "$obj/sockets-start.o" "$obj/sockets.o"

current=""
echo "built: $(cd "$out" && ls *.elf *.bin | tr '\n' ' ')"
