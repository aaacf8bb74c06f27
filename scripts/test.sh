#!/usr/bin/env bash
# The test command: installs what the tests need, builds everything once (the CLI
# tests run the vmmctl binary), then runs every test in one process.
#   VMM_REQUIRE_KVM=1   a missing /dev/kvm fails the KVM tests instead of skipping them
#   VMM_SLOW_TESTS=1    also run the minutes-long tests (real Linux boots)
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build --build-tests
swift test --skip-build
