#!/usr/bin/env bash
# make-initramfs.sh --out FILE [--init SCRIPT] [--busybox PATH] [--applets "A B ..."|all]
#                   [--add SRC:DEST]... [--gzip]
#
# A busybox initramfs (newc cpio) for the test kernel: /bin/busybox with links for the
# applets named (default: what scripts/test-kernel/init uses, plus a few for hooks: those of
# scripts/test-kernel/devices-check and load-modules among them; "all"
# links every applet, ~400 symlinks that cost the kernel seconds to unpack on a KVM that
# emulates CPL 0), /proc /sys /dev /tmp, and SCRIPT as /init (default scripts/test-kernel/init).
# --add copies more files in (DEST is a path inside the image; modes are kept), so a test
# can bring its own programs or data. Uncompressed by default: unpacking is a few string
# instructions, where gunzip runs millions of emulated ones on a KVM that emulates CPL 0.
# busybox defaults to the one scripts/build-test-kernel.sh fetched (Debian's busybox-static).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=""
init=$root/scripts/test-kernel/init
busybox=$root/.cache/linux-test/busybox
gzip=0
applets="sh mount umount cat cut grep ls mkdir sleep reboot poweroff dmesg uname head tail dd sha256sum sync ip ping insmod"
adds=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --init) init=$2; shift 2 ;;
        --busybox) busybox=$2; shift 2 ;;
        --add) adds+=("$2"); shift 2 ;;
        --applets) applets=$2; shift 2 ;;
        --gzip) gzip=1; shift ;;
        *) echo "make-initramfs: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$out" ] || { echo "make-initramfs: --out FILE is required" >&2; exit 2; }
[ -x "$busybox" ] || { echo "make-initramfs: no busybox at $busybox (run scripts/build-test-kernel.sh)" >&2; exit 1; }
[ -r "$init" ] || { echo "make-initramfs: no init script at $init" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ir=$work/root
mkdir -p "$ir/bin" "$ir/sbin" "$ir/proc" "$ir/sys" "$ir/dev" "$ir/tmp" "$ir/etc"
cp "$busybox" "$ir/bin/busybox"
[ "$applets" = all ] && applets=$("$busybox" --list)
for applet in $applets; do
    [ "$applet" = busybox ] || ln -s busybox "$ir/bin/$applet"
done
cp "$init" "$ir/init"
chmod 0755 "$ir/init"
for add in "${adds[@]}"; do
    src=${add%%:*}; dest=${add#*:}
    mkdir -p "$ir/$(dirname "$dest")"
    cp -a "$src" "$ir/$dest"
done
(cd "$ir" && find . | LC_ALL=C sort | cpio -o -H newc --quiet --owner 0:0) > "$work/image"
if [ "$gzip" -eq 1 ]; then gzip -9n < "$work/image" > "$out.tmp"; else cp "$work/image" "$out.tmp"; fi
mv "$out.tmp" "$out"
