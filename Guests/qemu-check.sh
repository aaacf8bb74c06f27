#!/usr/bin/env bash
# qemu-check.sh OUTDIR - run the guests built by build.sh under QEMU (TCG,
# microvm machine, PVH boot via -kernel) and check COM1 output + exit status.
#
# QEMU microvm has no ACPI sleep register at 0x600 and no i8042, so guests
# that power off fall through to isa-debug-exit 0 (status 1), and reset.elf
# falls back to a triple fault to get its reset.  See README.md.
set -u

if [ "$#" -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
out=$1
qemu=${QEMU:-qemu-system-x86_64}
base=("$qemu" -M microvm,x-option-roms=off,isa-serial=on,rtc=off -accel tcg
      -m 32 -display none -serial stdio -monitor none
      -device isa-debug-exit,iobase=0xf4,iosize=4)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

# check NAME EXPECTED_STATUS EXPECTED_OUTPUT(printf format) QEMU-ARGS...
# NUL bytes in the output (hostile.elf writes one to the UART) are dropped.
check() {
    local name=$1 want_status=$2 want_out=$3 status got want
    shift 3
    timeout 60 "${base[@]}" "$@" </dev/null >"$tmp/out" 2>"$tmp/err"
    status=$?
    got=$(tr -d '\0' <"$tmp/out"; echo x)
    want=$(printf "$want_out"; echo x)
    if [ "$status" = "$want_status" ] && [ "$got" = "$want" ]; then
        printf 'ok    %-22s status %3s  %q\n' "$name" "$status" "${got%x}"
    else
        printf 'FAIL  %-22s status %3s (want %s)  %q (want %q)\n' "$name" \
            "$status" "$want_status" "${got%x}" "${want%x}"
        sed 's/^/      qemu: /' "$tmp/err"
        failures=$((failures + 1))
    fi
}

check exit 67 'exit guest\n' -no-reboot -kernel "$out/exit.elf"
check exit64 85 'exit64 guest\n' -no-reboot -kernel "$out/exit64.elf"
check c-hello 11 'Hello from C, cmdline=hi there\n' \
    -no-reboot -kernel "$out/c-hello.elf" -append "hi there"
check hello 1 'Hello from a swift-vmm guest!\ncmdline: hi there\n' \
    -no-reboot -kernel "$out/hello.elf" -append "hi there"
check "hello (no -append)" 1 'Hello from a swift-vmm guest!\ncmdline: \n' \
    -no-reboot -kernel "$out/hello.elf"
check "triple (-no-reboot)" 0 'triple\n' -no-reboot -kernel "$out/triple.elf"
check "int3 (-no-reboot)" 0 'int3\n' -no-reboot -kernel "$out/int3.elf"
check "smp (-smp 2)" 1 'A\nsmp: 2 cpus\n' -no-reboot -smp 2 -kernel "$out/smp.elf"
check "smp (-smp 1)" 7 'smp: AP missing\n' -no-reboot -kernel "$out/smp.elf"
check "reset (reboots)" 1 \
    'resetting\nreset: i8042 reset ignored, triple faulting\nrebooted\n' \
    -kernel "$out/reset.elf"
check hostile 1 \
    'hostile: port sweep\nhostile: string I/O\nhostile: MMIO sweep\nsurvived\n' \
    -no-reboot -kernel "$out/hostile.elf"
check "bench N=0" 1 '' -no-reboot -kernel "$out/bench.elf"
# N=1000 via QEMU's generic loader; port 0x80 captured with isa-debugcon.
check "bench N=1000" 1 '' -no-reboot -kernel "$out/bench.elf" \
    -device loader,addr=0x9000,data=1000,data-len=4 \
    -chardev file,id=post,path="$tmp/post" \
    -device isa-debugcon,iobase=0x80,chardev=post
posts=$(stat -c %s "$tmp/post" 2>/dev/null || echo 0)
if [ "$posts" = 1000 ]; then
    echo "ok    bench N=1000: 1000 bytes written to port 0x80"
else
    echo "FAIL  bench N=1000: $posts bytes written to port 0x80 (want 1000)"
    failures=$((failures + 1))
fi

# halt.elf never ends by itself: expect the timeout (124) after its line.
timeout 5 "${base[@]}" -no-reboot -kernel "$out/halt.elf" </dev/null >"$tmp/out" 2>/dev/null
status=$?
if [ "$status" = 124 ] && [ "$(cat "$tmp/out")" = halt ]; then
    echo "ok    halt                   still halted after 5 s, printed 'halt'"
else
    echo "FAIL  halt                   status $status, output $(od -c "$tmp/out" | head -2)"
    failures=$((failures + 1))
fi

echo "$failures failure(s)"
[ "$failures" = 0 ]
