#!/usr/bin/env bash
# Proves the install path of @isolate/core with nothing to compile and no registry:
#
#  1. packs @isolate/core and the platform package of this machine (npm/<platform>, built by
#     `npm run build`) with `npm pack`;
#  2. installs both into a fresh project, offline, from an empty cache, with the registry pointed at
#     an unreachable address, with no Rust toolchain on PATH and cargo, rustc, rustup, cc, gcc,
#     c++, make, node-gyp, python... replaced by shims that record being called and fail;
#  3. runs a sandboxed command through `import('@isolate/core')` and through `npx isolate run`,
#     and checks the native parts came from the platform package, with the helper still mode 755;
#  4. checks that a helper without its exec bit gives ERR_ISOLATE_NATIVE / EACCES;
#  5. repacks @isolate/core with prebuilds/<platform>/ inside and installs it alone (as when npm
#     skipped the optional dependency): the loader must fall back to the prebuilds.
#
# Fails if any shim was called. Cleans up its temporary directory. Run: `npm run test:install`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
start=$SECONDS
say() { printf 'install-proof: %s\n' "$*"; }
die() { printf 'install-proof: FAIL: %s\n' "$*" >&2; exit 1; }

node_bin="$(command -v node)" || die "node is not on PATH"
node_dir="$(dirname "$node_bin")"
[ -x "$node_dir/npm" ] && [ -x "$node_dir/npx" ] || die "npm and npx are not next to $node_bin"

[ -f "$root/dist/index.js" ] && [ -f "$root/dist/lib/native.js" ] || die "dist/ is not built: run \`npm run build\` first"
platform="$("$node_bin" --input-type=module -e "const m = await import('$root/dist/lib/native.js'); console.log(m.platformName())")"
version="$("$node_bin" -p "require('$root/package.json').version")"
addon="isolate-core.$platform.node"
[ -f "$root/npm/$platform/$addon" ] && [ -f "$root/npm/$platform/isolate-helper" ] \
  || die "npm/$platform has no $addon and isolate-helper: run \`npm run build\` first"

work="$(mktemp -d "${TMPDIR:-/tmp}/isolate-install-proof.XXXXXX")"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/tarballs" "$work/shims" "$work/home" "$work/cache"

# Anything that compiles, or fetches a toolchain, is a shim that records the call and fails.
calls="$work/calls"
: >"$calls"
for tool in cargo rustc rustup rustdoc cc gcc g++ c++ clang clang++ cpp ld make cmake node-gyp node-pre-gyp prebuild-install python python3; do
  cat >"$work/shims/$tool" <<EOF
#!/bin/sh
echo "$tool \$*" >>"$calls"
echo "install-proof: $tool was called (\$*): installing @isolate/core must not compile anything" >&2
exit 97
EOF
  chmod 755 "$work/shims/$tool"
done

# A clean environment: no npm_config_* or npm_package_* from `npm run`, no ~/.npmrc, no cargo,
# the registry unreachable, offline, an empty cache.
clean_env=(
  env -i
  "HOME=$work/home"
  "PATH=$work/shims:$node_dir:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  "TMPDIR=${TMPDIR:-/tmp}"
  "CARGO_HOME=$work/no-cargo" "RUSTUP_HOME=$work/no-rustup"
  "npm_config_userconfig=$work/home/.npmrc"
  "npm_config_cache=$work/cache"
  "npm_config_registry=http://127.0.0.1:9/"
  "npm_config_offline=true"
  "npm_config_fetch_retries=0"
  "npm_config_audit=false" "npm_config_fund=false" "npm_config_update_notifier=false"
  "npm_config_loglevel=warn"
)
run() { "${clean_env[@]}" "$@"; }

for tool in cargo rustc cc node-gyp; do
  [ "$(run sh -c "command -v $tool")" = "$work/shims/$tool" ] || die "$tool is not shadowed by its shim"
done

mode() { stat -c %a "$1"; }
tar_mode() { # tar_mode TARBALL PATH -> the mode string tar lists for PATH
  tar -tvzf "$1" | awk -v p="$2" '$NF == p { print $1 }'
}

# 1. Pack (prepack gives dist/cli.js its exec bit).
say "packing @isolate/core $version and @isolate/core-$platform"
(cd "$root" && npm pack --silent --pack-destination "$work/tarballs" >/dev/null)
(cd "$root/npm/$platform" && npm pack --silent --pack-destination "$work/tarballs" >/dev/null)
main_tgz="$work/tarballs/isolate-core-$version.tgz"
plat_tgz="$work/tarballs/isolate-core-$platform-$version.tgz"
[ -f "$main_tgz" ] && [ -f "$plat_tgz" ] || die "npm pack did not write $main_tgz and $plat_tgz"
[ "$(tar_mode "$plat_tgz" package/isolate-helper)" = "-rwxr-xr-x" ] || die "the helper is not mode 755 in $(basename "$plat_tgz")"
[ "$(tar_mode "$main_tgz" package/dist/cli.js)" = "-rwxr-xr-x" ] || die "dist/cli.js is not mode 755 in $(basename "$main_tgz")"

# A small program run in each project: one sandboxed command through import(), then where the
# native parts came from.
cat >"$work/check.mjs" <<'EOF'
const [expectSource] = process.argv.slice(2)
const { runIsolated, IsolateError } = await import('@isolate/core')
const r = await runIsolated('/bin/sh', ['-c', 'echo ok; hostname'], { timeoutMs: 20000 })
if (r.exitCode !== 0 || r.stdout !== 'ok\nsandbox\n') {
  console.error('unexpected result:', JSON.stringify(r))
  process.exit(1)
}
const { loadNative } = await import(new URL('node_modules/@isolate/core/dist/lib/native.js', `file://${process.cwd()}/`))
const n = loadNative()
if (n.source !== expectSource) {
  console.error(`native parts came from ${n.from}, not from the ${expectSource}`)
  process.exit(1)
}
if (!(IsolateError.prototype instanceof Error)) process.exit(1)
console.log(`import: ${JSON.stringify(r.stdout)} from ${n.from}`)
EOF
cat >"$work/noexec.mjs" <<'EOF'
try {
  const { runIsolated } = await import('@isolate/core')
  await runIsolated('/bin/true', [])
  console.error('a helper without its exec bit ran')
  process.exit(1)
} catch (e) {
  if (e.code !== 'ERR_ISOLATE_NATIVE' || e.errno !== 'EACCES' || !/not executable/.test(e.message) || !/chmod 755/.test(e.message)) {
    console.error('not the expected error:', e)
    process.exit(1)
  }
  console.log(`noexec: ${e.code} ${e.errno}`)
}
EOF

new_project() {
  mkdir -p "$1"
  printf '{ "name": "install-proof", "version": "1.0.0", "private": true, "type": "module" }\n' >"$1/package.json"
  cp "$work/check.mjs" "$work/noexec.mjs" "$1/"
}

# 2. Install both tarballs into a fresh project, offline, nothing to compile.
app="$work/app"
new_project "$app"
say "installing both tarballs offline into a fresh project"
(cd "$app" && run npm install "$main_tgz" "$plat_tgz") || die "npm install failed"
pkg_dir="$app/node_modules/@isolate/core-$platform"
[ -f "$pkg_dir/$addon" ] || die "$pkg_dir/$addon is missing"
[ "$(mode "$pkg_dir/isolate-helper")" = 755 ] || die "the installed helper is mode $(mode "$pkg_dir/isolate-helper"), not 755"
[ -x "$app/node_modules/.bin/isolate" ] || die "node_modules/.bin/isolate is missing"
extra="$(cd "$app/node_modules/@isolate" && ls | grep -vx -e core -e "core-$platform" || true)"
[ -z "$extra" ] || die "npm installed more than the two packages: $extra"

# 3. Run through import() and through npx.
(cd "$app" && run node check.mjs package) || die "the sandboxed command through import() failed"
out="$(cd "$app" && run npx --offline isolate run -- /bin/sh -c 'echo ok')" || die "npx isolate run failed"
[ "$out" = ok ] || die "npx isolate run printed '$out', not 'ok'"
say "npx isolate run: 'ok'"

# 4. A helper that lost its exec bit is a clear error.
chmod 644 "$pkg_dir/isolate-helper"
(cd "$app" && run node noexec.mjs) || die "a helper without its exec bit did not give ERR_ISOLATE_NATIVE/EACCES"
chmod 755 "$pkg_dir/isolate-helper"

# 5. Installs that skipped the optional dependency fall back to prebuilds/<platform>/.
say "repacking @isolate/core with prebuilds/$platform and installing it alone"
mkdir -p "$work/stage" "$work/plat" "$work/tarballs2"
tar -xzf "$main_tgz" -C "$work/stage"
tar -xzf "$plat_tgz" -C "$work/plat"
mkdir -p "$work/stage/package/prebuilds/$platform"
cp -p "$work/plat/package/$addon" "$work/plat/package/isolate-helper" "$work/stage/package/prebuilds/$platform/"
(cd "$work/stage/package" && npm pack --silent --ignore-scripts --pack-destination "$work/tarballs2" >/dev/null)
pre_tgz="$work/tarballs2/isolate-core-$version.tgz"
[ "$(tar_mode "$pre_tgz" "package/prebuilds/$platform/isolate-helper")" = "-rwxr-xr-x" ] || die "the prebuilt helper is not mode 755 in the tarball"
app2="$work/app2"
new_project "$app2"
(cd "$app2" && run npm install "$pre_tgz") || die "npm install of the package with prebuilds failed"
[ ! -e "$app2/node_modules/@isolate/core-$platform" ] || die "the platform package got installed from somewhere"
(cd "$app2" && run node check.mjs prebuilds) || die "the sandboxed command through the prebuilds failed"
out="$(cd "$app2" && run npx --offline isolate run -- /bin/sh -c 'echo ok')" || die "npx isolate run (prebuilds) failed"
[ "$out" = ok ] || die "npx isolate run (prebuilds) printed '$out', not 'ok'"

if [ -s "$calls" ]; then
  die "something tried to compile or fetch a toolchain: $(tr '\n' ';' <"$calls")"
fi
say "ok: installed and ran with nothing compiled and no registry, in $((SECONDS - start))s"
