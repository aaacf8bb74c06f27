#!/usr/bin/env bash
# The test command: installs what the tests need, builds everything once (the CLI
# tests run the vmmctl binary), then runs every test in one process.
#   VMM_REQUIRE_KVM=1   a missing /dev/kvm fails the KVM tests instead of skipping them
#   VMM_SLOW_TESTS=1    also run the minutes-long tests (the bzImage boot)
# scripts/fetch-linux.sh puts Debian's cloud kernel and a busybox initramfs in .cache/linux,
# scripts/build-test-kernel.sh the project's test kernel and its initramfs in
# .cache/linux-test (built once per machine, ~4 minutes on 2 cores) for the real-kernel
# tests (they skip, saying so, when it is missing).
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/fetch-linux.sh
scripts/build-test-kernel.sh
swift build --build-tests
swift test --skip-build
