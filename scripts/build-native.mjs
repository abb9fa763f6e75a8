#!/usr/bin/env node
// Builds the addon (napi-rs) and the helper for one target into npm/<platform>/, the layout of the
// platform package that ships them. The helper is linked statically: nothing to resolve at exec.
import { execFileSync } from 'node:child_process'
import { chmodSync, copyFileSync, mkdirSync, renameSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
// Default: this machine's own target (glibc unless Node reports none and has musl loaded).
const hostLibc = (() => {
  const r = process.report?.getReport() ?? {}
  if (r.header?.glibcVersionRuntime) return 'gnu'
  return (r.sharedObjects ?? []).some((f) => /ld-musl-|libc\.musl-/.test(f)) ? 'musl' : 'gnu'
})()
const target = process.env.ISOLATE_TARGET ?? `${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-unknown-linux-${hostLibc}`
const platforms = {
  'x86_64-unknown-linux-gnu': 'linux-x64-gnu',
  'aarch64-unknown-linux-gnu': 'linux-arm64-gnu',
  'x86_64-unknown-linux-musl': 'linux-x64-musl',
  'aarch64-unknown-linux-musl': 'linux-arm64-musl',
}
const platform = platforms[target]
if (!platform) throw new Error(`unknown target ${target}; one of ${Object.keys(platforms).join(', ')}`)
const outDir = join(root, 'npm', platform)
mkdirSync(outDir, { recursive: true })

const run = (cmd, args, env = {}) => execFileSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } })

run(join(root, 'node_modules', '.bin', 'napi'), [
  'build', '--platform', '--release', '--target', target,
  '--manifest-path', 'crates/napi/Cargo.toml', '--package-json-path', 'package.json',
  '--output-dir', outDir, '--no-js', '--dts', '../../.tmp/binding.d.ts',
])

const envName = `CARGO_TARGET_${target.toUpperCase().replaceAll('-', '_')}_RUSTFLAGS`
// The helper and the image tool (the unpacker, kept out of the supervisor root runs).
run('cargo', ['build', '--release', '--locked', '-p', 'isolate-helper', '-p', 'isolate-image', '--target', target], {
  [envName]: `${process.env[envName] ?? ''} -C target-feature=+crt-static`.trim(),
})
for (const bin of ['isolate-helper', 'isolate-image']) {
  // Beside it, then renamed over it: a helper that runs meanwhile (ETXTBSY) keeps its own copy.
  const out = join(outDir, bin)
  const next = `${out}.${process.pid}`
  copyFileSync(join(root, 'target', target, 'release', bin), next)
  chmodSync(next, 0o755)
  renameSync(next, out)
}
console.log(`built ${platform}: ${outDir}`)
