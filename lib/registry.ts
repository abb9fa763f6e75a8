/**
 * Where the long-lived sandboxes of `isolate create` are found: one runtime directory per user,
 * holding for each sandbox its keeper's socket (`<id>.sock`), a description (`<id>.json`), and,
 * when it was given a name, `<name>.name` (a symlink to the id).
 *
 * A keeper creates its files in that order (socket, name, description) and removes them in the
 * reverse one, so a description always has a socket beside it while the keeper lives. Whether a
 * keeper lives is asked of its socket alone: a socket nobody listens on (ECONNREFUSED) or no
 * socket at all means it is gone. Nothing is ever signalled to find out.
 */
import { lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { join, resolve } from 'node:path'
import { ID_LENGTH } from './persistent.js'

/** A sandbox id as the library makes them (12 lowercase hex digits; a little leeway). */
export const ID_RE = /^[0-9a-f]{6,64}$/
export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/

/** The kernel's bound on a unix socket path (sun_path, with its NUL). */
const SUN_PATH_MAX = 107

/** What `isolate ps` shows of a sandbox, and what its keeper wrote when it was ready. */
export interface SandboxEntry {
  id: string
  name?: string
  /** The keeper process that holds the sandbox. */
  keeperPid: number
  /** Its start time (/proc/PID/stat field 22), so that a reused pid is not taken for it. */
  keeperStart: string
  /** The host pid of the sandbox's init. */
  pid: number
  /** ISO 8601. */
  created: string
  /** `'host'` or the root filesystem's directory. */
  rootfs: string
  /** The rest of the options, for people (never the environment's values). */
  summary: Record<string, unknown>
}

/** The runtime directory cannot be used (exit 125). */
export class RegistryError extends Error {
  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message)
    this.name = 'RegistryError'
  }
}

/** No such live sandbox (exit 125). */
export class NotFoundError extends RegistryError {
  constructor(readonly ref: string, detail = 'no such sandbox', told?: { message: string; hint: string }) {
    super(told?.message ?? `${detail}: ${ref}`, told?.hint ?? "'isolate ps' lists the live sandboxes")
    this.name = 'NotFoundError'
  }
}

/**
 * No live sandbox, but a record of its end (`<id>.ended`): it ended of itself (its --timeout, its
 * init's end) or its keeper was told to end it, and an exec or rm that comes later says so.
 */
export class EndedError extends NotFoundError {
  constructor(ref: string, readonly ended: EndedEntry) {
    const named = ended.name !== undefined ? `${ended.name} (${ended.id})` : ended.id
    super(ref, undefined, {
      message: `sandbox ${named} ended at ${ended.ended.replace('T', ' ').replace(/\.\d+Z$/, ' UTC')}: ${whyEnded(ended)}`,
      hint: `'isolate ps' lists the live sandboxes; 'isolate rm ${ref}' forgets this one`,
    })
    this.name = 'EndedError'
  }
}

/** `ref`'s sandbox has just been found ended: why, when its keeper left a record of it. */
export function endedError(dir: string, ref: string): NotFoundError {
  const ended = findEnded(dir, ref)
  return ended ? new EndedError(ref, ended) : new NotFoundError(ref, 'the sandbox has ended')
}

/** What a keeper leaves when its sandbox ended other than by `isolate rm`. */
export interface EndedEntry {
  id: string
  name?: string
  /** ISO 8601. */
  ended: string
  reason: string
  exitCode: number | null
  signal: string | null
  /** Its --timeout, for the message. */
  timeoutMs?: number
}

function whyEnded(e: EndedEntry): string {
  switch (e.reason) {
    case 'timeout':
      return `its --timeout${e.timeoutMs !== undefined ? ` (${e.timeoutMs >= 1000 && e.timeoutMs % 1000 === 0 ? `${e.timeoutMs / 1000}s` : `${e.timeoutMs}ms`})` : ''} passed`
    case 'cpu-time':
      return 'its --cpu-time was used up'
    case 'oom':
      return 'its --memory limit was reached (the kernel killed its init)'
    case 'canceled':
      return 'its keeper was told to end it (SIGTERM or SIGINT)'
    case 'keeper-gone':
      return 'its keeper was found gone then, without a word (killed?), and the sandbox with it'
    default:
      return `its init ended (${e.signal ? `signal ${e.signal}` : `exit code ${e.exitCode}`})`
  }
}

/** How long an end is remembered. */
export const ENDED_KEPT_MS = 24 * 3600_000

export const endedPath = (dir: string, id: string) => join(dir, `${id}.ended`)

/** Write `<id>.ended` whole or not at all. */
export function writeEnded(dir: string, e: EndedEntry): void {
  const tmp = `${endedPath(dir, e.id)}.tmp`
  writeFileSync(tmp, `${JSON.stringify(e)}\n`, { mode: 0o600 })
  renameSync(tmp, endedPath(dir, e.id))
}

function readEnded(dir: string, file: string): EndedEntry | undefined {
  try {
    const e = JSON.parse(readFileSync(join(dir, file), 'utf8')) as EndedEntry
    const ok = typeof e.id === 'string' && `${e.id}.ended` === file && typeof e.ended === 'string' && typeof e.reason === 'string' && (e.name === undefined || typeof e.name === 'string')
    return ok ? e : undefined
  } catch {
    return undefined
  }
}

/** The records of ends in `dir`; those older than ENDED_KEPT_MS (or unreadable) are removed. */
export function endedEntries(dir: string, now = Date.now()): EndedEntry[] {
  const fresh: EndedEntry[] = []
  for (const f of readdirSync(dir)) {
    if (!f.endsWith('.ended')) continue
    const e = readEnded(dir, f)
    if (e !== undefined && now - Date.parse(e.ended) < ENDED_KEPT_MS) fresh.push(e)
    else rmSync(join(dir, f), { force: true })
  }
  return fresh
}

/** The record of `ref`'s end: an id's, or a name's latest sandbox's. */
export function findEnded(dir: string, ref: string): EndedEntry | undefined {
  return endedEntries(dir)
    .filter((e) => e.id === ref || e.name === ref)
    .sort((a, b) => b.ended.localeCompare(a.ended))[0]
}

/** `isolate rm` of an ended sandbox: its record goes (every one under that name). */
export function forgetEnded(dir: string, ref: string): void {
  for (const e of endedEntries(dir)) if (e.id === ref || e.name === ref) rmSync(endedPath(dir, e.id), { force: true })
}

/** `ISOLATE_RUNTIME_DIR`, else `/run/isolate` for root, else `$XDG_RUNTIME_DIR/isolate`, else `/tmp/isolate-<uid>`. */
export function runtimeDir(): string {
  const env = process.env.ISOLATE_RUNTIME_DIR
  if (env) return resolve(env)
  const uid = process.geteuid!()
  if (uid === 0) return '/run/isolate'
  if (process.env.XDG_RUNTIME_DIR) return join(resolve(process.env.XDG_RUNTIME_DIR), 'isolate')
  return `/tmp/isolate-${uid}`
}

/** Refuse a directory that others could read or plant sockets in. */
function checkDir(dir: string): void {
  const st = lstatSync(dir)
  if (st.isSymbolicLink()) {
    let to = ''
    try {
      to = ` to ${readlinkSync(dir)}`
    } catch {}
    // Made by another user, it may be there to keep us out of /tmp/isolate-<uid>.
    throw new RegistryError(`runtime directory ${dir} is a symbolic link${to} (made by uid ${st.uid}); refusing to use it or to make anything through it`, 'remove it, or set ISOLATE_RUNTIME_DIR to a directory of your own with mode 0700')
  }
  if (!st.isDirectory()) throw new RegistryError(`runtime directory ${dir} is not a directory`, 'remove it, or set ISOLATE_RUNTIME_DIR to a directory of your own with mode 0700')
  const uid = process.geteuid!()
  if (st.uid !== uid) throw new RegistryError(`runtime directory ${dir} belongs to uid ${st.uid}, not to us (uid ${uid}); refusing to use it`, 'set ISOLATE_RUNTIME_DIR to a directory of your own with mode 0700')
  if ((st.mode & 0o077) !== 0) {
    throw new RegistryError(`runtime directory ${dir} has mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}: others may use it; refusing to use it`, `chmod 700 ${dir}`)
  }
}

/** The runtime directory, created (mode 0700) if missing. */
export function ensureRuntimeDir(): string {
  const dir = runtimeDir()
  // Before anything is made: a keeper's socket there, named after its sandbox, must fit.
  const longest = sockPath(dir, 'f'.repeat(ID_LENGTH))
  if (Buffer.byteLength(longest) > SUN_PATH_MAX) {
    throw new RegistryError(`runtime directory ${dir} is too long for a unix socket path: its sockets' paths take ${Buffer.byteLength(longest)} bytes, ${SUN_PATH_MAX} at most`, 'set ISOLATE_RUNTIME_DIR to a shorter path')
  }
  // Looked at before anything is made: mkdir would follow a symlink there (a dangling one to
  // wherever its maker chose, or fail on it with a mere ENOENT).
  let there = true
  try {
    lstatSync(dir)
  } catch {
    there = false
  }
  if (!there) {
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 })
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new RegistryError(`cannot create the runtime directory ${dir}: ${(e as Error).message}`, 'set ISOLATE_RUNTIME_DIR to a directory you may write')
    }
  }
  checkDir(dir)
  return dir
}

/** The runtime directory if it exists (checked), else undefined: then there are no sandboxes. */
export function existingRuntimeDir(): string | undefined {
  const dir = runtimeDir()
  try {
    lstatSync(dir)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new RegistryError(`cannot use the runtime directory ${dir}: ${(e as Error).message}`)
  }
  checkDir(dir)
  return dir
}

export const sockPath = (dir: string, id: string) => join(dir, `${id}.sock`)
export const jsonPath = (dir: string, id: string) => join(dir, `${id}.json`)
export const namePath = (dir: string, name: string) => join(dir, `${name}.name`)

/** Write `<id>.json` whole or not at all (readers never see half of it). */
export function writeEntry(dir: string, entry: SandboxEntry): void {
  const tmp = `${jsonPath(dir, entry.id)}.tmp`
  writeFileSync(tmp, `${JSON.stringify(entry, null, 2)}\n`, { mode: 0o600 })
  renameSync(tmp, jsonPath(dir, entry.id))
}

/** An entry as a keeper writes it: one with fields missing or of another type is no entry (ps once crashed on one). */
function wellFormed(e: unknown): e is SandboxEntry {
  if (typeof e !== 'object' || e === null) return false
  const v = e as Record<string, unknown>
  const count = (n: unknown, least: number) => Number.isSafeInteger(n) && (n as number) >= least
  return typeof v.id === 'string' && count(v.keeperPid, 1) && typeof v.keeperStart === 'string' && count(v.pid, 0) &&
    typeof v.created === 'string' && typeof v.rootfs === 'string' && (v.name === undefined || typeof v.name === 'string') &&
    typeof v.summary === 'object' && v.summary !== null
}

export function readEntry(dir: string, id: string): SandboxEntry | undefined {
  try {
    const e = JSON.parse(readFileSync(jsonPath(dir, id), 'utf8')) as SandboxEntry
    return wellFormed(e) && e.id === id ? e : undefined
  } catch {
    return undefined
  }
}

/**
 * Take `name` for `id`, atomically (a symlink either is made or exists). A name held by a
 * sandbox whose keeper is gone is taken over. Returns the id holding it when it is in use.
 */
export async function claimName(dir: string, name: string, id: string): Promise<string | undefined> {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      symlinkSync(id, namePath(dir, name))
      return undefined
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e
    }
    const holder = nameTarget(dir, name)
    if (holder !== undefined && holder !== id && (await keeperState(dir, holder)) !== 'gone') return holder
    rmSync(namePath(dir, name), { force: true })
  }
  throw new RegistryError(`could not take the name ${name}`)
}

export function nameTarget(dir: string, name: string): string | undefined {
  try {
    const target = readlinkSync(namePath(dir, name))
    return ID_RE.test(target) ? target : undefined
  } catch {
    return undefined
  }
}

/** Remove `<name>.name` if it still points at `id`. */
export function releaseName(dir: string, name: string, id: string): void {
  if (nameTarget(dir, name) === id) rmSync(namePath(dir, name), { force: true })
}

/**
 * Is the keeper behind `<id>.sock` alive? `'gone'` only when nothing listens there (or there is
 * no socket); a keeper that does not accept in time is `'unknown'` and is left alone.
 */
export function keeperState(dir: string, id: string, timeoutMs = 2000): Promise<'alive' | 'gone' | 'unknown'> {
  return new Promise((done) => {
    const s = connect(sockPath(dir, id))
    const timer = setTimeout(() => finish('unknown'), timeoutMs)
    function finish(state: 'alive' | 'gone' | 'unknown') {
      clearTimeout(timer)
      s.destroy()
      done(state)
    }
    s.once('connect', () => finish('alive'))
    s.once('error', (e: NodeJS.ErrnoException) => finish(e.code === 'ECONNREFUSED' || e.code === 'ENOENT' || e.code === 'ENOTSOCK' ? 'gone' : 'unknown'))
  })
}

/**
 * A sandbox whose keeper was found gone without a word (killed: it records every other end
 * itself): its end is recorded as any other's, so that an exec or rm after is told, and its name
 * stays its own for as long (never taken for the start of another's ID); then its files go.
 */
function forgetGone(dir: string, id: string): void {
  const entry = readEntry(dir, id)
  if (entry && !findEnded(dir, id)) {
    try {
      writeEnded(dir, { id, ...(entry.name ? { name: entry.name } : {}), ended: new Date().toISOString(), reason: 'keeper-gone', exitCode: null, signal: null })
    } catch {}
  }
  removeFiles(dir, id)
}

/** Every file a sandbox left, for one whose keeper is gone. */
export function removeFiles(dir: string, id: string): void {
  const entry = readEntry(dir, id)
  if (entry?.name) releaseName(dir, entry.name, id)
  rmSync(jsonPath(dir, id), { force: true })
  rmSync(`${jsonPath(dir, id)}.tmp`, { force: true })
  rmSync(sockPath(dir, id), { force: true })
}

/**
 * The live sandboxes, oldest first. Files of sandboxes whose keeper is gone are removed on the
 * way (a keeper killed with SIGKILL cannot clean up after itself; its sandbox ended with it).
 */
export async function listSandboxes(dir: string | undefined = existingRuntimeDir()): Promise<SandboxEntry[]> {
  if (dir === undefined) return []
  const ids = new Set<string>()
  const names: string[] = []
  for (const f of readdirSync(dir)) {
    const m = /^(.+)\.(sock|json|json\.tmp|name)$/.exec(f)
    if (!m) continue
    if (m[2] === 'name') names.push(m[1])
    else if (ID_RE.test(m[1])) ids.add(m[1])
  }
  const states = await Promise.all([...ids].map(async (id) => [id, await keeperState(dir, id)] as const))
  const live: SandboxEntry[] = []
  const alive = new Set<string>()
  for (const [id, state] of states) {
    if (state === 'gone') {
      forgetGone(dir, id)
      continue
    }
    alive.add(id)
    const entry = readEntry(dir, id)
    // A socket without a description yet: a keeper still getting ready.
    if (entry) live.push(entry)
  }
  for (const name of names) {
    const target = nameTarget(dir, name)
    if (target === undefined || !alive.has(target)) rmSync(namePath(dir, name), { force: true })
  }
  // Records of ends older than a day go too.
  endedEntries(dir)
  return live.sort((a, b) => a.created.localeCompare(b.created) || a.id.localeCompare(b.id))
}

/** The start of an id, as `isolate exec 3f2a` takes it (docker's way); no name looks so. */
export const PREFIX_RE = /^[0-9a-f]{3,63}$/

/** The one id `prefix` starts (undefined: none); more than one is an error listing them. */
function idOfPrefix(dir: string, prefix: string): string | undefined {
  const ids = readdirSync(dir)
    .filter((f) => f.startsWith(prefix) && f.endsWith('.json'))
    .map((f) => f.slice(0, -'.json'.length))
    .filter((id) => ID_RE.test(id))
  if (ids.length > 1) throw new RegistryError(`${prefix} starts ${ids.length} sandbox IDs: ${ids.sort().join(', ')}`, 'give more of the ID, or its name')
  return ids[0]
}

/**
 * The sandbox `ref` (an id, a name, or the start of an id no name takes) names, if its keeper
 * lives. A stale one is cleaned up and then not found.
 */
export async function findSandbox(ref: string): Promise<{ dir: string; entry: SandboxEntry }> {
  const dir = existingRuntimeDir()
  if (dir === undefined) throw new NotFoundError(ref)
  let id: string | undefined
  if (ID_RE.test(ref) && readEntry(dir, ref)) id = ref
  else if (NAME_RE.test(ref)) id = nameTarget(dir, ref)
  // A name of an ended sandbox stays that sandbox's (its record says how it ended), never the
  // start of another's ID (names from before such names were refused; a day after its end,
  // when its record goes, such a name could be taken so again).
  let ended = id === undefined ? findEnded(dir, ref) : undefined
  if (id === undefined && ended === undefined && PREFIX_RE.test(ref)) id = idOfPrefix(dir, ref)
  const entry = id === undefined ? undefined : readEntry(dir, id)
  if (id === undefined || entry === undefined) {
    // A name whose sandbox's files went as this looked (its keeper ending it): its record came first.
    ended ??= findEnded(dir, ref)
    throw ended ? new EndedError(ref, ended) : new NotFoundError(ref)
  }
  if ((await keeperState(dir, id)) === 'gone') {
    forgetGone(dir, id)
    throw endedError(dir, ref)
  }
  return { dir, entry }
}

/** When host process `pid` started, in clock ticks since boot (/proc/PID/stat field 22). */
export function procStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
  } catch {
    return undefined
  }
}

/** Process `pid` (started at `start`, when known) has ended: gone, a zombie, or the pid reused. */
export function procGone(pid: number, start?: string): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    if (rest[0] === 'Z' || rest[0] === 'X') return true
    return Boolean(start) && rest[19] !== start
  } catch {
    return true
  }
}
