#!/usr/bin/env bash
# Inside the cgroup v2 lane's guest, as root (see scripts/test-cgroup2.sh): the cgroup suite again
# as an ordinary user to whom a cgroup is delegated, as systemd delegates one to a user's session:
# the directory and its cgroup.procs, cgroup.subtree_control and cgroup.threads are the user's,
# with memory, pids and cpu enabled for its children, and the user's processes sit in a leaf of it.
# The suite itself then starts in a cgroup that holds processes (its own), whose children the
# no-internal-process rule denies those controllers: cgroup limits must fail closed there, and
# cpuTimeMs is counted in a cgroup of the sandbox's own. Then cgroup-parent.test.ts: with the
# delegated cgroup, which holds no process, named in ISOLATE_CGROUP_PARENT, those limits hold.
# The guest is thrown away afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
user=isolate-ci
id -u "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
if ! runuser -u "$user" -- test -r package.json -a -x node_modules/.bin; then
  echo "cgroup v2 lane (delegated): $PWD is not readable by $user, who runs the suite here" >&2
  exit 1
fi
delegated=/sys/fs/cgroup/isolate-delegated
mkdir "$delegated" "$delegated/session"
for d in "$delegated" "$delegated/session"; do
  chown "$user:" "$d" "$d/cgroup.procs" "$d/cgroup.subtree_control" "$d/cgroup.threads"
done
echo '+memory +pids +cpu' > "$delegated/cgroup.subtree_control"
echo $$ > "$delegated/session/cgroup.procs"
echo "cgroup v2 lane (delegated): running __test__/cgroup.test.ts and __test__/cgroup-parent.test.ts as $user in $(cut -d: -f3 /proc/self/cgroup)"
runuser -u "$user" -- env -i PATH="$PATH" HOME=/tmp ISOLATE_TEST_ROOTLESS=1 ISOLATE_CGROUP_LANE=v2 ISOLATE_TEST_CGROUP_PARENT="${delegated#/sys/fs/cgroup}" \
  node node_modules/ava/entrypoints/cli.mjs --timeout=10m __test__/cgroup.test.ts __test__/cgroup-parent.test.ts
