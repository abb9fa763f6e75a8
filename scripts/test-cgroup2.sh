#!/usr/bin/env bash
# The cgroup v2 lane: the focused cgroup suite inside a guest kernel whose only hierarchy is
# cgroup v2 (this build machine runs v1). The guest is emulated and slow, so only
# __test__/cgroup.test.ts runs there; on a host with native cgroup v2 the same file runs in
# the ordinary suite.
set -euo pipefail
cd "$(dirname "$0")/.."
lane="${ISOLATE_CGROUP2_LANE:-$(cd .. && pwd)/shared/tools/cgroup2-lane.sh}"
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
  echo "cgroup v2 lane: this host is cgroup v2 itself; the ordinary suite already ran the cgroup tests on it"
  exit 0
fi
if [ ! -x "$lane" ] && [ ! -f "$lane" ]; then
  echo "cgroup v2 lane: $lane is absent (a clone outside this workplace): cannot run the v2 tests here" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "cgroup v2 lane: needs root to boot the guest" >&2
  exit 1
fi
LANE_SUITE=trixie bash "$lane" setup
# One vCPU: the emulated guest's kernel patches its own code live (static keys, at boot too),
# and under qemu's emulator another vCPU can still run a breakpoint that the patching already
# took out again ("Oops: int3" in a function it just patched; a panic, no exit status). With one
# vCPU nothing runs beside the patching; it costs ~15 s of the lane's ~45.
run_lane() {
  LANE_SMP="${LANE_SMP:-1}" LANE_TIMEOUT="${LANE_TIMEOUT:-1500}" bash "$lane" run --rw "$PWD" -- \
    env ISOLATE_CGROUP_LANE=v2 node node_modules/ava/entrypoints/cli.mjs --timeout=10m __test__/cgroup.test.ts
}
echo "cgroup v2 lane: running __test__/cgroup.test.ts in the guest (emulated: minutes, not seconds)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
run_lane 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
# A guest that died without an exit status crashed under emulation (its kernel, not a test);
# a test that failed gives its own status and is never retried.
if [ "$rc" -ne 0 ] && grep -q "guest gave no exit status" "$log"; then
  echo "cgroup v2 lane: the emulated guest died without an exit status; booting it once more"
  run_lane
  rc=$?
fi
exit "$rc"
