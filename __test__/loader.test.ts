/**
 * The native loader: libc detection from each kind of evidence, the order of the places it looks
 * in, the overrides, and the text of its errors. Everything runs against a fake host except the
 * last tests, which load the real build of this checkout.
 */
import test from 'ava'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { IsolateError } from '../lib/errors.js'
import {
  detectLibc,
  elfInterpreter,
  isMusl,
  loadNative,
  locateNative,
  platformName,
  type LibcDetection,
  type LoaderHost,
} from '../lib/native.js'
import { root } from './helpers.js'

const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version

/** A minimal little-endian ELF64 executable header with one PT_INTERP naming `interp`. */
function elfWithInterp(interp: string | undefined): Buffer {
  const buf = Buffer.alloc(256)
  buf.writeUInt32BE(0x7f454c46, 0)
  buf[4] = 2 // ELFCLASS64
  buf[5] = 1 // little-endian
  buf[6] = 1
  buf.writeBigUInt64LE(64n, 0x20) // e_phoff
  buf.writeUInt16LE(56, 0x36) // e_phentsize
  buf.writeUInt16LE(1, 0x38) // e_phnum
  buf.writeUInt32LE(interp === undefined ? 1 /* PT_LOAD */ : 3 /* PT_INTERP */, 64)
  if (interp !== undefined) {
    buf.writeBigUInt64LE(160n, 64 + 8)
    buf.writeBigUInt64LE(BigInt(interp.length + 1), 64 + 0x20)
    buf.write(interp, 160, 'latin1')
  }
  return buf
}

/** Facts for detectLibc: a Node binary with `interp`, a report, and an optional /usr/bin/ldd. */
function facts(o: { interp?: string; report?: unknown; ldd?: string }) {
  return {
    execPath: '/usr/bin/node',
    report: () => o.report,
    readHead: (path: string) => {
      if (path === '/usr/bin/node') return elfWithInterp(o.interp)
      if (path === '/usr/bin/ldd' && o.ldd !== undefined) return Buffer.from(o.ldd)
      return undefined
    },
  }
}

test('elfInterpreter reads PT_INTERP, and nothing from a static or non-ELF file', (t) => {
  t.is(elfInterpreter(elfWithInterp('/lib/ld-musl-x86_64.so.1')), '/lib/ld-musl-x86_64.so.1')
  t.is(elfInterpreter(elfWithInterp(undefined)), undefined)
  t.is(elfInterpreter(Buffer.from('#!/bin/sh\necho not elf\n')), undefined)
  t.is(elfInterpreter(Buffer.alloc(0)), undefined)
  // The helper is linked statically: it has no interpreter.
  const helper = join(root, 'npm', platformName(), 'isolate-helper')
  if (existsSync(helper)) t.is(elfInterpreter(readFileSync(helper).subarray(0, 65536)), undefined)
})

test('glibc: the Node binary is linked against ld-linux', (t) => {
  const d = detectLibc(facts({ interp: '/lib64/ld-linux-x86-64.so.2', report: { header: {} } }))
  t.is(d.libc, 'glibc')
  t.regex(d.evidence, /ld-linux-x86-64\.so\.2/)
  t.is(detectLibc(facts({ interp: '/lib/ld-linux-aarch64.so.1' })).libc, 'glibc')
})

test('musl: the Node binary is linked against ld-musl', (t) => {
  const d = detectLibc(facts({ interp: '/lib/ld-musl-aarch64.so.1', report: { header: { glibcVersionRuntime: undefined } } }))
  t.deepEqual(d, { libc: 'musl', evidence: '/usr/bin/node is linked against /lib/ld-musl-aarch64.so.1' })
  t.true(isMusl(facts({ interp: '/lib/ld-musl-x86_64.so.1' })))
})

test('a static Node: the report decides (glibc version, or the shared objects loaded)', (t) => {
  t.deepEqual(detectLibc(facts({ report: { header: { glibcVersionRuntime: '2.36' } } })), { libc: 'glibc', evidence: 'Node reports glibc 2.36' })
  const musl = detectLibc(facts({ report: { header: {}, sharedObjects: ['/lib/ld-musl-x86_64.so.1', '/usr/lib/libstdc++.so.6'] } }))
  t.is(musl.libc, 'musl')
  t.regex(musl.evidence, /ld-musl-x86_64/)
  t.is(detectLibc(facts({ report: { header: {}, sharedObjects: ['/usr/lib/libc.musl-x86_64.so.1'] } })).libc, 'musl')
  t.is(detectLibc(facts({ report: { header: {}, sharedObjects: ['/lib/x86_64-linux-gnu/libc.so.6'] } })).libc, 'glibc')
})

test('then /usr/bin/ldd names the libc', (t) => {
  t.is(detectLibc(facts({ report: { header: {} }, ldd: '#!/bin/sh\nexec /lib/ld-musl-x86_64.so.1 --list "$@"\n' })).libc, 'musl')
  t.is(detectLibc(facts({ report: undefined, ldd: '#! /bin/bash\n# Copyright (C) 1996-2024 Free Software Foundation\n# This file is part of the GNU C Library.\n' })).libc, 'glibc')
})

test('a missing glibc version alone does not make musl', (t) => {
  // No interpreter, a report without glibcVersionRuntime nor shared objects, no ldd: no evidence
  // of musl at all, so glibc is assumed and the evidence says it was assumed.
  const d = detectLibc(facts({ report: { header: {} } }))
  t.is(d.libc, 'glibc')
  t.regex(d.evidence, /assumed glibc/)
  t.is(detectLibc(facts({ report: undefined })).libc, 'glibc')
  t.false(isMusl(facts({ report: { header: {}, sharedObjects: [] } })))
})

test('platformName', (t) => {
  t.is(platformName('x64', 'glibc'), 'linux-x64-gnu')
  t.is(platformName('arm64', 'musl'), 'linux-arm64-musl')
  t.is(platformName('x64', 'musl'), 'linux-x64-musl')
})

/** A fake host: `files` maps paths to 'x' (executable) or 'r' (not executable). */
function host(o: {
  files?: Record<string, 'x' | 'r'>
  packages?: Record<string, { dir: string; version?: string }>
  env?: Record<string, string>
  arch?: string
  platform?: string
  libc?: LibcDetection
}): LoaderHost {
  const files = o.files ?? {}
  return {
    platform: o.platform ?? 'linux',
    arch: o.arch ?? 'x64',
    env: o.env ?? {},
    libc: () => o.libc ?? { libc: 'glibc', evidence: 'test says glibc' },
    exists: (p) => p in files,
    isExecutable: (p) => files[p] === 'x',
    resolvePackage: (name) => o.packages?.[name],
    packageRoot: '/app/node_modules/@isolate/core',
    version,
  }
}

const PKG = '/app/node_modules/@isolate/core-linux-x64-gnu'
const PRE = '/app/node_modules/@isolate/core/prebuilds/linux-x64-gnu'
const LOCAL = '/app/node_modules/@isolate/core/npm/linux-x64-gnu'
const ADDON = 'isolate-core.linux-x64-gnu.node'
const both = (dir: string, helper: 'x' | 'r' = 'x') => ({ [`${dir}/${ADDON}`]: 'r' as const, [`${dir}/isolate-helper`]: helper })
const pkg = { '@isolate/core-linux-x64-gnu': { dir: PKG, version } }

test('order: the platform package first', (t) => {
  const loc = locateNative(host({ files: { ...both(PKG), ...both(PRE), ...both(LOCAL) }, packages: pkg }))
  t.is(loc.source, 'package')
  t.is(loc.addonPath, `${PKG}/${ADDON}`)
  t.is(loc.helperPath, `${PKG}/isolate-helper`)
  t.is(loc.platform, 'linux-x64-gnu')
  t.regex(loc.from, /@isolate\/core-linux-x64-gnu/)
})

test('order: prebuilds/<platform>/ when the platform package is not installed', (t) => {
  const loc = locateNative(host({ files: { ...both(PRE), ...both(LOCAL) } }))
  t.is(loc.source, 'prebuilds')
  t.is(loc.helperPath, `${PRE}/isolate-helper`)
})

test('order: the local build in npm/<platform>/ last', (t) => {
  const loc = locateNative(host({ files: both(LOCAL) }))
  t.is(loc.source, 'local')
  t.is(loc.addonPath, `${LOCAL}/${ADDON}`)
})

test('a place needs both parts; an incomplete one is skipped', (t) => {
  const loc = locateNative(host({ files: { [`${PKG}/${ADDON}`]: 'r', ...both(PRE) }, packages: pkg }))
  t.is(loc.source, 'prebuilds')
})

test('a platform package of another version is skipped', (t) => {
  const h = host({ files: { ...both(PKG), ...both(LOCAL) }, packages: { '@isolate/core-linux-x64-gnu': { dir: PKG, version: '0.0.1' } } })
  t.is(locateNative(h).source, 'local')
  const e = t.throws(() => locateNative({ ...h, exists: () => false }), { instanceOf: IsolateError })
  t.regex(e!.message, new RegExp(`it is version 0\\.0\\.1, @isolate/core is ${version.replaceAll('.', '\\.')}`))
})

test('musl and arm64 pick their own package', (t) => {
  const dir = '/app/node_modules/@isolate/core-linux-arm64-musl'
  const loc = locateNative(host({
    arch: 'arm64',
    libc: { libc: 'musl', evidence: 'test says musl' },
    files: { [`${dir}/isolate-core.linux-arm64-musl.node`]: 'r', [`${dir}/isolate-helper`]: 'x', ...both(PKG) },
    packages: { '@isolate/core-linux-arm64-musl': { dir, version }, ...pkg },
  }))
  t.is(loc.platform, 'linux-arm64-musl')
  t.is(loc.addonPath, `${dir}/isolate-core.linux-arm64-musl.node`)
})

test('ISOLATE_ADDON_PATH and ISOLATE_HELPER_PATH override everything', (t) => {
  const env = { ISOLATE_ADDON_PATH: '/opt/x/addon.node', ISOLATE_HELPER_PATH: '/opt/x/helper' }
  const loc = locateNative(host({ env, files: { '/opt/x/addon.node': 'r', '/opt/x/helper': 'x', ...both(PKG) }, packages: pkg }))
  t.deepEqual(loc, { addonPath: '/opt/x/addon.node', helperPath: '/opt/x/helper', from: 'ISOLATE_ADDON_PATH and ISOLATE_HELPER_PATH', source: 'env', platform: 'linux-x64-gnu' })
})

test('one override: the other part is looked for as usual', (t) => {
  const loc = locateNative(host({ env: { ISOLATE_HELPER_PATH: '/opt/helper' }, files: { '/opt/helper': 'x', [`${PRE}/${ADDON}`]: 'r' } }))
  t.is(loc.source, 'prebuilds')
  t.is(loc.addonPath, `${PRE}/${ADDON}`)
  t.is(loc.helperPath, '/opt/helper')
  t.regex(loc.from, /helper from ISOLATE_HELPER_PATH/)
})

test('an override that does not exist is an error, not skipped', (t) => {
  const e = t.throws(() => locateNative(host({ env: { ISOLATE_HELPER_PATH: '/nope/helper' }, files: both(PKG), packages: pkg })), { instanceOf: IsolateError })
  t.is(e!.code, 'ERR_ISOLATE_NATIVE')
  t.is(e!.errno, 'ENOENT')
  t.regex(e!.message, /^ISOLATE_HELPER_PATH=\/nope\/helper: no such file/)
})

test('a helper without its exec bit is a clear error', (t) => {
  const e = t.throws(() => locateNative(host({ files: both(PKG, 'r'), packages: pkg })), { instanceOf: IsolateError })
  t.is(e!.code, 'ERR_ISOLATE_NATIVE')
  t.is(e!.errno, 'EACCES')
  t.is(e!.path, `${PKG}/isolate-helper`)
  t.regex(e!.message, /^the helper \S+\/isolate-helper is not executable/)
  t.regex(e!.hint!, new RegExp(`chmod 755 ${PKG}/isolate-helper`))
})

test('nothing found: one error that lists every place and how to fix it', (t) => {
  const e = t.throws(() => locateNative(host({ files: { [`${PRE}/${ADDON}`]: 'r' } })), { instanceOf: IsolateError })
  t.is(e!.code, 'ERR_ISOLATE_NATIVE')
  t.is(e!.name, 'IsolateError')
  const [first, ...places] = e!.message.split('\n')
  t.is(first, `no native build of @isolate/core ${version} for linux-x64-gnu (test says glibc). Looked for:`)
  t.is(places[0], '  - the package @isolate/core-linux-x64-gnu: not installed')
  t.is(places[1], `  - the prebuilds in ${PRE}: no isolate-helper`)
  t.regex(places[2]!, new RegExp(`^  - a local build in ${LOCAL}: no ${ADDON.replaceAll('.', '\\.')} and no isolate-helper \\(hint: `))
  const hint = e!.hint!
  t.true(hint.includes('delete package-lock.json and node_modules and run `npm install` again'))
  t.true(hint.includes(`npm install @isolate/core-linux-x64-gnu@${version}`))
  t.true(hint.includes('--omit=optional'))
  t.true(hint.includes('ISOLATE_ADDON_PATH and ISOLATE_HELPER_PATH'))
  t.true(hint.includes('npm run build:native'))
  t.true(e!.message.endsWith(`(hint: ${hint})`))
})

test('not Linux, or an architecture without builds', (t) => {
  const mac = t.throws(() => locateNative(host({ platform: 'darwin' })), { instanceOf: IsolateError })
  t.is(mac!.code, 'ERR_ISOLATE_NATIVE')
  t.regex(mac!.message, /runs on Linux only \(this is darwin\)/)
  const ia32 = t.throws(() => locateNative(host({ arch: 'ia32' })), { instanceOf: IsolateError })
  t.regex(ia32!.message, /no native build for the CPU architecture ia32/)
  t.regex(ia32!.hint!, /x64 and arm64/)
  // ...unless both parts are given.
  const env = { ISOLATE_ADDON_PATH: '/opt/a.node', ISOLATE_HELPER_PATH: '/opt/helper' }
  t.is(locateNative(host({ arch: 'riscv64', env, files: { '/opt/a.node': 'r', '/opt/helper': 'x' } })).source, 'env')
})

test('this host: the libc detected is the one the system has', (t) => {
  const d = detectLibc()
  t.is(d.libc, existsSync('/etc/alpine-release') ? 'musl' : 'glibc')
  t.notRegex(d.evidence, /assumed/)
  t.is(isMusl(), d.libc === 'musl')
  t.is(platformName(), `linux-${process.arch}-${d.libc === 'musl' ? 'musl' : 'gnu'}`)
})

test('this checkout: loadNative finds the build and caches it', (t) => {
  if (process.env.ISOLATE_ADDON_PATH || process.env.ISOLATE_HELPER_PATH) return t.pass('overridden by the environment')
  const n = loadNative()
  t.true(['package', 'local'].includes(n.source), n.from)
  t.is(n.platform, platformName())
  t.true(existsSync(n.helperPath))
  t.is(typeof n.addon.spawnHelper, 'function')
  t.is(loadNative(), n)
})
