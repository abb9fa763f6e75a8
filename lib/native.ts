/**
 * Finds the native parts: the `.node` addon and the `isolate-helper` executable. In order:
 *
 * 1. `ISOLATE_ADDON_PATH` / `ISOLATE_HELPER_PATH`, each overriding its part (a path that does not
 *    exist is an error, never skipped);
 * 2. the platform package `@isolate/core-<platform>` (`linux-x64-gnu`, `linux-arm64-musl`...), an
 *    optional dependency that npm installs only on the matching os/cpu/libc, at the same version;
 * 3. `prebuilds/<platform>/` inside this package, for installs that skipped optional dependencies;
 * 4. `npm/<platform>/` inside this package, the local build of a clone (`npm run build:native`).
 *
 * A place counts only when it has both parts (except the overridden one). When none does, one
 * `IsolateError` (`ERR_ISOLATE_NATIVE`) lists every place looked at and how to fix it.
 *
 * Everything the detection reads from the host goes through an injectable `LoaderHost`, so the
 * tests can play glibc, musl, an old lockfile or a stripped exec bit without touching the machine.
 */
import { accessSync, closeSync, constants, openSync, readFileSync, readSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { IsolateError, ownFields } from './errors.js'

export interface SpawnedHelper {
  /** 0 for a helper the helper server forked (the server reaps it). */
  pid: number
  control: number
  stdin?: number
  stdout?: number
  stderr?: number
  /** A long-lived sandbox's exec socket (written by `sendExec` only). */
  exec?: number
  /** The control socket, when already wrapped (a warm helper's). */
  socket?: import('node:net').Socket
  /** A warm helper: this process's identity epoch when it was made (`sendSpec` refuses a past one). */
  epoch?: number
}

export interface ExecStdio {
  stdin?: number
  stdout?: number
  stderr?: number
}

export interface Addon {
  /** OPOST of the terminal `fd` on or off; whether it was on, or null for no terminal. */
  setOutputProcessing(fd: number, on: boolean): boolean | null
  /** The spec as JSON text; validated and spawned on the libuv thread pool (rejects with `InvalidArg`). */
  spawnHelper(helperPath: string, specJson: string, stdio: number[]): Promise<SpawnedHelper>
  spawnWarmHelper(helperPath: string, ahead?: string | null, buildRoot?: boolean | null): Promise<SpawnedHelper>
  /**
   * Validates (throws `InvalidArg`); hands the spec and stdio to a warm helper. Our ends are held until `takeFds` (see takeWrapped).
   * Throws `Cancelled` for a helper of a past `epoch` (made before this process changed its ids or cgroups).
   */
  sendSpec(handoffFd: number, specJson: string, stdio: number[], epoch?: number): ExecStdio
  /** Throws with code `QueueFull` when the exec socket is full (try again shortly). */
  /** `requestJson`: the request as JSON text. Our ends are held until `takeFds` (see takeWrapped). */
  sendExec(execFd: number, requestJson: string, stdio: number[]): ExecStdio
  spawnProbe(helperPath: string): SpawnedHelper
  validateSpec(spec: unknown): void
  /** Which of the spec's mounts an init whose root was built ahead makes at its release (the helper's rule). */
  madeAtRelease(specJson: string): boolean[]
  /** Bytes sent (the rest goes through the stream), -1 when the helper is gone (see send_control in crates/napi). */
  sendControl(fd: number, line: string): number
  /** `sweep` false: a child that makes no cgroups (the image tool, the probe) has none to look for. */
  reapHelper(pid: number, sweep?: boolean): boolean
  /** Closes a descriptor JavaScript keeps raw (see crates/napi/src/handover.rs). */
  closeFd(fd: number): void
  /** The descriptors a start resolved with that JavaScript now wraps in streams (see crates/napi/src/handover.rs). */
  takeFds(fds: number[]): void
  probe(): unknown
}

/**
 * Take the descriptors of a helper that JavaScript has wrapped in streams (its control socket and
 * stdio), or the stdio a warm helper or an exec was handed (`sendSpec`, `sendExec`), right after
 * wrapping them: until then the addon holds them, and closes them if this thread is torn down
 * first (a worker terminated while the start was on the thread pool, whose continuation never
 * runs, or between a call and the wrapping): the helper then ends its sandbox.
 */
export function takeWrapped(addon: Addon, h: SpawnedHelper | ExecStdio): void {
  const control = 'control' in h ? h.control : undefined
  addon.takeFds([control, h.stdin, h.stdout, h.stderr].filter((fd): fd is number => typeof fd === 'number' && fd >= 0))
}

export interface Native {
  addon: Addon
  helperPath: string
  /** Where they came from, for `isolate doctor`. */
  from: string
  addonPath: string
  /** Which rule found them. */
  source: NativeSource
  /** `linux-x64-gnu`... */
  platform: string
}

export type NativeSource = 'env' | 'package' | 'prebuilds' | 'local'
export type Libc = 'glibc' | 'musl'

export interface LibcDetection {
  libc: Libc
  /** What decided it, for error messages and `isolate doctor`. */
  evidence: string
}

/** The architectures there are platform packages for. */
export const SUPPORTED_ARCHES = ['x64', 'arm64'] as const
/** The name of the platform package for a platform: `@isolate/core-linux-x64-gnu`. */
export const platformPackage = (platform: string): string => `@isolate/core-${platform}`
export const addonFile = (platform: string): string => `isolate-core.${platform}.node`
export const HELPER_FILE = 'isolate-helper'

/** What libc detection reads. Each member may be left out to use the real host. */
export interface LibcFacts {
  /** `process.report.getReport()`; returns undefined when reports are unavailable. */
  report?: () => unknown
  /** The first `length` bytes of a file, or undefined when it cannot be read. */
  readHead?: (path: string, length: number) => Buffer | undefined
  /** The running Node binary. */
  execPath?: string
}

function realReadHead(path: string, length: number): Buffer | undefined {
  let fd: number | undefined
  try {
    fd = openSync(path, 'r')
    const buf = Buffer.alloc(length)
    const n = readSync(fd, buf, 0, length, 0)
    return buf.subarray(0, n)
  } catch {
    return undefined
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

function realReport(): unknown {
  try {
    return process.report?.getReport()
  } catch {
    return undefined
  }
}

/**
 * The program interpreter (`PT_INTERP`) of an ELF executable: `/lib64/ld-linux-x86-64.so.2` for a
 * glibc program, `/lib/ld-musl-x86_64.so.1` for a musl one, undefined for a static one or not ELF.
 */
export function elfInterpreter(head: Buffer): string | undefined {
  if (head.length < 52 || head.readUInt32BE(0) !== 0x7f454c46) return undefined
  const is64 = head[4] === 2
  const le = head[5] === 1
  const u16 = (o: number) => (le ? head.readUInt16LE(o) : head.readUInt16BE(o))
  const u32 = (o: number) => (le ? head.readUInt32LE(o) : head.readUInt32BE(o))
  const u64 = (o: number) => Number(le ? head.readBigUInt64LE(o) : head.readBigUInt64BE(o))
  if (is64 && head.length < 64) return undefined
  const phoff = is64 ? u64(0x20) : u32(0x1c)
  const phentsize = u16(is64 ? 0x36 : 0x2a)
  const phnum = u16(is64 ? 0x38 : 0x2c)
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize
    if (ph + (is64 ? 0x38 : 0x20) > head.length) return undefined
    if (u32(ph) !== 3 /* PT_INTERP */) continue
    const offset = is64 ? u64(ph + 8) : u32(ph + 4)
    const size = is64 ? u64(ph + 0x20) : u32(ph + 0x10)
    if (offset + size > head.length) return undefined
    return head.toString('latin1', offset, offset + size).replace(/\0.*$/s, '')
  }
  return undefined
}

const MUSL_SO = /(^|\/)(ld-musl-[^/]*\.so|libc\.musl-[^/]*\.so)/
const GLIBC_SO = /(^|\/)(ld-linux[^/]*\.so|ld64\.so|ld\.so|libc\.so\.6)/

/**
 * Which libc the running Node uses, from evidence that names it, in order: the interpreter of the
 * Node binary itself, Node's own diagnostic report (glibc version, loaded shared objects), then
 * the text of `/usr/bin/ldd`. A missing glibc version alone proves nothing (a static Node has
 * none); only when nothing names a libc is glibc assumed, and the evidence says so.
 */
export function detectLibc(facts: LibcFacts = {}): LibcDetection {
  const readHead = facts.readHead ?? realReadHead
  const execPath = facts.execPath ?? process.execPath

  const head = readHead(execPath, 64 * 1024)
  const interp = head && elfInterpreter(head)
  if (interp && MUSL_SO.test(interp)) return { libc: 'musl', evidence: `${execPath} is linked against ${interp}` }
  if (interp && GLIBC_SO.test(interp)) return { libc: 'glibc', evidence: `${execPath} is linked against ${interp}` }

  const report = (facts.report ?? realReport)() as { header?: { glibcVersionRuntime?: unknown }; sharedObjects?: unknown } | undefined
  const glibc = report?.header?.glibcVersionRuntime
  if (typeof glibc === 'string' && glibc) return { libc: 'glibc', evidence: `Node reports glibc ${glibc}` }
  const shared = Array.isArray(report?.sharedObjects) ? (report.sharedObjects as unknown[]).filter((s): s is string => typeof s === 'string') : []
  const muslSo = shared.find((s) => MUSL_SO.test(s))
  if (muslSo) return { libc: 'musl', evidence: `Node has ${muslSo} loaded` }
  const glibcSo = shared.find((s) => GLIBC_SO.test(s))
  if (glibcSo) return { libc: 'glibc', evidence: `Node has ${glibcSo} loaded` }

  const ldd = readHead('/usr/bin/ldd', 64 * 1024)?.toString('latin1')
  if (ldd && /musl/i.test(ldd)) return { libc: 'musl', evidence: '/usr/bin/ldd is musl\'s' }
  if (ldd && /GNU C Library|glibc/i.test(ldd)) return { libc: 'glibc', evidence: '/usr/bin/ldd is glibc\'s' }

  return { libc: 'glibc', evidence: 'nothing names the libc (static Node, no report, no ldd): assumed glibc' }
}

let detected: LibcDetection | undefined
const hostLibc = (): LibcDetection => (detected ??= detectLibc())

/** True when the running Node uses musl (Alpine...). With `facts`, detects afresh from them. */
export function isMusl(facts?: LibcFacts): boolean {
  return (facts ? detectLibc(facts) : hostLibc()).libc === 'musl'
}

/** `linux-<arch>-<gnu|musl>`, the suffix of the platform package. */
export function platformName(arch: string = process.arch, libc: Libc = hostLibc().libc): string {
  return `linux-${arch}-${libc === 'musl' ? 'musl' : 'gnu'}`
}

/** Everything `locateNative` reads from the host. */
export interface LoaderHost {
  platform: string
  arch: string
  env: Record<string, string | undefined>
  libc: () => LibcDetection
  exists: (path: string) => boolean
  isExecutable: (path: string) => boolean
  /** The directory and version of an installed package, or undefined when it cannot be resolved. */
  resolvePackage: (name: string) => { dir: string; version?: string } | undefined
  /** The root of `@isolate/core` (where its package.json is). */
  packageRoot: string
  /** Its version. */
  version: string
}

export interface NativeLocation {
  addonPath: string
  helperPath: string
  from: string
  source: NativeSource
  platform: string
}

const require = createRequire(import.meta.url)
const here = dirname(fileURLToPath(import.meta.url))

/** The directory of `@isolate/core`'s package.json, from the TypeScript sources or from dist/. */
function findPackageRoot(): { root: string; version: string } {
  for (let dir = here; dir !== dirname(dir); dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string }
      if (pkg.name === '@isolate/core') return { root: dir, version: pkg.version ?? '0.0.0' }
    } catch {}
  }
  return { root: join(here, '..'), version: '0.0.0' }
}

function realResolvePackage(name: string): { dir: string; version?: string } | undefined {
  try {
    const manifest = require.resolve(`${name}/package.json`)
    const { version } = JSON.parse(readFileSync(manifest, 'utf8')) as { version?: string }
    return { dir: dirname(manifest), version }
  } catch {
    return undefined
  }
}

export function defaultLoaderHost(): LoaderHost {
  const { root, version } = findPackageRoot()
  return {
    platform: process.platform,
    arch: process.arch,
    env: process.env,
    libc: hostLibc,
    exists: (p) => {
      try {
        return statSync(p).isFile()
      } catch {
        return false
      }
    },
    isExecutable: (p) => {
      try {
        accessSync(p, constants.X_OK)
        // root passes X_OK for any file with one x bit; a helper needs all three for other users.
        return (statSync(p).mode & 0o111) !== 0
      } catch {
        return false
      }
    },
    resolvePackage: realResolvePackage,
    packageRoot: root,
    version,
  }
}

const nativeError = (message: string, extra: { hint: string; path?: string; errno?: string }) =>
  new IsolateError(message, { code: 'ERR_ISOLATE_NATIVE', ...extra })

/** Where the addon and helper are, without loading anything. Throws `ERR_ISOLATE_NATIVE`. */
export function locateNative(host: LoaderHost = defaultLoaderHost()): NativeLocation {
  if (host.platform !== 'linux') {
    throw nativeError(`@isolate/core runs on Linux only (this is ${host.platform})`, {
      hint: 'run it on Linux (a VM or a container will do): the sandbox is made of Linux namespaces',
    })
  }

  // Relative overrides are taken from the current directory, not from this module's.
  const envAddon = host.env.ISOLATE_ADDON_PATH ? resolve(host.env.ISOLATE_ADDON_PATH) : undefined
  const envHelper = host.env.ISOLATE_HELPER_PATH ? resolve(host.env.ISOLATE_HELPER_PATH) : undefined
  for (const [name, path] of [['ISOLATE_ADDON_PATH', envAddon], ['ISOLATE_HELPER_PATH', envHelper]] as const) {
    if (path !== undefined && !host.exists(path)) {
      throw nativeError(`${name}=${path}: no such file`, { path, errno: 'ENOENT', hint: `point ${name} at an existing file, or unset it` })
    }
  }

  const checkHelper = (loc: NativeLocation): NativeLocation => {
    if (!host.isExecutable(loc.helperPath)) {
      throw nativeError(`the helper ${loc.helperPath} is not executable`, {
        path: loc.helperPath,
        errno: 'EACCES',
        hint: `run \`chmod 755 ${loc.helperPath}\`, or reinstall @isolate/core: something unpacked it without its file mode (the helper is executed directly)`,
      })
    }
    return loc
  }

  const libc = host.libc()
  const platform = platformName(host.arch, libc.libc)
  if (envAddon && envHelper) {
    return checkHelper({ addonPath: envAddon, helperPath: envHelper, from: 'ISOLATE_ADDON_PATH and ISOLATE_HELPER_PATH', source: 'env', platform })
  }
  if (!(SUPPORTED_ARCHES as readonly string[]).includes(host.arch)) {
    throw nativeError(`@isolate/core has no native build for the CPU architecture ${host.arch}`, {
      hint: `builds exist for ${SUPPORTED_ARCHES.join(' and ')}; set ISOLATE_ADDON_PATH and ISOLATE_HELPER_PATH to a build of your own`,
    })
  }

  const pkgName = platformPackage(platform)
  const candidates: { source: Exclude<NativeSource, 'env'>; dir?: string; what: string; skip?: string }[] = []
  const pkg = host.resolvePackage(pkgName)
  if (!pkg) candidates.push({ source: 'package', what: `the package ${pkgName}`, skip: 'not installed' })
  else if (pkg.version !== host.version) {
    candidates.push({ source: 'package', dir: pkg.dir, what: `the package ${pkgName} at ${pkg.dir}`, skip: `it is version ${pkg.version}, @isolate/core is ${host.version}` })
  } else candidates.push({ source: 'package', dir: pkg.dir, what: `the package ${pkgName} at ${pkg.dir}` })
  const prebuilds = join(host.packageRoot, 'prebuilds', platform)
  candidates.push({ source: 'prebuilds', dir: prebuilds, what: `the prebuilds in ${prebuilds}` })
  const local = join(host.packageRoot, 'npm', platform)
  candidates.push({ source: 'local', dir: local, what: `a local build in ${local}` })

  const looked: string[] = []
  for (const c of candidates) {
    if (c.skip || !c.dir) {
      looked.push(`${c.what}: ${c.skip}`)
      continue
    }
    const dir = c.dir
    const addonPath = envAddon ?? join(dir, addonFile(platform))
    const helperPath = envHelper ?? join(dir, HELPER_FILE)
    const missing = [addonPath, helperPath].filter((p) => !host.exists(p))
    if (missing.length) {
      looked.push(`${c.what}: no ${missing.map((p) => (p.startsWith(dir + '/') ? p.slice(dir.length + 1) : p)).join(' and no ')}`)
      continue
    }
    const via = envAddon ? ' (addon from ISOLATE_ADDON_PATH)' : envHelper ? ' (helper from ISOLATE_HELPER_PATH)' : ''
    return checkHelper({ addonPath, helperPath, from: `${c.what}${via}`, source: c.source, platform })
  }

  const message = [
    `no native build of @isolate/core ${host.version} for ${platform} (${libc.evidence}). Looked for:`,
    ...looked.map((l) => `  - ${l}`),
  ].join('\n')
  throw nativeError(message, {
    hint: [
      `npm installs ${pkgName} as an optional dependency only on a matching os/cpu/libc, and a lockfile written before it existed or on another platform can make it skip it (npm/cli#4828):`,
      'delete package-lock.json and node_modules and run `npm install` again (not with --omit=optional, --no-optional or --ignore-optional);',
      `or install it explicitly: \`npm install ${pkgName}@${host.version}\`;`,
      'or set ISOLATE_ADDON_PATH and ISOLATE_HELPER_PATH to a build of the addon and the helper;',
      'in a clone of the repository, build it with `npm run build:native`',
    ].join(' '),
  })
}

let cached: Native | undefined

/** Locates and loads the native parts once per process. Throws `ERR_ISOLATE_NATIVE`. */
export function loadNative(): Native {
  if (cached) return cached
  const loc = locateNative()
  let addon: Addon
  try {
    addon = require(loc.addonPath) as Addon
  } catch (e) {
    const err = e as NodeJS.ErrnoException
    throw new IsolateError(`could not load the addon ${loc.addonPath} (from ${loc.from}): ${err.message}`, {
      code: 'ERR_ISOLATE_NATIVE',
      path: loc.addonPath,
      hint: /GLIBC_|musl|Error relocating|ELF/.test(err.message)
        ? `it was built for another libc or CPU than this Node (${hostLibc().evidence}); reinstall @isolate/core so npm picks the right platform package`
        : 'reinstall @isolate/core; if it persists, report it with the output of `isolate doctor`',
      cause: e,
    })
  }
  cached = { addon: ownResults(addon), ...loc }
  return cached
}

/** The addon, its results read only for their own fields (see ownFields). */
function ownResults(raw: Addon): Addon {
  return {
    ...raw,
    spawnHelper: (...a) => raw.spawnHelper(...a).then(ownFields),
    spawnWarmHelper: (...a) => raw.spawnWarmHelper(...a).then(ownFields),
    sendSpec: (...a) => ownFields(raw.sendSpec(...a)),
    sendExec: (...a) => ownFields(raw.sendExec(...a)),
    spawnProbe: (...a) => ownFields(raw.spawnProbe(...a)),
  }
}
