/** The public options and their one conversion into the spec the Rust core validates again. */
import { closeSync, constants, fstatSync, lstatSync, openSync, readFileSync, readSync, realpathSync, statSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { boundedJson, isArrayOption, JsonTooLong, nearest, optionError, ownFields, ownOptions, shown } from './errors.js'
import { isAbortSignal } from './abort.js'
import { loadNative } from './native.js'
import { signalNumber, type SignalName } from './sandbox.js'

export type StdioMode = 'pipe' | 'inherit' | 'ignore' | number
/** `stdio[2]` may also be `'stdout'`: stderr goes where stdout goes, in the order written (as `2>&1`). */
export type StderrMode = StdioMode | 'stdout'
export type Stdio = StdioMode | readonly [StdioMode, StdioMode, StderrMode]

export interface BindMount {
  type: 'bind'
  /** A host path; relative paths resolve against `process.cwd()`. */
  source: string
  /** Where it appears inside. */
  target: string
  /** Default true. */
  readonly?: boolean
}

export interface TmpfsMount {
  type: 'tmpfs'
  target: string
  sizeBytes?: number
  mode?: number
}

/** A writable view of a host directory; what the sandbox writes stays in the sandbox. */
export interface OverlayMount {
  type: 'overlay'
  source: string
  target: string
}

export type MountOption = BindMount | TmpfsMount | OverlayMount

export type NamespaceName = 'user' | 'mount' | 'pid' | 'uts' | 'ipc' | 'net' | 'cgroup'

export interface Limits {
  /**
   * Wall clock from the command's execve (the setup before it is bounded by it too, apart); the
   * whole sandbox is killed and the reason is `'timeout'`. A long-lived sandbox's: its whole life.
   */
  timeoutMs?: number
  memoryBytes?: number
  /**
   * Processes and threads of the whole sandbox: its cgroup's pids limit (fails closed where no
   * cgroup can hold it). Not given: 2048 per uid inside, as the command's RLIMIT_NPROC, which the
   * sandbox's own user namespace counts apart from every other process (Linux 5.14+,
   * `probe().defaultPids`; none without a user namespace, where the count would be the host ids'
   * across sandboxes; a sandbox that keeps `SETUID` can take other uids, each with 2048);
   * `Infinity`: no bound but the caller's own RLIMIT_NPROC.
   */
  pids?: number
  cpus?: number
  cpuTimeMs?: number
  outputBytes?: number
  openFiles?: number
  fileSizeBytes?: number
  /** RLIMIT_STACK, soft and hard: the main thread's stack (deep recursion; judges often give it memoryBytes). Not given: the caller's. */
  stackBytes?: number
  /** Core dumps are off unless true. */
  coreDumps?: boolean
}

export interface SpawnOptions {
  /**
   * `'host'` (default): the host's system directories read-only on a fresh tmpfs root; or a
   * directory holding a root filesystem (one made by `importImage(..., { layout: 'layers' })`,
   * with a layers.json, is stacked from its layers); or `{ layers: [dirs] }`, topmost first.
   */
  rootfs?: 'host' | string | { layers: string[] }
  mounts?: MountOption[]
  /** Default `'sandbox'`. */
  hostname?: string
  /** `'none'` (default): its own network namespace with only `lo`, up. `'host'`: the host's network. */
  network?: 'none' | 'host'
  /** Turn single namespaces off (`mount` and `pid` cannot be). */
  namespaces?: Partial<Record<NamespaceName, boolean>>
  /** The command's whole environment. Default: `{ PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' }`. */
  env?: Record<string, string>
  /** Also pass these host variables (or all with `true`); `env` wins over them. */
  inheritEnv?: boolean | string[]
  /** Inside the sandbox. Default `'/'`. */
  cwd?: string
  /**
   * Ids inside the sandbox. Default `{ uid: 0, gid: 0 }` (mapped to an unprivileged host id). With
   * `namespaces.user` false they are host ids: the default is then `probe().sandboxHostIds`, and 0 is refused.
   */
  user?: { uid: number; gid: number }
  limits?: Limits
  /** Shorthand for `limits.timeoutMs`. */
  timeoutMs?: number
  stdio?: Stdio
  signal?: AbortSignal
  /** Capabilities kept inside (`'NET_BIND_SERVICE'`, `CAP_` optional); every other one is dropped from every set. Default none. */
  capabilities?: string[]
  /** Paths inside the sandbox the command may read, write (and read) or execute (and read); everything else is denied by Landlock. */
  landlock?: { read?: string[]; write?: string[]; exec?: string[] }
  /** A copy-on-write layer over the rootfs: `true` (thrown away at the end), or `{ upper: DIR }` to keep it, `{ sizeBytes }` to bound it. */
  overlay?: boolean | { upper?: string; sizeBytes?: number }
  /**
   * A pseudo-terminal for the command (its own devpts instance inside the sandbox): `true`
   * (80x24) or `{ rows, cols }`. Its input comes from `stdio[0]` and its output (stderr too, as
   * on any terminal) goes to `stdio[1]`: `sb.stdin` and `sb.stdout` with `'pipe'` (the default),
   * this process's own with `'inherit'`, nothing and nowhere with `'ignore'`; `stdio[2]` is
   * unused. `sb.resize(cols, rows)` follows window changes.
   */
  tty?: boolean | { rows: number; cols: number }
  /** `'default'` (the built-in profile), `'none'`, or a Docker/OCI seccomp profile (object or JSON text). */
  seccomp?: 'default' | 'none' | Record<string, unknown> | string
  /**
   * A graceful stop: at the timeout or an abort of `signal`, the command is sent `signal`
   * (default `'SIGTERM'`; with `group: true` its whole process group is, what a `sh -c` started
   * too) and the whole sandbox is killed only after `graceMs` (at once if the command ends
   * before). The reason stays `'timeout'` or `'canceled'`. Default: killed at once.
   */
  stop?: Stop
}

/** A graceful stop (see `SpawnOptions.stop`, `ExecOptions.stop`). */
export interface Stop {
  /** Default `'SIGTERM'`. */
  signal?: SignalName | number
  /** How long the command has to end before it is killed (SIGKILL). */
  graceMs: number
  /** The signal goes to the command's whole process group, not only to the command. Default false. */
  group?: boolean
}

/**
 * The option a setup step's failure comes from, where one does: a bind's missing source, a mount
 * point that cannot be made, an overlay's upper layer, the cwd, a Landlock path, the limits that
 * need a cgroup. `spec` holds what the call was given (an exec's: nothing but its cwd and tty,
 * which the step names).
 */
export function optionOfFailure(spec: Partial<Spec>, step: string, path: string | undefined): string | undefined {
  if (step === 'chdir') return 'cwd'
  if (step === 'open_pty') return 'tty'
  // An exec's failure (no seccomp or limits of its own) is the sandbox's, not of an option of the exec.
  if (step === 'load_seccomp') return spec.seccomp ? 'seccomp' : undefined
  if (step === 'set_rlimits') return spec.limits ? 'limits' : undefined
  if (step === 'create_cgroup' || step === 'write_cgroup_limits') {
    const asked = (['memoryBytes', 'pids', 'cpus', 'cpuTimeMs'] as const).filter((k) => spec.limits?.[k] !== undefined)
    return asked.length === 1 ? `limits.${asked[0]}` : asked.length > 1 ? 'limits' : undefined
  }
  if (path === undefined) return undefined
  // The same path may be a mount's source and another's target: the step says which it was.
  const ofSource = step === 'bind_mount' || step === 'mount_overlay' || step === 'inspect_sources'
  for (const [i, m] of (spec.mounts ?? []).entries()) {
    if (ofSource ? 'source' in m && m.source === path : m.target === path) return `mounts[${i}].${ofSource ? 'source' : 'target'}`
  }
  if (spec.overlay?.upper === path) return 'overlay.upper'
  if (spec.rootfs?.kind === 'dir' && spec.rootfs.path === path) return 'rootfs'
  if (spec.rootfs?.kind === 'layers' && spec.rootfs.paths.includes(path)) return `rootfs.layers[${spec.rootfs.paths.indexOf(path)}]`
  for (const list of ['read', 'write', 'exec'] as const) {
    const i = spec.landlock?.[list].indexOf(path) ?? -1
    if (i >= 0) return `landlock.${list}[${i}]`
  }
  return undefined
}

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

/** The JSON shape of isolate_core::spec::Spec. */
export interface Spec {
  file: string
  args: string[]
  env: string[]
  cwd: string
  rootfs: { kind: 'host' } | { kind: 'dir'; path: string } | { kind: 'layers'; paths: string[] }
  mounts: Array<{ type: 'bind'; source: string; target: string; readonly: boolean } | { type: 'tmpfs'; target: string; sizeBytes?: number; mode?: number } | { type: 'overlay'; source: string; target: string }>
  hostname: string
  network: 'none' | 'host'
  namespaces: Record<NamespaceName, boolean>
  user: { uid: number; gid: number }
  limits: { timeoutMs?: number; outputBytes?: number; openFiles?: number; fileSizeBytes?: number; stackBytes?: number; coreDumps?: boolean; memoryBytes?: number; pids?: number; unboundedPids?: boolean; cpuTimeMs?: number; cpus?: number }
  capabilities: string[]
  landlock?: { read: string[]; write: string[]; exec: string[] }
  seccomp: { mode: 'default' } | { mode: 'none' } | { mode: 'profile'; json: string }
  overlay?: { upper?: string; sizeBytes?: number }
  tty?: { rows: number; cols: number }
  stop?: { signal: number; graceMs: number; group?: true }
  persistent?: boolean
}

/** The largest seccomp profile taken, as JSON text: Docker's default one is ~20 KiB. */
const MOST_PROFILE_JSON = 4 << 20

/** Options of the calls that collect the output (lib/collect.ts), refused by those that give streams. */
const RUN_ONLY = ['input', 'encoding', 'maxBuffer']
const KNOWN = new Set(['rootfs', 'mounts', 'hostname', 'network', 'namespaces', 'env', 'inheritEnv', 'cwd', 'user', 'limits', 'timeoutMs', 'stdio', 'signal', 'capabilities', 'overlay', 'seccomp', 'tty', 'landlock', 'stop'])
const COUNT_LIMITS = ['outputBytes', 'openFiles', 'fileSizeBytes', 'stackBytes', 'memoryBytes', 'pids', 'cpuTimeMs'] as const
const LIMITS = [...COUNT_LIMITS, 'cpus', 'timeoutMs', 'coreDumps']

/** What child_process, docker and other sandboxes call some of these options, and their name here. */
const NAMED_HERE: Record<string, string> = {
  timeout: 'timeoutMs',
  memory: 'limits.memoryBytes',
  memoryLimit: 'limits.memoryBytes',
  memoryBytes: 'limits.memoryBytes',
  maxMemory: 'limits.memoryBytes',
  pids: 'limits.pids',
  pidsLimit: 'limits.pids',
  cpus: 'limits.cpus',
  cpuTimeMs: 'limits.cpuTimeMs',
  outputBytes: 'limits.outputBytes',
  uid: 'user',
  gid: 'user',
  net: 'network',
  binds: 'mounts',
  volumes: 'mounts',
  root: 'rootfs',
  ids: 'user',
  caps: 'capabilities',
  mem: 'limits.memoryBytes',
  workdir: 'cwd',
  workingDirectory: 'cwd',
  openFiles: 'limits.openFiles',
  fileSizeBytes: 'limits.fileSizeBytes',
  stackBytes: 'limits.stackBytes',
  stackSize: 'limits.stackBytes',
  coreDumps: 'limits.coreDumps',
  killSignal: 'stop: { signal, graceMs } (the command gets signal at the timeout or an abort, SIGKILL after the grace); a Sandbox takes any signal from sb.kill(signal)',
  shell: "the command '/bin/sh' with args ['-c', script]",
  cmd: 'the call\'s file and args',
  command: 'the call\'s file and args',
  argv: 'the call\'s file and args',
}
const LIMIT_NAMED_HERE: Record<string, string> = { memory: 'memoryBytes', mem: 'memoryBytes', memoryLimit: 'memoryBytes', timeout: 'timeoutMs', cpu: 'cpus', cpuTime: 'cpuTimeMs', output: 'outputBytes', fileSize: 'fileSizeBytes', nofile: 'openFiles', core: 'coreDumps', stack: 'stackBytes', stackSize: 'stackBytes' }

/** `key`, given among `where`'s options, is none of `known`: the error names what it likely meant and lists the others. */
function unknownOption(key: string, where: string, known: readonly string[], namedHere: Record<string, string>, prefix = ''): Error {
  const near = Object.hasOwn(namedHere, key) ? key : nearest(key, [...known, ...Object.keys(namedHere)])
  const meant = near === undefined ? undefined : Object.hasOwn(namedHere, near) ? namedHere[near] : near
  const guess = meant === undefined ? '' : /^[\w.]+$/.test(meant) ? ` (did you mean ${prefix}${meant}?)` : ` (here: ${meant})`
  return optionError(`${prefix}${key}`, `is not ${where}${guess}; ${prefix ? 'the limits are' : 'its options are'} ${known.join(', ')}`)
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const isUint = (v: unknown, max = 2 ** 32 - 1): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max

/** Half of a UTF-16 surrogate pair, alone: it has no UTF-8 form, so the helper could not be given it. */
export const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/

function str(option: string, v: unknown): string {
  if (typeof v !== 'string') throw optionError(option, `must be a string, got ${typeof v}`)
  if (LONE_SURROGATE.test(v)) throw optionError(option, 'holds a lone UTF-16 surrogate, which has no UTF-8 form')
  if (v.includes('\0')) throw optionError(option, 'holds a NUL character, which no path, name or argument of a process can')
  return v
}

/**
 * The most descriptors a sandbox's command may be allowed: its init sets the limit inside a user
 * namespace, where a hard limit can be lowered but not raised, so this process's own hard
 * RLIMIT_NOFILE (and fs.nr_open, the kernel's). Read when the option is given, so never stale.
 */
function mostOpenFiles(): { n: number; why: string } | undefined {
  const hard = hardLimit('Max open files')
  const nrOpen = Number.parseInt(orElse(() => readFileSync('/proc/sys/fs/nr_open', 'utf8'), ''), 10)
  const bounds = [
    ...(hard ? [{ n: hard, why: "this process's own hard RLIMIT_NOFILE (ulimit -Hn), which a sandbox cannot raise" }] : []),
    ...(Number.isSafeInteger(nrOpen) && nrOpen > 0 ? [{ n: nrOpen, why: "the kernel's fs.nr_open" }] : []),
  ]
  return bounds.sort((a, b) => a.n - b.n)[0]
}

/** The smallest limits.stackBytes taken: below ~16 KiB the dynamic loader itself faults, below ~72 KiB python3. */
const MIN_STACK = 256 << 10

/**
 * This process's hard limit of the /proc/self/limits row `name` ('Max stack size'); undefined
 * when unlimited or unknown (the helper's setrlimit tells then).
 */
function hardLimit(name: string): number | undefined {
  const row = orElse(() => readFileSync('/proc/self/limits', 'utf8'), '').split('\n').find((l) => l.startsWith(name + ' '))
  const hard = /^\S+\s+(\d+)/.exec(row?.slice(name.length).trim() ?? '')?.[1]
  return hard === undefined ? undefined : Number(hard)
}

/** `f()`, or `fallback` where it throws: a fact of the host that the helper checks again anyway. */
function orElse<T>(f: () => T, fallback: T): T {
  try {
    return f()
  } catch {
    return fallback
  }
}

/** The command and its arguments, checked here so that an error names the one at fault. */
function commandLine(file: unknown, args: unknown): { file: string; args: string[] } {
  if (typeof file !== 'string' || file.length === 0) throw optionError('file', 'must be a non-empty string')
  if (file.includes('\0')) throw optionError('file', 'must not contain NUL')
  str('file', file)
  if (args === undefined) args = []
  if (!isArrayOption('args', args)) throw optionError('args', 'must be an array of strings')
  // One copy, read once (a Proxy's traps or getters then answer no more), each entry checked as
  // it is read; by hand, not ownOptions, whose bound on entries is an option's.
  const source = args as unknown[]
  const copied: string[] = []
  const read = (what: () => unknown) => {
    try {
      return what()
    } catch (e) {
      throw optionError('args', `could not be read: ${(e as Error)?.message ?? shown(e)}`)
    }
  }
  // Bounded before anything is made of it: an array's length (or a Proxy's) may say 2^32-1.
  const length = read(() => source.length) as number
  if (!(length <= MOST_ARGS)) throw optionError('args', `holds ${shown(length)} entries; at most ${MOST_ARGS} are taken (execve takes at most 6 MiB of arguments and environment together, a pointer and a NUL byte each at least)`)
  for (let i = 0; i < length; i++) {
    const a = read(() => (Object.hasOwn(source, i) ? source[i] : undefined))
    if (typeof a !== 'string') throw optionError(`args[${i}]`, `must be a string, got ${shown(a)}`)
    copied.push(str(`args[${i}]`, a))
  }
  return { file, args: copied }
}

/** More arguments than execve can take (at most 6 MiB of them and the environment, 9 bytes each at least). */
const MOST_ARGS = 1 << 20

/** An environment variable's name: `=` in it would make `KEY=VALUE` name another variable. */
function envName(option: string, k: unknown): string {
  if (typeof k !== 'string') throw optionError(option, `must be a variable name, got ${shown(k)}`)
  if (k.length === 0 || k.includes('=') || k.includes('\0')) throw optionError(option, `must be a variable name: not empty, without '=' or NUL, got ${shown(k)}`)
  return str(option, k)
}

/** A host path, relative ones from the working directory; '' is refused (it would be that directory). */
function hostPath(option: string, v: unknown): string {
  const p = str(option, v)
  if (p === '') throw optionError(option, 'must be a host path, got \'\' (for the working directory, say \'.\')')
  return resolve(p)
}

/**
 * A directory of the sandbox's root, by its real path: the caller's symlinks are followed here,
 * once; the helper then opens that path with no symlink on the way, so one swapped in since (by
 * whoever may write a directory on it) is refused rather than followed to the host.
 */
function realPath(p: string): string {
  return orElse(() => realpathSync(p), p)
}

/** A layer of a stacked root: a host directory, never the host's '/' (its whole tree as the root). */
function layerDir(option: string, v: unknown): string {
  const p = realPath(hostPath(option, v))
  if (p === '/') throw optionError(option, `${shown(v)} is the host's '/', which would expose the whole host; use rootfs 'host' for a read-only view of its system directories`)
  if (orElse(() => !statSync(p).isDirectory(), false)) throw optionError(option, `must be a directory (a layer of the root), got the file ${shown(p)}`)
  return p
}

function insidePath(option: string, v: unknown): string {
  const p = str(option, v)
  if (!p.startsWith('/')) throw optionError(option, `must be an absolute path inside the sandbox, got ${shown(p)}`)
  return p
}

export interface Normalized {
  spec: Spec
  stdio: [StdioMode, StdioMode, StderrMode]
  signal?: AbortSignal
  command: string
}

export function normalize(file: unknown, args: unknown, options: unknown, api = 'spawnIsolated'): Normalized {
  const cmd = commandLine(file, args)
  if (options === undefined) options = {}
  options = ownOptions(options)
  if (!isObject(options)) throw optionError('', 'must be an object')
  const o = options as SpawnOptions & Record<string, unknown>
  for (const key of Object.keys(o)) {
    if (RUN_ONLY.includes(key)) throw optionError(key, `is an option of runIsolated and sb.exec, which collect the output; ${api} gives streams`)
    if (!KNOWN.has(key)) throw unknownOption(key, `an option of ${api}`, optionsOf(api), NAMED_HERE)
  }

  let rootfs: Spec['rootfs'] = { kind: 'host' }
  if (isObject(o.rootfs)) {
    for (const k of Object.keys(o.rootfs)) if (k !== 'layers') throw optionError(`rootfs.${k}`, 'is not a field of rootfs ({ layers }); a writable layer on top is the overlay option')
    const layers = (o.rootfs as { layers?: unknown }).layers
    if (!Array.isArray(layers) || layers.length === 0) throw optionError('rootfs.layers', 'must be a non-empty array of layer directories, topmost first')
    rootfs = { kind: 'layers', paths: layers.map((p, i) => layerDir(`rootfs.layers[${i}]`, p)) }
  } else if (o.rootfs !== undefined && o.rootfs !== 'host') {
    if (str('rootfs', o.rootfs) === '') throw optionError('rootfs', "must be 'host', a directory or { layers }, got ''")
    const dir = realPath(resolve(o.rootfs))
    // The helper refuses the host's root too, by what it opens.
    if (dir === '/') throw optionError('rootfs', `${shown(o.rootfs)} is the host's '/', which would expose the whole host; use 'host' for a read-only view of its system directories`)
    rootfs = { kind: 'dir', path: dir }
    // An image imported as layers: stack them rather than read the directory as a tree.
    const manifest = layersManifest(dir) as { lowerDirs?: unknown } | undefined
    if (manifest && Array.isArray(manifest.lowerDirs) && manifest.lowerDirs.every((d) => typeof d === 'string')) {
      rootfs = { kind: 'layers', paths: importedLayers(dir, manifest.lowerDirs as string[]) }
    }
  }

  const mounts: Spec['mounts'] = []
  if (o.mounts !== undefined && !Array.isArray(o.mounts)) throw optionError('mounts', 'must be an array')
  for (const [i, m] of (o.mounts ?? []).entries()) {
    const opt = `mounts[${i}]`
    if (!isObject(m)) throw optionError(opt, 'must be an object')
    if (m.type !== 'bind' && m.type !== 'overlay' && m.type !== 'tmpfs') {
      const near = typeof m.type === 'string' ? nearest(m.type, ['bind', 'overlay', 'tmpfs']) : undefined
      throw optionError(`${opt}.type`, `must be 'bind', 'tmpfs' or 'overlay', got ${shown(m.type)}${near ? ` (did you mean '${near}'?)` : ''}`)
    }
    for (const key of Object.keys(m)) {
      const allowed = m.type === 'bind' ? ['type', 'source', 'target', 'readonly'] : m.type === 'overlay' ? ['type', 'source', 'target'] : ['type', 'target', 'sizeBytes', 'mode']
      if (!allowed.includes(key)) throw optionError(`${opt}.${key}`, `is not a field of a ${shown(m.type)} mount`)
    }
    if (m.type === 'bind') {
      if (m.readonly !== undefined && typeof m.readonly !== 'boolean') throw optionError(`${opt}.readonly`, 'must be a boolean')
      mounts.push({ type: 'bind', source: hostPath(`${opt}.source`, m.source), target: insidePath(`${opt}.target`, m.target), readonly: m.readonly ?? true })
    } else if (m.type === 'overlay') {
      const source = hostPath(`${opt}.source`, m.source)
      // Found by the kernel, it is an EINVAL of overlayfs naming an internal layer; one that is
      // missing is left to the helper, whose error names the step and the path.
      if (orElse(() => !statSync(source).isDirectory(), false)) throw optionError(`${opt}.source`, `must be a directory (the overlay's lower layer), got the file ${shown(source)}`)
      mounts.push({ type: 'overlay', source, target: insidePath(`${opt}.target`, m.target) })
    } else if (m.type === 'tmpfs') {
      if (m.sizeBytes !== undefined && !(isUint(m.sizeBytes, Number.MAX_SAFE_INTEGER) && m.sizeBytes > 0)) throw optionError(`${opt}.sizeBytes`, 'must be a positive integer')
      if (m.mode !== undefined && !isUint(m.mode, 0o7777)) throw optionError(`${opt}.mode`, 'must be a file mode such as 0o755')
      mounts.push({ type: 'tmpfs', target: insidePath(`${opt}.target`, m.target), sizeBytes: m.sizeBytes, mode: m.mode })
    }
  }

  const network = o.network ?? 'none'
  if (network !== 'none' && network !== 'host') throw optionError('network', `must be 'none' or 'host', got ${shown(network)}`)
  const namespaces: Record<NamespaceName, boolean> = { user: true, mount: true, pid: true, uts: true, ipc: true, net: network === 'none', cgroup: true }
  if (o.namespaces !== undefined) {
    if (!isObject(o.namespaces)) throw optionError('namespaces', 'must be an object of booleans')
    for (const [k, v] of Object.entries(o.namespaces)) {
      if (!Object.hasOwn(namespaces, k)) throw optionError(`namespaces.${k}`, `is not a namespace; one of ${Object.keys(namespaces).join(', ')}`)
      if (typeof v !== 'boolean') throw optionError(`namespaces.${k}`, 'must be a boolean')
      namespaces[k as NamespaceName] = v
    }
  }

  // No prototype: an `env.PATH` set on Object.prototype is not this one's.
  const env: Record<string, string> = Object.create(null)
  if (o.inheritEnv === true) {
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v
  } else if (Array.isArray(o.inheritEnv)) {
    for (const [i, k] of o.inheritEnv.entries()) {
      const v = process.env[envName(`inheritEnv[${i}]`, k)]
      if (v !== undefined) env[k] = v
    }
  } else if (o.inheritEnv !== undefined && o.inheritEnv !== false) {
    throw optionError('inheritEnv', 'must be a boolean or an array of variable names')
  }
  if (o.env === undefined) {
    if (env.PATH === undefined) env.PATH = DEFAULT_PATH
  } else {
    if (!isObject(o.env)) throw optionError('env', 'must be an object of strings')
    for (const [k, v] of Object.entries(o.env)) env[envName(`env.${k}`, k)] = str(`env.${k}`, v)
  }

  // Without a user namespace the ids are the host's: by default the unprivileged ones a root
  // caller's sandboxes map their root to, never host root (validation refuses 0).
  const user = o.user ?? (namespaces.user ? { uid: 0, gid: 0 } : sandboxHostIds())
  if (!isObject(user) || !isUint(user.uid) || !isUint(user.gid)) throw optionError('user', 'must be { uid, gid } with integer ids')
  // Supplementary groups cannot be chosen: a root caller's command has none (setgroups clears
  // them); an ordinary user's keeps the caller's own, which no unprivileged process may drop.
  for (const k of Object.keys(user)) if (k !== 'uid' && k !== 'gid') throw optionError(`user.${k}`, k === 'groups' ? "is not an option: supplementary groups cannot be chosen (a root caller's command has none; an ordinary user's keeps the caller's own)" : 'is not a field of user ({ uid, gid })')

  // No prototype: a limit set on Object.prototype is never read as one.
  const limits = o.limits ?? Object.create(null)
  if (!isObject(limits)) throw optionError('limits', 'must be an object')
  for (const key of Object.keys(limits)) {
    if (!LIMITS.includes(key)) throw unknownOption(key, 'a limit', api === 'createSandbox' ? LIMITS.filter((k) => k !== 'outputBytes') : LIMITS, LIMIT_NAMED_HERE, 'limits.')
  }
  const specLimits: Spec['limits'] = {}
  for (const key of COUNT_LIMITS) {
    const v = (limits as Record<string, unknown>)[key]
    if (v === undefined) continue
    if (key === 'pids' && v === Infinity) {
      specLimits.unboundedPids = true
      continue
    }
    const positive = key !== 'outputBytes' && key !== 'fileSizeBytes'
    if (!(isUint(v, Number.MAX_SAFE_INTEGER) && (!positive || v > 0))) throw optionError(`limits.${key}`, key === 'pids' ? 'must be a positive integer, or Infinity for no bound' : positive ? 'must be a positive integer' : 'must be a non-negative integer')
    specLimits[key] = v
  }
  const most = specLimits.openFiles === undefined ? undefined : mostOpenFiles()
  if (specLimits.openFiles !== undefined && most !== undefined && specLimits.openFiles > most.n) {
    throw optionError('limits.openFiles', `must be at most ${most.n}, ${most.why}, got ${specLimits.openFiles}`)
  }
  const stackHard = specLimits.stackBytes === undefined ? undefined : hardLimit('Max stack size')
  if (specLimits.stackBytes !== undefined && specLimits.stackBytes < MIN_STACK) {
    throw optionError('limits.stackBytes', `must be at least ${MIN_STACK} (256 KiB): a smaller stack crashes programs (SIGSEGV) before their main, which reads as the program's own crash; got ${specLimits.stackBytes}`)
  }
  if (specLimits.stackBytes !== undefined && stackHard !== undefined && specLimits.stackBytes > stackHard) {
    throw optionError('limits.stackBytes', `must be at most ${stackHard}, this process's own hard RLIMIT_STACK (ulimit -Hs, in KiB there), which a sandbox cannot raise; got ${specLimits.stackBytes}`)
  }
  if (limits.cpus !== undefined) {
    if (typeof limits.cpus !== 'number' || !Number.isFinite(limits.cpus) || limits.cpus <= 0) throw optionError('limits.cpus', 'must be a positive fraction of cores (0.5 is half a core)')
    specLimits.cpus = limits.cpus
  }
  if (limits.coreDumps !== undefined) {
    if (typeof limits.coreDumps !== 'boolean') throw optionError('limits.coreDumps', 'must be a boolean')
    specLimits.coreDumps = limits.coreDumps
  }
  const timeoutMs = limits.timeoutMs ?? o.timeoutMs
  if (limits.timeoutMs !== undefined && o.timeoutMs !== undefined) throw optionError('timeoutMs', 'given twice (also as limits.timeoutMs)')
  if (timeoutMs !== undefined && !(isUint(timeoutMs, Number.MAX_SAFE_INTEGER) && timeoutMs > 0)) throw optionError(limits.timeoutMs !== undefined ? 'limits.timeoutMs' : 'timeoutMs', 'must be a positive integer of milliseconds')

  if (o.capabilities !== undefined && !Array.isArray(o.capabilities)) throw optionError('capabilities', 'must be an array of capability names')
  const capabilities = (o.capabilities ?? []).map((c, i) => str(`capabilities[${i}]`, c))

  let landlock: Spec['landlock']
  if (o.landlock !== undefined) {
    if (!isObject(o.landlock)) throw optionError('landlock', 'must be { read?, write?, exec? } lists of paths')
    const list = (k: 'read' | 'write' | 'exec'): string[] => {
      const v = (o.landlock as Record<string, unknown>)[k]
      if (v === undefined) return []
      if (!Array.isArray(v)) throw optionError(`landlock.${k}`, 'must be an array of paths')
      return v.map((p, i) => insidePath(`landlock.${k}[${i}]`, p))
    }
    for (const k of Object.keys(o.landlock)) if (!['read', 'write', 'exec'].includes(k)) throw optionError(`landlock.${k}`, 'is not a Landlock list (read, write, exec)')
    landlock = { read: list('read'), write: list('write'), exec: list('exec') }
  }

  let seccomp: Spec['seccomp'] = { mode: 'default' }
  const tooLong = `a profile is at most ${MOST_PROFILE_JSON >> 20} MiB as JSON text`
  if (o.seccomp === 'none') seccomp = { mode: 'none' }
  else if (isObject(o.seccomp)) {
    let json: string | undefined
    try {
      json = boundedJson(o.seccomp, MOST_PROFILE_JSON)
    } catch (e) {
      if (e instanceof JsonTooLong) throw optionError('seccomp', `${tooLong}; this one is more (an object held in several places of it counts once for each)`)
      throw optionError('seccomp', `a profile must be plain JSON data: ${(e as Error).message}`)
    }
    // A toJSON of its own may turn it into anything, or nothing.
    if (json === undefined || !json.startsWith('{')) throw optionError('seccomp', 'a profile must be a JSON object (its toJSON gave something else)')
    seccomp = { mode: 'profile', json }
  }
  else if (typeof o.seccomp === 'string' && o.seccomp !== 'default') {
    if (o.seccomp.length > MOST_PROFILE_JSON) throw optionError('seccomp', `${tooLong}; this one has ${o.seccomp.length} characters`)
    let parsed: unknown
    try {
      parsed = JSON.parse(o.seccomp)
    } catch (e) {
      throw optionError('seccomp', `must be 'default', 'none', or a Docker/OCI seccomp profile (an object or its JSON text); this text is not JSON: ${shown((e as Error).message)}`)
    }
    if (!isObject(parsed)) throw optionError('seccomp', "must be 'default', 'none', or a Docker/OCI seccomp profile (an object or its JSON text); this JSON text is no object")
    seccomp = { mode: 'profile', json: o.seccomp }
  } else if (o.seccomp !== undefined && o.seccomp !== 'default') throw optionError('seccomp', "must be 'default', 'none', or a Docker/OCI seccomp profile")

  let overlay: Spec['overlay']
  if (o.overlay === true) overlay = {}
  else if (isObject(o.overlay)) {
    for (const k of Object.keys(o.overlay)) if (k !== 'upper' && k !== 'sizeBytes') throw optionError(`overlay.${k}`, 'is not an overlay field (upper, sizeBytes)')
    const ov = o.overlay as { upper?: unknown; sizeBytes?: unknown }
    if (ov.sizeBytes !== undefined && !(isUint(ov.sizeBytes, Number.MAX_SAFE_INTEGER) && ov.sizeBytes > 0)) throw optionError('overlay.sizeBytes', 'must be a positive integer')
    overlay = { ...(ov.upper !== undefined ? { upper: hostPath('overlay.upper', ov.upper) } : {}), ...(ov.sizeBytes !== undefined ? { sizeBytes: ov.sizeBytes as number } : {}) }
  } else if (o.overlay !== undefined && o.overlay !== false) throw optionError('overlay', 'must be true, false or { upper?, sizeBytes? }')

  const tty = parseTty(o.tty)
  const stdio = parseStdio(o.stdio)
  const stop = parseStop(o.stop)

  if (o.signal !== undefined && !isAbortSignal(o.signal)) throw optionError('signal', 'must be an AbortSignal')

  const spec: Spec = ownFields({
    file: cmd.file,
    args: cmd.args,
    env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
    cwd: o.cwd === undefined ? '/' : insidePath('cwd', o.cwd),
    rootfs,
    mounts,
    hostname: o.hostname === undefined ? 'sandbox' : hostnameOption(o.hostname, namespaces.uts),
    network,
    namespaces,
    user: { uid: user.uid, gid: user.gid },
    limits: timeoutMs === undefined ? specLimits : { ...specLimits, timeoutMs },
    capabilities,
    seccomp,
    ...(landlock ? { landlock } : {}),
    ...(overlay ? { overlay } : {}),
    ...(tty ? { tty } : {}),
    ...(stop ? { stop } : {}),
  })
  return { spec, stdio, signal: o.signal, command: [cmd.file, ...cmd.args].join(' ') }
}

const UNFORWARDED = ['SIGKILL', 'SIGSTOP', 'SIGSEGV', 'SIGBUS', 'SIGILL', 'SIGFPE', 'SIGTRAP', 'SIGSYS', 'SIGCHLD'] as const

const STOP_FIELDS = ['signal', 'graceMs', 'group']

function parseStop(v: unknown): Spec['stop'] {
  if (v === undefined) return undefined
  if (!isObject(v)) throw optionError('stop', "must be { signal?, graceMs, group? }: the command's signal at the timeout or an abort, and how long it has before it is killed")
  for (const k of Object.keys(v)) if (!STOP_FIELDS.includes(k)) throw optionError(`stop.${k}`, 'is not a field of stop ({ signal?, graceMs, group? })')
  const { signal = 'SIGTERM', graceMs, group } = v as { signal?: unknown; graceMs?: unknown; group?: unknown }
  if (!(isUint(graceMs, Number.MAX_SAFE_INTEGER) && graceMs > 0)) throw optionError('stop.graceMs', 'must be a positive integer of milliseconds')
  if (group !== undefined && typeof group !== 'boolean') throw optionError('stop.group', 'must be true or false')
  let n: number
  try {
    n = signalNumber(signal as SignalName)
  } catch (e) {
    throw optionError('stop.signal', (e as Error).message)
  }
  // The init forwards neither what the command cannot handle nor what the kernel sends the init
  // itself (a fault's, a child's end).
  if (UNFORWARDED.some((name) => signalNumber(name) === n)) {
    throw optionError('stop.signal', `must be a signal the command can handle and the sandbox's init forwards (SIGTERM, SIGINT, SIGHUP, SIGUSR1, ...), not ${shown(signal)}${n === signalNumber('SIGKILL') ? ': without stop the sandbox is killed at once' : ''}`)
  }
  return { signal: n, graceMs, ...(group ? { group: true as const } : {}) }
}

function parseTty(v: unknown): Spec['tty'] {
  if (v === undefined || v === false) return undefined
  if (v === true) return { rows: 24, cols: 80 }
  if (isObject(v)) {
    const t = v as { rows?: unknown; cols?: unknown }
    if (isUint(t.rows, 65535) && isUint(t.cols, 65535) && t.rows > 0 && t.cols > 0) return { rows: t.rows, cols: t.cols }
    throw optionError('tty', 'must be true or { rows, cols } with sizes from 1 to 65535')
  }
  throw optionError('tty', 'must be true, false or { rows, cols }')
}

function parseStdio(v: unknown): [StdioMode, StdioMode, StderrMode] {
  let stdio: [StdioMode, StdioMode, StderrMode]
  const s = v ?? 'pipe'
  if (s === 'stdout') throw optionError('stdio', "'stdout' is a mode of stdio[2] only: ['pipe', 'pipe', 'stdout'] sends stderr where stdout goes")
  if (typeof s === 'string' || typeof s === 'number') stdio = [s, s, s] as [StdioMode, StdioMode, StdioMode]
  else if (Array.isArray(s) && s.length === 3) stdio = [s[0], s[1], s[2]]
  else throw optionError('stdio', "must be 'pipe', 'inherit', 'ignore', an fd, or an array of three of those ('stdout' too as the third)")
  stdio.forEach((m, i) => {
    if (m === 'stdout' && i !== 2) throw optionError(`stdio[${i}]`, "'stdout' is a mode of stdio[2] only (stderr where stdout goes)")
    if (!(m === 'pipe' || m === 'inherit' || m === 'ignore' || m === 'stdout' || isUint(m, 2 ** 31 - 1))) throw optionError(`stdio[${i}]`, `unknown mode ${shown(m)}`)
    if (typeof m === 'number' && !orElse(() => fstatSync(m) !== undefined, false)) throw optionError(`stdio[${i}]`, `fd ${m} is not open in this process`)
  })
  return stdio
}

/** Options of `createSandbox`: those of `spawnIsolated` that describe the sandbox, not one command. */
/** `limits.outputBytes` is refused in this version (a sandbox's output is its execs'). */
/**
 * Its `stop` ends it gracefully at `destroy()`, its `timeoutMs` or an abort of its `signal`: every
 * process in it gets the signal, and the sandbox is killed after `graceMs`, or once none is left.
 */
export type SandboxOptions = Omit<SpawnOptions, 'stdio' | 'tty' | 'limits' | 'stop'> & { limits?: Omit<Limits, 'outputBytes'> & { outputBytes?: never }; stop?: Omit<Stop, 'group'> }

const PER_EXEC = ['stdio', 'tty', ...RUN_ONLY]

/** The options `api` takes, as its errors list them. */
function optionsOf(api: string): string[] {
  if (api === 'runIsolated') return [...KNOWN, ...RUN_ONLY]
  if (api === 'createSandbox') return [...KNOWN].filter((k) => !PER_EXEC.includes(k))
  return [...KNOWN]
}

/** The spec of a long-lived sandbox: no command of its own; env and cwd become its execs' defaults. */
export function normalizeSandbox(options: unknown): { spec: Spec; signal?: AbortSignal } {
  options = ownOptions(options)
  if (isObject(options)) {
    for (const key of PER_EXEC) if (key in options) throw optionError(key, `is an option of each exec (${RUN_ONLY.includes(key) ? 'sb.exec' : 'sb.exec, sb.spawn'}), not of createSandbox`)
    const stop = (options as { stop?: unknown }).stop
    if (isObject(stop) && 'group' in stop) throw optionError('stop.group', "is an option of a command's stop (spawnIsolated, each exec): a long-lived sandbox's stop goes to every process in it")
  }
  const { spec, signal } = normalize('-', [], options, 'createSandbox')
  return { spec: ownFields({ ...spec, file: '', persistent: true }), signal }
}

/** Options of one command run in a long-lived sandbox. */
export interface ExecOptions {
  /** Set over the sandbox's own `env` (which every exec starts from). */
  env?: Record<string, string>
  /** Inside the sandbox. Default: the sandbox's `cwd`. */
  cwd?: string
  /** A terminal for this command: `true` (80x24) or `{ rows, cols }`; its output is all on stdout. */
  tty?: boolean | { rows: number; cols: number }
  /** Default `'pipe'`. With a tty, stderr is the terminal too and its slot is ignored. */
  stdio?: Stdio
  /**
   * This command's wall clock, from its execve (its wait to be started is bounded by it too,
   * apart): its process group is killed and the reason is `'timeout'`.
   */
  timeoutMs?: number
  /**
   * Ends this command: its process group is killed (SIGKILL) and the reason is `'canceled'`; the
   * sandbox lives on. Aborted before the call resolved: it rejects with `ABORT_ERR`.
   */
  signal?: AbortSignal
  /**
   * A graceful end at its timeout or an abort: the command (with `group: true`, its process
   * group) is sent `signal` (default `'SIGTERM'`), and its process group is killed after
   * `graceMs`, or as soon as the command ends. The reason stays `'timeout'` or `'canceled'`.
   */
  stop?: Stop
}

/** The JSON shape of isolate_core::protocol::ExecRequest. */
export interface ExecRequest {
  id: number
  file: string
  args: string[]
  env: string[]
  cwd: string
  tty?: { rows: number; cols: number }
  timeoutMs?: number
  stop?: Spec['stop']
}

const EXEC_KNOWN = new Set(['env', 'cwd', 'tty', 'stdio', 'timeoutMs', 'signal', 'stop'])

export function normalizeExec(file: unknown, args: unknown, options: unknown, base: Spec): { request: Omit<ExecRequest, 'id'>; stdio: [StdioMode, StdioMode, StderrMode]; command: string; signal?: AbortSignal } {
  const cmd = commandLine(file, args)
  if (options === undefined) options = {}
  options = ownOptions(options)
  if (!isObject(options)) throw optionError('', 'must be an object')
  const o = options as ExecOptions & Record<string, unknown>
  for (const key of Object.keys(o)) {
    if (RUN_ONLY.includes(key)) throw optionError(key, 'is an option of sb.exec, which collects the output; sb.spawn gives streams')
    if (!EXEC_KNOWN.has(key)) throw unknownOption(key, 'an option of sb.spawn or sb.exec', [...EXEC_KNOWN, ...RUN_ONLY], { timeout: 'timeoutMs', shell: NAMED_HERE.shell })
  }
  const env = new Map(base.env.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]))
  if (o.env !== undefined) {
    if (!isObject(o.env)) throw optionError('env', 'must be an object of strings')
    for (const [k, v] of Object.entries(o.env)) env.set(envName(`env.${k}`, k), str(`env.${k}`, v))
  }
  if (o.timeoutMs !== undefined && !(isUint(o.timeoutMs, Number.MAX_SAFE_INTEGER) && o.timeoutMs > 0)) throw optionError('timeoutMs', 'must be a positive integer of milliseconds')
  if (o.signal !== undefined && !isAbortSignal(o.signal)) throw optionError('signal', 'must be an AbortSignal')
  const tty = parseTty(o.tty)
  const stop = parseStop(o.stop)
  const stdio = parseStdio(o.stdio)
  if (tty) stdio[2] = 'ignore'
  const request: Omit<ExecRequest, 'id'> = ownFields({
    file: cmd.file,
    args: cmd.args,
    env: [...env].map(([k, v]) => `${k}=${v}`),
    cwd: o.cwd === undefined ? base.cwd : insidePath('cwd', o.cwd),
    ...(tty ? { tty } : {}),
    ...(o.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}),
    ...(stop ? { stop } : {}),
  })
  return { request, stdio, command: [cmd.file, ...cmd.args].join(' '), signal: o.signal }
}

/**
 * The addon's encoding of a stdio slot. `ownUserNs`: the sandbox has a user namespace of its own,
 * and its pipes are made so that the command can open them again by path (`/dev/stdout`): only
 * processes of its host uid can, which no host user has for a root caller (see
 * docs/reference.md#stdio). Without one the command's uid is a host user's, whose every process could.
 */
export function stdioCode(m: StderrMode, ownUserNs: boolean): number {
  return m === 'pipe' ? (ownUserNs ? -4 : -1) : m === 'ignore' ? -2 : m === 'inherit' ? -3 : m === 'stdout' ? -5 : m
}

/**
 * The host ids a root caller's sandbox root maps to (see HostProbe.sandboxHostIds), asked of the
 * addon once: it reads them once per process too.
 */
let hostIds: { uid: number; gid: number } | null | undefined
function sandboxHostIds(): { uid: number; gid: number } {
  if (hostIds === undefined) hostIds = (loadNative().addon.probe() as { sandboxHostIds: { uid: number; gid: number } | null }).sandboxHostIds
  const ids = hostIds
  if (ids === null) throw optionError('user', 'has no default with namespaces.user false: no unprivileged host ids are free (isolate doctor says why); name one')
  return ids
}

/** A hostname needs the uts namespace it is set in: without one it would be silently the host's. */
function hostnameOption(v: unknown, uts: boolean): string {
  const name = str('hostname', v)
  if (!uts) throw optionError('hostname', 'needs the uts namespace, and namespaces.uts is false')
  return name
}

/** Far more than isolate-image writes for the most layers an overlay stacks (~500). */
const LAYERS_JSON_MAX = 64 << 10

/**
 * `dir/layers.json` parsed, where it is what isolate-image writes: a small regular file. Anything
 * else there (a symlink, a fifo, a device, a file too large to be one) came from somewhere else,
 * such as an archive unpacked as a plain tree, and makes no manifest: it is not opened, or not
 * read, since reading it here blocks the caller's thread (a fifo, /proc/self/fd/0) or fills its
 * memory (/dev/zero, a sparse file of gigabytes).
 */
function layersManifest(dir: string): unknown {
  const path = join(dir, 'layers.json')
  if (!orElse(() => lstatSync(path).isFile(), false)) return undefined
  let fd: number
  try {
    // Non-blocking and not followed: swapped for a fifo or a symlink since the lstat.
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY)
  } catch {
    return undefined
  }
  try {
    const st = fstatSync(fd)
    if (!st.isFile() || st.size > LAYERS_JSON_MAX) return undefined
    const buf = Buffer.alloc(LAYERS_JSON_MAX + 1)
    let len = 0
    for (let n; len < buf.length && (n = readSync(fd, buf, len, buf.length - len, len)) > 0; ) len += n
    return len > LAYERS_JSON_MAX ? undefined : JSON.parse(buf.toString('utf8', 0, len))
  } catch {
    return undefined
  } finally {
    closeSync(fd)
  }
}

/**
 * The layers a `layers.json` in a rootfs directory names, as isolate-image writes them: `layers/<n>`,
 * each a real directory inside it. Anything else is refused, not followed: the file may come from
 * an archive (a flat unpack or an image layer carries whatever it likes), and a layer outside the
 * directory would put host files into the sandbox.
 */
function importedLayers(dir: string, lowerDirs: string[]): string[] {
  const realDir = (p: string) => orElse(() => lstatSync(p).isDirectory(), false)
  const bad = lowerDirs.length === 0 ? '(none)' : lowerDirs.find((d) => !/^layers\/\d{1,6}$/.test(d) || !realDir(join(dir, 'layers')) || !realDir(join(dir, d)))
  if (bad !== undefined) {
    throw optionError('rootfs', `${join(dir, 'layers.json')} names the layer ${shown(bad)}, not one isolate-image made (layers/<n>, a directory inside ${dir}, no symlink): refused rather than followed`)
  }
  return lowerDirs.map((d) => join(dir, d))
}
