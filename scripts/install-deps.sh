#!/usr/bin/env bash
# Installs the Debian packages the tests and benchmarks use, when they are missing:
#   binutils, gcc  - build the test guests (as, ld, cc) and the C benchmark reference
#   qemu-system-x86 - the reference VMM the guests are compared against
#   acpica-tools    - iasl, which disassembles the generated ACPI tables in a test
#   cpio, lz4       - scripts/fetch-linux.sh: the initramfs and the kernel's payload
#   curl           - the daemon tests talk to vmmd with `curl --unix-socket`
#   util-linux     - setpriv, to run a client as a second user
#   gdb            - the debugger tests drive the GDB stub with the real gdb
#   linux-source-6.1, make, flex, bison, bc, libelf-dev, libssl-dev, xz-utils
#                  - scripts/build-test-kernel.sh builds the test kernel from Debian's source
#   iproute2       - ip netns / ip tuntap: the virtio-net tests' namespaces and taps
#   e2fsprogs      - mkfs.ext4, debugfs, e2fsck: the test kernel's root disk, made and read back
# and, with pip, the OpenAPI validators the contract test uses
# (openapi-spec-validator, which brings openapi-schema-validator, and PyYAML) and
# schemathesis, which fuzzes vmmd against the contract (scripts/fuzz-api.py).
# Needs root (or sudo) and apt; does nothing when everything is already there.
set -eu
need=()
command -v as >/dev/null 2>&1 || need+=(binutils)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v iasl >/dev/null 2>&1 || need+=(acpica-tools)
command -v cpio >/dev/null 2>&1 || need+=(cpio)
command -v lz4 >/dev/null 2>&1 || need+=(lz4)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
command -v gdb >/dev/null 2>&1 || need+=(gdb)
[ -r /usr/src/linux-source-6.1.tar.xz ] || need+=(linux-source-6.1)
command -v make >/dev/null 2>&1 || need+=(make)
command -v flex >/dev/null 2>&1 || need+=(flex)
command -v bison >/dev/null 2>&1 || need+=(bison)
command -v bc >/dev/null 2>&1 || need+=(bc)
command -v xz >/dev/null 2>&1 || need+=(xz-utils)
[ -e /usr/include/libelf.h ] || need+=(libelf-dev)
[ -e /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
[ -x /usr/sbin/ip ] || need+=(iproute2)
[ -x /usr/sbin/mkfs.ext4 ] && [ -x /usr/sbin/debugfs ] || need+=(e2fsprogs)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip)

schemathesis_version=4.32.5
python_deps() {
    python3 -c 'import yaml, openapi_spec_validator, openapi_schema_validator, referencing, importlib.metadata as m
assert m.version("schemathesis") == "'$schemathesis_version'"' 2>/dev/null && return 0
    echo "install-deps: installing the OpenAPI validators and schemathesis with pip" >&2
    python3 -m pip install --quiet openapi-spec-validator pyyaml "schemathesis==$schemathesis_version" 2>/dev/null ||
        python3 -m pip install --quiet --break-system-packages openapi-spec-validator pyyaml "schemathesis==$schemathesis_version"
}
if [ ${#need[@]} -eq 0 ]; then python_deps; exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: missing ${need[*]} and no apt-get; install them by hand" >&2
    exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing ${need[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
python_deps
