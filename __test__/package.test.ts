/**
 * What `npm pack` ships: exactly the intended files with their modes, package.json fields that make
 * `npm i @isolate/core` work everywhere (optional platform packages at the same version, no
 * install scripts, ESM exports with types first, a bin, engines), publint and
 * @arethetypeswrong/cli on the packed tarball, and the lockfile linking the platform packages to
 * npm/<platform>/ instead of the registry. Needs `npm run build` (dist/ and this platform's build).
 */
import test from 'ava'
import { execFileSync, spawnSync } from 'node:child_process'
import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { gunzipSync } from 'node:zlib'
import { platformName } from '../lib/native.js'
import { root } from './helpers.js'

interface Manifest {
  name: string
  version: string
  type?: string
  main?: string
  types?: string
  exports?: Record<string, unknown>
  bin?: Record<string, string>
  files?: string[]
  os?: string[]
  cpu?: string[]
  libc?: string[]
  engines?: Record<string, string>
  scripts?: Record<string, string>
  dependencies?: Record<string, string>
  optionalDependencies?: Record<string, string>
  gypfile?: boolean
}

const PLATFORMS = {
  'linux-x64-gnu': { cpu: 'x64', libc: 'glibc' },
  'linux-arm64-gnu': { cpu: 'arm64', libc: 'glibc' },
  'linux-x64-musl': { cpu: 'x64', libc: 'musl' },
  'linux-arm64-musl': { cpu: 'arm64', libc: 'musl' },
} as const
const INSTALL_SCRIPTS = ['preinstall', 'install', 'postinstall', 'prepare', 'preprepare', 'postprepare']
const bin = (name: string) => join(root, 'node_modules', '.bin', name)
const readManifest = (dir: string) => JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Manifest
const main = readManifest(root)
const here = platformName()

const tmp = mkdtempSync(join(tmpdir(), 'isolate-package-test-'))
test.after.always(() => rmSync(tmp, { recursive: true, force: true }))

/** Every regular file of a .tgz: path (without `package/`) -> { mode, data }. */
function untar(tgz: string): Map<string, { mode: number; data: Buffer }> {
  const buf = gunzipSync(readFileSync(tgz))
  const out = new Map<string, { mode: number; data: Buffer }>()
  const str = (o: number, n: number) => buf.toString('utf8', o, o + n).replace(/\0.*$/s, '')
  const oct = (o: number, n: number) => parseInt(str(o, n).trim() || '0', 8)
  let paxPath: string | undefined
  for (let off = 0; off + 512 <= buf.length; ) {
    if (buf.subarray(off, off + 512).every((b) => b === 0)) break
    const size = oct(off + 124, 12)
    const type = String.fromCharCode(buf[off + 156]!)
    const prefix = str(off + 345, 155)
    const name = paxPath ?? (prefix ? `${prefix}/${str(off, 100)}` : str(off, 100))
    const data = buf.subarray(off + 512, off + 512 + size)
    if (type === 'x') {
      paxPath = /\d+ path=([^\n]*)\n/.exec(data.toString('utf8'))?.[1]
    } else {
      paxPath = undefined
      if (type === '0' || type === '\0') out.set(name.replace(/^package\//, ''), { mode: oct(off + 100, 8) & 0o7777, data })
      else throw new Error(`${basename(tgz)}: unexpected entry ${name} of type ${type}`)
    }
    off += 512 + Math.ceil(size / 512) * 512
  }
  return out
}

/** `npm pack` of a directory into `dest`, returning the tarball's path. */
function pack(dir: string, dest: string, args: string[] = []): string {
  mkdirSync(dest, { recursive: true })
  const out = execFileSync('npm', ['pack', '--json', '--pack-destination', dest, ...args], { cwd: dir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  const [{ filename }] = JSON.parse(out.slice(out.indexOf('['))) as [{ filename: string }]
  return join(dest, filename)
}

const modes = (files: Map<string, { mode: number }>) => Object.fromEntries([...files].map(([p, f]) => [p, f.mode.toString(8)]).sort(([a], [b]) => a!.localeCompare(b!)))

/** dist/ files that the sources compile to: what the main package must ship, nothing else. */
function expectedDist(): string[] {
  // tsconfig.json compiles index.ts, cli.ts and lib/**/*.ts.
  const lib = (readdirSync(join(root, 'lib'), { recursive: true }) as string[]).filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
  const sources = ['index.ts', 'cli.ts', ...lib.map((f) => `lib/${f}`)]
  return sources.flatMap((s) => [`dist/${s.replace(/\.ts$/, '.js')}`, `dist/${s.replace(/\.ts$/, '.d.ts')}`])
}

let mainTgz: string | undefined
function mainTarball(): string {
  if (!existsSync(join(root, 'dist', 'index.js'))) throw new Error('dist/ is not built: run `npm run build:ts` first')
  return (mainTgz ??= pack(root, join(tmp, 'main')))
}

test('package.json: ESM with types first, a bin, engines, os/cpu, no install scripts', (t) => {
  t.is(main.name, '@isolate/core')
  t.is(main.type, 'module')
  t.deepEqual(main.exports, {
    '.': { types: './dist/index.d.ts', default: './dist/index.js' },
    './package.json': './package.json',
  })
  t.is(Object.keys(main.exports!['.'] as object)[0], 'types')
  t.deepEqual(main.bin, { isolate: 'dist/cli.js' })
  t.deepEqual(main.engines, { node: '>=20' })
  t.deepEqual(main.os, ['linux'])
  t.deepEqual(main.cpu, ['x64', 'arm64'])
  t.is(main.dependencies, undefined, 'no runtime dependencies: nothing else to fetch')
  for (const s of INSTALL_SCRIPTS) t.is(main.scripts?.[s], undefined, `no ${s} script`)
  t.not(main.gypfile, true)
  t.false(existsSync(join(root, 'binding.gyp')), 'a binding.gyp would make npm run node-gyp')
})

test('optionalDependencies: the four platform packages at exactly this version', (t) => {
  t.deepEqual(main.optionalDependencies, Object.fromEntries(Object.keys(PLATFORMS).map((p) => [`@isolate/core-${p}`, main.version])))
})

test('platform packages: os/cpu/libc, version, exactly the addon and the helper, no scripts', (t) => {
  for (const [platform, { cpu, libc }] of Object.entries(PLATFORMS)) {
    const m = readManifest(join(root, 'npm', platform))
    t.is(m.name, `@isolate/core-${platform}`)
    t.is(m.version, main.version, platform)
    t.deepEqual(m.os, ['linux'], platform)
    t.deepEqual(m.cpu, [cpu], platform)
    t.deepEqual(m.libc, [libc], platform)
    t.deepEqual(m.files, [`isolate-core.${platform}.node`, 'isolate-helper', 'isolate-image'], platform)
    t.is(m.scripts, undefined, platform)
    t.is(m.dependencies, undefined, platform)
    t.deepEqual(m.engines, main.engines, platform)
  }
})

test('the lockfile links the platform packages to npm/<platform>/, never the registry', (t) => {
  const r = spawnSync(process.execPath, [join(root, 'scripts', 'platform-packages.mjs'), 'check'], { cwd: root, encoding: 'utf8' })
  t.is(r.status, 0, r.stderr)
  const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')) as { packages: Record<string, { resolved?: string; link?: boolean; integrity?: string; optional?: boolean }> }
  for (const platform of Object.keys(PLATFORMS)) {
    t.deepEqual(lock.packages[`node_modules/@isolate/core-${platform}`], { resolved: `npm/${platform}`, link: true })
    t.true(lock.packages[`npm/${platform}`]?.optional)
  }
  const fetched = Object.entries(lock.packages).filter(([k, v]) => /node_modules\/@isolate\//.test(k) && (v.integrity || v.resolved?.includes('://')))
  t.deepEqual(fetched, [])
})

test('the main tarball: exactly package.json, README.md and dist/*.js/.d.ts; cli.js 755 with its shebang', (t) => {
  const files = untar(mainTarball())
  const license = readdirSync(root).filter((f) => /^(LICENSE|LICENCE)(\.md|\.txt)?$/i.test(f))
  const expected = ['package.json', 'README.md', ...license, ...expectedDist()].sort()
  t.deepEqual([...files.keys()].sort(), expected)
  const want = Object.fromEntries(expected.map((p) => [p, p === 'dist/cli.js' ? '755' : '644']))
  t.deepEqual(modes(files), Object.fromEntries(Object.entries(want).sort(([a], [b]) => a.localeCompare(b))))
  t.true(files.get('dist/cli.js')!.data.toString('utf8').startsWith('#!/usr/bin/env node\n'))
  const packed = JSON.parse(files.get('package.json')!.data.toString('utf8')) as Manifest
  t.deepEqual(packed.optionalDependencies, main.optionalDependencies)
  t.deepEqual(packed.bin, { isolate: 'dist/cli.js' })
})

test(`the ${here} tarball: exactly the addon and the helper (755), with package.json and README.md`, (t) => {
  const dir = join(root, 'npm', here)
  const addon = `isolate-core.${here}.node`
  if (!existsSync(join(dir, addon)) || !existsSync(join(dir, 'isolate-helper'))) return t.fail(`npm/${here} is not built: run \`npm run build\``)
  const files = untar(pack(dir, join(tmp, here)))
  t.deepEqual([...files.keys()].sort(), [addon, 'README.md', 'isolate-helper', 'isolate-image', 'package.json'].sort())
  t.is(files.get('isolate-helper')!.mode, 0o755)
  t.is(files.get('isolate-image')!.mode, 0o755)
  t.is(files.get('package.json')!.mode, 0o644)
  t.is(files.get('README.md')!.mode, 0o644)
  t.true([0o644, 0o755].includes(files.get(addon)!.mode))
  t.true(files.get('isolate-helper')!.data.subarray(0, 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46])))
})

test('prebuilds/<platform>/ ship when staged: both parts, helper 755, nothing else from there', (t) => {
  // A copy of what the release packs, with prebuilds staged as release.yml does.
  mainTarball() // checks dist/ is built
  const stage = join(tmp, 'stage')
  mkdirSync(stage)
  for (const f of ['package.json', 'README.md']) copyFileSync(join(root, f), join(stage, f))
  cpSync(join(root, 'dist'), join(stage, 'dist'), { recursive: true })
  chmodSync(join(stage, 'dist', 'cli.js'), 0o755)
  for (const platform of ['linux-x64-gnu', 'linux-arm64-musl']) {
    const d = join(stage, 'prebuilds', platform)
    mkdirSync(d, { recursive: true })
    writeFileSync(join(d, `isolate-core.${platform}.node`), 'addon')
    writeFileSync(join(d, 'isolate-helper'), 'helper', { mode: 0o755 })
    writeFileSync(join(d, 'notes.txt'), 'not shipped')
  }
  writeFileSync(join(stage, 'prebuilds', 'stray.node'), 'not shipped')
  const files = untar(pack(stage, join(tmp, 'staged'), ['--ignore-scripts']))
  const prebuilt = [...files.keys()].filter((p) => p.startsWith('prebuilds/')).sort()
  t.deepEqual(prebuilt, [
    'prebuilds/linux-arm64-musl/isolate-core.linux-arm64-musl.node',
    'prebuilds/linux-arm64-musl/isolate-helper',
    'prebuilds/linux-x64-gnu/isolate-core.linux-x64-gnu.node',
    'prebuilds/linux-x64-gnu/isolate-helper',
  ])
  t.is(files.get('prebuilds/linux-x64-gnu/isolate-helper')!.mode, 0o755)
  t.is(files.get('prebuilds/linux-arm64-musl/isolate-helper')!.mode, 0o755)
})

test('publint --strict passes on the packed tarball', (t) => {
  const r = spawnSync(bin('publint'), ['run', mainTarball(), '--strict'], { encoding: 'utf8' })
  t.is(r.status, 0, `${r.stdout}\n${r.stderr}`)
})

test('@arethetypeswrong/cli passes on the packed tarball (profile esm-only)', (t) => {
  // esm-only: the package is ESM only by design, so `require` resolution in node10 and node16-cjs
  // (CJSResolvesToESM) is not a target; every ESM and bundler resolution must be clean.
  const r = spawnSync(bin('attw'), [mainTarball(), '--profile', 'esm-only', '--format', 'json'], { encoding: 'utf8' })
  t.is(r.status, 0, `${r.stdout}\n${r.stderr}`)
  const report = JSON.parse(r.stdout) as { analysis: { problems: { kind: string; resolutionKind?: string }[] } }
  const kinds = new Set(report.analysis.problems.map((p) => `${p.kind}:${p.resolutionKind ?? ''}`))
  t.deepEqual([...kinds].filter((k) => !/:(node10|node16-cjs)$/.test(k)), [])
})
