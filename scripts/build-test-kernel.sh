#!/usr/bin/env bash
# build-test-kernel.sh [CACHE]  - the project's test kernel, in CACHE (default .cache/linux-test):
#
#   vmlinux              the ELF kernel (PVH entry note, full symbol table: `gdb vmlinux`)
#   bzImage              the same kernel for the Linux boot protocol (LZ4 payload)
#   config               its .config
#   key                  what it was built from (hash of the fragment, source and compiler)
#   build-seconds        how long the build took on this machine
#   busybox              Debian's busybox-static, for scripts/make-initramfs.sh
#   initramfs.cpio       the default test initramfs (scripts/test-kernel/init)
#
# The kernel is Debian's linux-source-6.1 (installed by scripts/install-deps.sh) configured
# with `make ARCH=x86_64 tinyconfig` plus scripts/test-kernel/kernel.config. It is built once
# per machine: when `key` matches, nothing is done; a changed fragment, source package or
# compiler rebuilds (incrementally: the object tree in CACHE/obj is kept). Concurrent callers
# wait for each other (flock on CACHE/.lock).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${1:-$root/.cache/linux-test}
fragment=$root/scripts/test-kernel/kernel.config
tarball=/usr/src/linux-source-6.1.tar.xz
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

exec 9>"$cache/.lock"
flock 9

[ -r "$tarball" ] || "$root/scripts/install-deps.sh"
[ -r "$tarball" ] || { echo "build-test-kernel: $tarball missing (apt-get install linux-source-6.1)" >&2; exit 1; }

version=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || stat -c %Y "$tarball")
# The recipe's own version: bump it when this script changes what it builds.
recipe=2
key=$( { echo "recipe $recipe"; echo "linux-source-6.1 $version"; gcc --version | head -1; cat "$fragment"; } \
    | sha256sum | cut -c1-16)

busybox() {
    [ -x "$cache/busybox" ] && return 0
    local work
    work=$(mktemp -d)
    chmod 0777 "$work"   # apt's sandbox user writes the download
    (cd "$work" && apt-get download -qq busybox-static) || { apt-get update -qq; (cd "$work" && apt-get download -qq busybox-static); }
    dpkg -x "$work"/busybox-static_*.deb "$work/root"
    cp "$work/root/bin/busybox" "$cache/busybox.tmp"
    mv "$cache/busybox.tmp" "$cache/busybox"
    rm -rf "$work"
}

# The default initramfs, rebuilt when its /init or its builder changed.
initramfs() {
    if [ ! -s "$cache/initramfs.cpio" ] || [ "$root/scripts/test-kernel/init" -nt "$cache/initramfs.cpio" ] ||
       [ "$root/scripts/make-initramfs.sh" -nt "$cache/initramfs.cpio" ]; then
        "$root/scripts/make-initramfs.sh" --out "$cache/initramfs.cpio"
    fi
}

if [ -s "$cache/vmlinux" ] && [ -s "$cache/bzImage" ] && [ "$(cat "$cache/key" 2>/dev/null)" = "$key" ]; then
    busybox
    initramfs
    exit 0
fi

src=$cache/src/linux-source-6.1
if [ "$(cat "$cache/src/version" 2>/dev/null)" != "$version" ]; then
    echo "build-test-kernel: unpacking linux-source-6.1 $version" >&2
    rm -rf "$cache/src" "$cache/obj"
    mkdir -p "$cache/src"
    tar -xJf "$tarball" -C "$cache/src"
    echo "$version" > "$cache/src/version"
fi

obj=$cache/obj
mkdir -p "$obj"
jobs=$(nproc)
start=$(date +%s)
echo "build-test-kernel: configuring (tinyconfig + $(basename "$fragment"))" >&2
make -s -C "$src" O="$obj" ARCH=x86_64 tinyconfig >/dev/null
KCONFIG_CONFIG="$obj/.config" "$src/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "$fragment" >/dev/null
make -s -C "$src" O="$obj" ARCH=x86_64 olddefconfig >/dev/null

# Every line of the fragment must have survived Kconfig.
bad=0
while IFS= read -r line; do
    case "$line" in
        CONFIG_*=*)
            grep -qxF "$line" "$obj/.config" || { echo "build-test-kernel: wanted $line, got: $(grep "^${line%%=*}=" "$obj/.config" || echo unset)" >&2; bad=1; } ;;
        "# CONFIG_"*" is not set")
            sym=${line#\# }; sym=${sym%% *}
            if grep -q "^$sym=" "$obj/.config"; then
                echo "build-test-kernel: wanted $sym off, got: $(grep "^$sym=" "$obj/.config")" >&2; bad=1
            fi ;;
    esac
done < "$fragment"
[ "$bad" -eq 0 ] || { echo "build-test-kernel: the fragment does not apply; fix scripts/test-kernel/kernel.config" >&2; exit 1; }

echo "build-test-kernel: building vmlinux and bzImage with $jobs jobs (a few minutes)" >&2
if ! nice make -C "$src" O="$obj" ARCH=x86_64 -j"$jobs" vmlinux bzImage > "$cache/build.log" 2>&1; then
    tail -30 "$cache/build.log" >&2
    echo "build-test-kernel: the kernel build failed (full log: $cache/build.log)" >&2
    exit 1
fi
seconds=$(( $(date +%s) - start ))

cp "$obj/vmlinux" "$cache/vmlinux.tmp" && mv "$cache/vmlinux.tmp" "$cache/vmlinux"
cp "$obj/arch/x86/boot/bzImage" "$cache/bzImage.tmp" && mv "$cache/bzImage.tmp" "$cache/bzImage"
cp "$obj/.config" "$cache/config"
echo "$seconds" > "$cache/build-seconds"
echo "$key" > "$cache/key"
busybox
initramfs
echo "build-test-kernel: built in $cache in ${seconds} s" >&2
