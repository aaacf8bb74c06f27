#!/usr/bin/env bash
# The test command: installs what the tests need, builds everything once (the CLI
# tests run the vmmctl binary), then runs every test in one process.
#   VMM_REQUIRE_KVM=1   a missing /dev/kvm fails the KVM tests instead of skipping them
#   VMM_SLOW_TESTS=1    also run the minutes-long tests (the bzImage boot)
# scripts/fetch-linux.sh puts Debian's cloud kernel and a busybox initramfs in .cache/linux
# for the real-kernel tests (they skip, saying so, when it is missing).
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/fetch-linux.sh
swift build --build-tests
swift test --skip-build
