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
# The tests name their temporary directories after VMM_TEST_RUN: whatever they started
# that is still running afterwards (even after a test process that died) is found here,
# reported, ended, and fails the run.
export VMM_TEST_RUN="run$$"
# NIO's strict mode for the test process and everything it starts: a task scheduled on an
# event loop that has stopped crashes instead of being logged, so a test sees it.
export SWIFTNIO_STRICT=1
status=0
swift test --skip-build || status=$?
left=$(pgrep -f "vmmd-test-$VMM_TEST_RUN-" || true)
if [ -n "$left" ]; then
    echo "test.sh: processes the tests started are still running:" >&2
    ps -o pid=,args= -p "$(echo $left | tr ' ' ',')" >&2 || true
    kill -9 $left 2>/dev/null || true
    status=1
fi
exit $status
