#!/usr/bin/env node
// The four platform packages in npm/<platform>/ and how @isolate/core refers to them.
//
//   node scripts/platform-packages.mjs check   exit 1 unless everything below holds
//   node scripts/platform-packages.mjs sync    make it hold (after `npm version`, or a lockfile
//                                              rebuilt from scratch), then run `npm ci`
//
// @isolate/core lists @isolate/core-linux-<arch>-<libc> as optionalDependencies at exactly its own
// version, which is what gets published. They are not workspaces: npm never treats a workspace as
// optional, so a workspace that declares cpu/libc fails `npm ci` with EBADPLATFORM on every other
// platform. Instead the lockfile links each name to its directory (`"resolved": "npm/<platform>",
// "link": true`, its os/cpu/libc recorded, `"optional": true`): `npm ci` and `npm install` keep a
// link that satisfies the exact version, link the one for this machine into node_modules, skip
// the others, and never ask the registry for them. `sync` writes those entries with npm itself (by
// resolving `file:` specs once, then putting the exact versions back).
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
export const PLATFORMS = {
  'linux-x64-gnu': { cpu: 'x64', libc: 'glibc', target: 'x86_64-unknown-linux-gnu' },
  'linux-arm64-gnu': { cpu: 'arm64', libc: 'glibc', target: 'aarch64-unknown-linux-gnu' },
  'linux-x64-musl': { cpu: 'x64', libc: 'musl', target: 'x86_64-unknown-linux-musl' },
  'linux-arm64-musl': { cpu: 'arm64', libc: 'musl', target: 'aarch64-unknown-linux-musl' },
}
const INSTALL_SCRIPTS = ['preinstall', 'install', 'postinstall', 'prepare', 'preprepare', 'postprepare']

const readJson = (file) => JSON.parse(readFileSync(join(root, file), 'utf8'))
const writeJson = (file, value) => writeFileSync(join(root, file), `${JSON.stringify(value, null, 2)}\n`)
const sorted = (v) => (v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, sorted(v[k])])) : v)
const same = (a, b) => JSON.stringify(sorted(a)) === JSON.stringify(sorted(b))

/** Every way the packages, the manifest and the lockfile disagree; empty when all is well. */
export function check() {
  const problems = []
  const pkg = readJson('package.json')
  const lock = readJson('package-lock.json')
  const { version } = pkg
  const wanted = Object.fromEntries(Object.keys(PLATFORMS).map((p) => [`@isolate/core-${p}`, version]))
  if (!same(pkg.optionalDependencies, wanted)) {
    problems.push(`package.json optionalDependencies should be exactly ${JSON.stringify(wanted)}, not ${JSON.stringify(pkg.optionalDependencies)}`)
  }
  if (!same(lock.packages?.['']?.optionalDependencies, wanted)) problems.push('package-lock.json: its root entry does not list the same optionalDependencies')
  for (const s of INSTALL_SCRIPTS) if (pkg.scripts?.[s]) problems.push(`package.json has an install script "${s}"`)
  if (pkg.workspaces) problems.push('package.json has workspaces: a workspace is never optional, so npm ci fails with EBADPLATFORM')

  for (const [platform, { cpu, libc }] of Object.entries(PLATFORMS)) {
    const dir = `npm/${platform}`
    const name = `@isolate/core-${platform}`
    const p = readJson(`${dir}/package.json`)
    const where = `${dir}/package.json`
    if (p.name !== name) problems.push(`${where}: name ${p.name}, not ${name}`)
    if (p.version !== version) problems.push(`${where}: version ${p.version}, not ${version}`)
    if (!same(p.os, ['linux'])) problems.push(`${where}: os should be ["linux"]`)
    if (!same(p.cpu, [cpu])) problems.push(`${where}: cpu should be ["${cpu}"]`)
    if (!same(p.libc, [libc])) problems.push(`${where}: libc should be ["${libc}"]`)
    if (!same(p.files, [`isolate-core.${platform}.node`, 'isolate-helper', 'isolate-image'])) problems.push(`${where}: files should be exactly the addon, the helper and the image tool`)
    if (p.scripts) problems.push(`${where}: a platform package has no scripts`)
    if (p.dependencies || p.optionalDependencies) problems.push(`${where}: a platform package has no dependencies`)

    const link = lock.packages?.[`node_modules/${name}`]
    if (!same(link, { resolved: dir, link: true })) {
      problems.push(`package-lock.json: node_modules/${name} should be a link to ${dir}, not ${JSON.stringify(link)}; run node scripts/platform-packages.mjs sync`)
    }
    const target = lock.packages?.[dir]
    if (!target || target.name !== name || target.version !== version || target.optional !== true || !same(target.cpu, [cpu]) || !same(target.libc, [libc])) {
      problems.push(`package-lock.json: the entry ${dir} is missing or stale; run node scripts/platform-packages.mjs sync`)
    }
  }
  for (const [key, entry] of Object.entries(lock.packages ?? {})) {
    if (/(^|\/)node_modules\/@isolate\/core(-|$)/.test(key) && (entry.resolved?.includes('://') || entry.integrity)) {
      problems.push(`package-lock.json: ${key} would be fetched from ${entry.resolved ?? 'the registry'}`)
    }
  }
  return problems
}

export function sync() {
  const pkg = readJson('package.json')
  const { version } = pkg
  for (const platform of Object.keys(PLATFORMS)) {
    const file = `npm/${platform}/package.json`
    const p = readJson(file)
    if (p.version !== version) {
      p.version = version
      writeJson(file, p)
    }
  }
  const npm = (args) => execFileSync('npm', [...args, '--package-lock-only', '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: root, stdio: 'inherit' })
  // Directory specs first: npm links each name to its directory and records its os/cpu/libc...
  pkg.optionalDependencies = Object.fromEntries(Object.keys(PLATFORMS).map((p) => [`@isolate/core-${p}`, `file:npm/${p}`]))
  writeJson('package.json', pkg)
  try {
    npm(['install'])
  } finally {
    // ...then the exact versions, which those links satisfy.
    pkg.optionalDependencies = Object.fromEntries(Object.keys(PLATFORMS).map((p) => [`@isolate/core-${p}`, version]))
    writeJson('package.json', pkg)
  }
  const lock = readJson('package-lock.json')
  lock.packages[''].optionalDependencies = pkg.optionalDependencies
  writeJson('package-lock.json', lock)
  npm(['install']) // must be a no-op now
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const cmd = process.argv[2]
  if (cmd === 'sync') sync()
  else if (cmd !== 'check') {
    console.error('usage: node scripts/platform-packages.mjs check|sync')
    process.exit(2)
  }
  const problems = check()
  for (const p of problems) console.error(`platform-packages: ${p}`)
  if (problems.length) process.exit(1)
  console.log(`platform-packages: ${Object.keys(PLATFORMS).length} platform packages at ${readJson('package.json').version}, linked in the lockfile`)
}
