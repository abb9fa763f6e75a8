#!/usr/bin/env bash
# The sandbox suites again as an unprivileged user (unprivileged user namespaces, its own ids
# mapped). As root, it creates that user, gives it a private copy of the built tree when this one
# is not readable to it, and removes the copy afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
suites=(__test__/sandbox.test.ts __test__/lifecycle.test.ts __test__/io.test.ts __test__/rootfs.test.ts __test__/options.test.ts __test__/hardening.test.ts __test__/limits.test.ts __test__/cgroup.test.ts __test__/cgroup-parent.test.ts __test__/escape.test.ts __test__/overlay.test.ts __test__/image.test.ts __test__/tty.test.ts __test__/persistent.test.ts __test__/cli-sandboxes.test.ts __test__/pool.test.ts __test__/priority.test.ts __test__/ucounts.test.ts __test__/host-costs.test.ts)
fixtures="${ISOLATE_FIXTURES:-$(cd .. && pwd)/shared/fixtures}"

if [ "$(id -u)" -ne 0 ]; then
  exec env ISOLATE_TEST_ROOTLESS=1 ISOLATE_FIXTURES="$fixtures" node node_modules/ava/entrypoints/cli.mjs "${suites[@]}"
fi

user=isolate-ci
id -u "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
tree=$PWD
copy=
cleanup() { if [ -n "$copy" ]; then rm -rf "$copy"; fi; }
trap cleanup EXIT
if ! runuser -u "$user" -- test -r "$tree/package.json" -a -x "$tree/node_modules/.bin"; then
  copy=$(mktemp -d /tmp/isolate-rootless.XXXXXX)
  tar --exclude=./target --exclude=./.git -cf - . | tar -xf - -C "$copy"
  # The escape probe is built by root's lane; the unprivileged user has no toolchain.
  mkdir -p "$copy/target/x86_64-unknown-linux-gnu/release"
  cp target/x86_64-unknown-linux-gnu/release/escape-probe "$copy/target/x86_64-unknown-linux-gnu/release/"
  chown -R "$user:" "$copy"
  chmod 755 "$copy"
  tree=$copy
fi
echo "rootless lane: running ${suites[*]} as $user (uid $(id -u "$user")) in $tree"
cd "$tree"
runuser -u "$user" -- env -i PATH="$PATH" HOME="$(getent passwd "$user" | cut -d: -f6)" ISOLATE_TEST_ROOTLESS=1 ISOLATE_FIXTURES="$fixtures" \
  node node_modules/ava/entrypoints/cli.mjs "${suites[@]}"
