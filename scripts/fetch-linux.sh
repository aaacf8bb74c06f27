#!/usr/bin/env bash
# fetch-linux.sh [CACHE]  - the real-kernel test inputs, in CACHE (default .cache/linux):
#
#   bzImage              Debian's linux-image-cloud-amd64 kernel, as shipped (/boot/vmlinuz-*)
#   vmlinux              the ELF kernel inside it (PVH entry note), extracted below
#   initramfs.cpio.gz    busybox-static and a tiny /init that reports and powers off
#   config               the kernel's .config, for reference
#   modules/             the package's virtio modules (virtio_ring, virtio, virtio_mmio,
#                        virtio_blk, virtio-rng) and `order`, the order insmod loads them in
#
# The packages are fetched with `apt-get download` and unpacked with `dpkg -x`, so none
# of their install scripts run and nothing is installed on the host. Idempotent: does
# nothing when the outputs exist. Needs apt-get, dpkg, cpio, gzip and the decompressor
# of the kernel's payload (lz4 for Debian 12's kernels; xz, zstd, gzip are also handled).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${1:-$root/.cache/linux}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

if [ -s "$cache/bzImage" ] && [ -s "$cache/vmlinux" ] && [ -s "$cache/initramfs.cpio.gz" ] && [ -s "$cache/modules/order" ]; then
    exit 0
fi

# Package lists are needed to resolve the metapackage; fetch them once if they are missing.
image=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }')
if [ -z "$image" ]; then
    apt-get update -qq
    image=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ { print $2; exit }')
fi
[ -n "$image" ] || { echo "fetch-linux: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# apt's sandbox user must be able to write the download directory.
chmod 0777 "$work"
echo "fetch-linux: downloading $image and busybox-static" >&2
(cd "$work" && apt-get download -qq "$image" busybox-static)
mkdir -p "$work/root"
for deb in "$work"/*.deb; do dpkg -x "$deb" "$work/root"; done

cp "$work"/root/boot/vmlinuz-* "$cache/bzImage.tmp"
cp "$work"/root/boot/config-* "$cache/config"

# vmlinux: what the kernel's scripts/extract-vmlinux does, but with the exact payload
# location from the setup header (Documentation/arch/x86/boot.rst): the protected-mode
# code starts at (setup_sects + 1) * 512, payload_offset (0x248) and payload_length
# (0x24c) locate the compressed kernel inside it.
u8() { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' '; }
u32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }
bz="$cache/bzImage.tmp"
setup_sects=$(u8 "$bz" $((0x1f1)))
[ "$setup_sects" -eq 0 ] && setup_sects=4
start=$(( (setup_sects + 1) * 512 + $(u32 "$bz" $((0x248))) ))
length=$(u32 "$bz" $((0x24c)))
dd if="$bz" of="$work/payload" iflag=skip_bytes,count_bytes skip="$start" count="$length" bs=1M status=none
magic=$(od -An -tx1 -N4 "$work/payload" | tr -d ' ')
case "$magic" in
    02214c18) decompress="lz4 -dc" ;;
    fd377a58) decompress="xz -dc" ;;
    28b52ffd) decompress="zstd -dcq" ;;
    1f8b*) decompress="gzip -dc" ;;
    *) echo "fetch-linux: unknown kernel payload compression (magic $magic)" >&2; exit 1 ;;
esac
# The kernel appends the decompressed size after the stream; decompressors complain
# about those trailing bytes, so the result is judged by its ELF magic instead.
$decompress < "$work/payload" > "$work/vmlinux" 2>/dev/null || true
[ "$(od -An -tx1 -N4 "$work/vmlinux" | tr -d ' ')" = 7f454c46 ] || {
    echo "fetch-linux: extracting vmlinux with '$decompress' failed" >&2; exit 1; }

# The initramfs: busybox and an /init that says what it sees and powers off.
ir="$work/initramfs"
mkdir -p "$ir/bin" "$ir/proc" "$ir/sys" "$ir/dev"
cp "$work/root/bin/busybox" "$ir/bin/busybox"
ln -s busybox "$ir/bin/sh"
cat > "$ir/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
echo "swift-vmm init: $(/bin/busybox grep -c ^processor /proc/cpuinfo) CPUs online"
echo "swift-vmm init: clocksource $(/bin/busybox cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
echo "swift-vmm init: powering off"
/bin/busybox poweroff -f
EOF
chmod 0755 "$ir/init"
(cd "$ir" && find . | LC_ALL=C sort | cpio -o -H newc --quiet --owner 0:0 | gzip -9n) > "$cache/initramfs.cpio.gz.tmp"

# The package's virtio modules, for the slow test that loads them with insmod (Debian builds
# virtio, virtio_mmio and virtio_blk as modules, without CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES:
# the devices are found through ACPI). `order` lists them as they must be loaded.
mkdir -p "$cache/modules"
drivers=$(echo "$work"/root/lib/modules/*/kernel/drivers)
: > "$cache/modules/order.tmp"
# virtio_ring first: it defines virtio_break_device, which virtio needs (loaded the other way
# round, insmod of virtio fails with "Unknown symbol virtio_break_device").
for module in virtio/virtio_ring virtio/virtio virtio/virtio_mmio block/virtio_blk char/hw_random/virtio-rng; do
    cp "$drivers/$module.ko" "$cache/modules/"
    basename "$module" >> "$cache/modules/order.tmp"
done
mv "$cache/modules/order.tmp" "$cache/modules/order"

mv "$work/vmlinux" "$cache/vmlinux"
mv "$cache/initramfs.cpio.gz.tmp" "$cache/initramfs.cpio.gz"
mv "$cache/bzImage.tmp" "$cache/bzImage"
echo "fetch-linux: $image in $cache (bzImage, vmlinux, initramfs.cpio.gz, modules/)" >&2
