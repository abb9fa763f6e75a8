import { EventEmitter } from 'node:events'

/** Every failure of @isolate/core: bad options, a setup step that failed, a missing native part. */
export type IsolateErrorCode =
  | 'ERR_ISOLATE_OPTION' // an option is invalid; nothing was spawned
  | 'ERR_ISOLATE_UNSUPPORTED' // an option this version or this host cannot honour; nothing was spawned
  | 'ERR_ISOLATE_SETUP' // a sandbox setup step failed; nothing is left running
  | 'ERR_ISOLATE_NATIVE' // the addon or the helper could not be found or started
  | 'ERR_ISOLATE_HELPER' // the helper ended without reporting (killed from outside, or a bug: please report it)
  | 'ERR_ISOLATE_DESTROYED' // the long-lived sandbox has ended; nothing can run in it any more
  | 'ABORT_ERR' // the AbortSignal fired before the sandbox started (its name is 'AbortError', as Node's)

export interface IsolateErrorDetails {
  code: IsolateErrorCode
  /** The setup step that failed, named for its syscall-level action (`bind_mount`, `pivot_root`, `execve`...). */
  step?: string
  /** The path the step acted on, when it has one. */
  path?: string
  /** The errno's symbolic name (`ENOENT`, `EPERM`...). */
  errno?: string
  /** What to do about it. */
  hint?: string
  /** The option at fault, as written (`mounts[0].source`). */
  option?: string
  cause?: unknown
}

export class IsolateError extends Error {
  readonly code: IsolateErrorCode
  readonly step?: string
  readonly path?: string
  readonly errno?: string
  readonly hint?: string
  readonly option?: string

  constructor(message: string, details: IsolateErrorDetails) {
    super(details.hint ? `${message} (hint: ${details.hint})` : message, details.cause === undefined ? undefined : { cause: details.cause })
    // As Node names its own aborts (`e.name === 'AbortError'`), still an IsolateError.
    this.name = details.code === 'ABORT_ERR' ? 'AbortError' : 'IsolateError'
    this.code = details.code
    this.step = details.step
    this.path = details.path
    this.errno = details.errno
    this.hint = details.hint
    this.option = details.option
  }

  /** A plain object with every field, for logs and `--json`. */
  toJSON(): Record<string, unknown> {
    return { name: this.name, message: this.message, code: this.code, step: this.step, path: this.path, errno: this.errno, hint: this.hint, option: this.option }
  }
}

/** What {@link boundedJson} throws when the text would pass its bound. */
export class JsonTooLong extends Error {}

/**
 * `JSON.stringify(v)`, or a {@link JsonTooLong} thrown as soon as the text would pass `most`
 * characters (counted as it is written, so the work stops there too). An object held in many
 * places is written out at each: a few dozen objects, each holding the next one twice, stand for
 * more text than any memory holds, and JSON.stringify alone would never return.
 */
export function boundedJson(v: unknown, most: number): string | undefined {
  let written = 0
  const json = JSON.stringify(v, (key, value: unknown) => {
    // A String object is written as the text its toString gives: counted as that text.
    if (value instanceof String) value = String(value)
    // Keys and strings by their length (escapes may add to that: checked again below); any
    // other value, and the punctuation around each, by a few characters.
    written += key.length + (typeof value === 'string' ? value.length : 0) + 4
    if (written > most) throw new JsonTooLong()
    return value
  })
  if (json !== undefined && json.length > most) throw new JsonTooLong()
  return json
}

/** The most JSON an error message shows of a value. */
const SHOWN_MOST = 64 << 10

/** A value as an error message shows it: JSON where it has one, never a throw (BigInt, cycles) and never without end (an object held in many places). */
export function shown(v: unknown): string {
  if (typeof v === 'bigint') return `${v}n`
  // JSON would say null for NaN and the infinities, and 0 for -0.
  if (typeof v === 'number') return Object.is(v, -0) ? '-0' : String(v)
  // A long text shows its start, as JSON, and how long it is.
  if (typeof v === 'string' && v.length > SHOWN_MOST) return `${JSON.stringify(v.slice(0, 1024))}… (${v.length} characters)`
  try {
    return boundedJson(v, SHOWN_MOST) ?? String(v)
  } catch (e) {
    const what = Object.prototype.toString.call(v)
    return e instanceof JsonTooLong ? `${what} (more than ${SHOWN_MOST} characters as JSON)` : what
  }
}

/** What ownOptions made: taken as it is when it comes again (runIsolated's options, then its spawn's). */
const owned = new WeakSet<object>()
const mark = <T extends object>(v: T): T => (owned.add(v), v)

/** The most objects and arrays one call copies: options are small; a huge graph is a mistake. */
const MOST_NODES = 100_000

/**
 * `o`'s own fields in an object with no prototype: a field left out (the addon omits a missing
 * one) reads as undefined, never as what a polluted Object.prototype holds (an fd of the caller's
 * taken as a sandbox's stdio, a spec taken as long-lived).
 */
export function ownFields<T extends object>(o: T): T {
  return Object.assign(Object.create(null) as T, o)
}

/**
 * Options as the caller owns them: every object that holds options (a literal, one made in another
 * realm such as a vm context or a test runner's, one made with `Object.create(defaults)`, an
 * instance of the caller's own class) is copied into an object without a prototype: its own
 * enumerable properties, the enumerable properties of the prototypes it inherits from, and the
 * values of their getters (those kept out of `Object.keys`, as a class's accessors are, so that
 * they are read, as before, but never taken for unknown options); nothing a realm's
 * Object.prototype holds is read, so a property set there (prototype pollution elsewhere in the
 * process: `seccomp: 'none'`, `namespaces`) is never an option. Arrays are copied entry by entry.
 * The objects that are values, not options (an AbortSignal or other EventTarget, a stream or other
 * EventEmitter, a Buffer or other view) are taken as they are. An object met twice is copied once.
 * A getter that throws, a cycle, a nesting past 64 levels or more than 100000 objects is an option
 * error naming where.
 */
export function ownOptions(v: unknown, path = '', depth = 0, seen: Set<object> = new Set(), copies: Map<object, unknown> = new Map()): unknown {
  if (typeof v !== 'object' || v === null || owned.has(v)) return v
  const readable = <T>(what: () => T): T => {
    try {
      return what()
    } catch (e) {
      throw optionError(path, `could not be read: ${(e as Error)?.message ?? shown(e)}`)
    }
  }
  if (readable(() => v instanceof EventTarget || v instanceof EventEmitter || ArrayBuffer.isView(v) || v instanceof ArrayBuffer)) return v
  const where = path === '' ? 'options' : path
  // Their entries are no properties: copied as an object, a Map would be an empty one (env: no PATH).
  if (readable(() => v instanceof Map || v instanceof Set || v instanceof WeakMap || v instanceof WeakSet)) {
    throw optionError(path, `must be a plain object or array, not a ${readable(() => Object.prototype.toString.call(v).slice(8, -1))}${readable(() => v instanceof Map) ? ' (Object.fromEntries(map) makes one)' : ''}`)
  }
  if (seen.has(v)) throw optionError(path, `${where} holds itself (a cycle)`)
  if (copies.has(v)) return copies.get(v)
  if (depth >= 64) throw optionError(path, 'is nested too deep (64 levels)')
  if (copies.size >= MOST_NODES) throw optionError(path, `is past ${MOST_NODES} objects and arrays in all; options are never that many`)
  const array = readable(() => Array.isArray(v))
  const length = array ? readable(() => (v as unknown[]).length) : 0
  if (length > 65536) throw optionError(path, `has ${length} entries; at most 65536 are taken`)
  seen.add(v)
  try {
    const read = (key: string): unknown => {
      const at = array ? `${path}[${key}]` : path === '' ? key : `${path}.${key}`
      let value: unknown
      try {
        value = (v as Record<string, unknown>)[key]
      } catch (e) {
        throw optionError(at, `could not be read: ${(e as Error)?.message ?? shown(e)}`)
      }
      return ownOptions(value, at, depth + 1, seen, copies)
    }
    if (array) {
      const own = (i: number) => readable(() => Object.prototype.hasOwnProperty.call(v, i))
      const out = mark(Array.from({ length }, (_, i) => (own(i) ? read(String(i)) : undefined)))
      copies.set(v, out)
      return out
    }
    const out: Record<string, unknown> = Object.create(null)
    copies.set(v, out)
    const { listed, unlisted } = readable(() => inheritedKeys(v))
    for (const key of readable(() => Object.keys(v))) listed.add(key)
    for (const key of listed) out[key] = read(key)
    for (const key of unlisted) if (!listed.has(key)) Object.defineProperty(out, key, { value: read(key), enumerable: false })
    return mark(out)
  } finally {
    seen.delete(v)
  }
}

/** A realm's Object.prototype (this one's, a vm context's): the end of a chain, never read. */
function isRealmRoot(p: object): boolean {
  return Object.getPrototypeOf(p) === null && typeof Object.getOwnPropertyDescriptor(p, 'isPrototypeOf')?.value === 'function'
}

/**
 * What `v` inherits from the prototypes between it and its realm's root: their enumerable
 * properties (`Object.create(defaults)`) listed, their other getters (a class's accessors) not.
 * A class's methods and other non-enumerable data are not options.
 */
function inheritedKeys(v: object): { listed: Set<string>; unlisted: Set<string> } {
  const listed = new Set<string>()
  const unlisted = new Set<string>()
  for (let p = Object.getPrototypeOf(v); p !== null && !isRealmRoot(p); p = Object.getPrototypeOf(p)) {
    for (const key of Object.getOwnPropertyNames(p)) {
      const d = Object.getOwnPropertyDescriptor(p, key)!
      if (d.enumerable) listed.add(key)
      else if (d.get !== undefined) unlisted.add(key)
    }
  }
  return { listed, unlisted }
}

/** A copy of options that ownOptions made, without `keys`; the others kept as they were (listed or not). */
export function withoutKeys(options: object, keys: readonly string[]): Record<string, unknown> {
  const rest: Record<string, unknown> = Object.create(null)
  for (const key of Object.getOwnPropertyNames(options)) {
    if (!keys.includes(key)) Object.defineProperty(rest, key, Object.getOwnPropertyDescriptor(options, key)!)
  }
  return mark(rest)
}

/** The caller's own options of `api` (see ownOptions: a polluted Object.prototype's keys are never its), none unknown (a misspelt one would do nothing). */
export function callersOptions<T extends object>(options: unknown, api: string, known: readonly string[]): T {
  if (typeof options !== 'object' || options === null || isArrayOption('', options)) throw optionError('', `${api} takes an object of options (${known.join(', ')})`)
  const own = ownOptions(options) as T
  for (const k of Object.keys(own)) {
    if (known.includes(k)) continue
    const near = nearest(k, known)
    throw optionError(k, `is not an option of ${api}${near ? ` (did you mean ${near}?)` : ''}; its options are ${known.join(', ')}`)
  }
  return own
}

/** The addon's messages end with the errno's name, as `(EMFILE)`. */
const ERRNO_AT_END = /\((E[A-Z0-9]+)\)\s*$/

/** The errno named at the end of an addon's message, if any. */
export function errnoAtEnd(message: string): string | undefined {
  return ERRNO_AT_END.exec(message)?.[1]
}

/** Hints for what a caller runs out of when it starts many sandboxes or execs at once. */
export const RESOURCE_HINTS: Record<string, string> = {
  EMFILE: 'this process has too many open files: raise its RLIMIT_NOFILE (ulimit -n) or start fewer sandboxes at once (each running one holds a few descriptors of this process)',
  ENFILE: 'the system-wide file table is full (fs.file-max)',
  ENOMEM: 'the host is out of memory',
}

/** The hints of a start of a sandbox's helper: those, and the helper server's. */
export const START_HINTS: Record<string, string> = {
  ...RESOURCE_HINTS,
  EAGAIN: "a process limit of this user was reached (RLIMIT_NPROC, or the pids limit of the caller's cgroup): start fewer sandboxes at once",
  ETIMEDOUT: "this process's helper server, which forks the helpers, took more than 10 s to answer (a host too loaded to fork, or the server was stopped): the start fails rather than hand the sandbox to a second helper beside one the server may have made; the next start begins a new server",
  ECONNRESET: "this process's helper server, which forks the helpers, ended (killed?) after it was sent this start: the start fails rather than hand the sandbox to a second helper beside one the server may have made; the next start begins a new server",
}

/** `Array.isArray(v)`, or the option error of a value that cannot say (a revoked Proxy throws). */
export function isArrayOption(option: string, v: unknown): boolean {
  try {
    return Array.isArray(v)
  } catch (e) {
    throw optionError(option, `could not be read: ${(e as Error)?.message ?? shown(e)}`)
  }
}

/** Edits from `a` to `b` (a letter added, removed or changed, or two neighbours swapped), for a typo's nearest name. */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)))
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1)
    }
  }
  return d[a.length][b.length]
}

/**
 * The one of `names` that `typed` most likely misspells (case aside), if any: at most `edits`
 * edits away, by default one for a name of up to 4 letters (many options are one or two edits
 * from any short word), two for a longer one.
 */
export function nearest(typed: string, names: Iterable<string>, edits = typed.length <= 4 ? 1 : 2): string | undefined {
  // A long key is no typo of a short name (and its table would cost its length times theirs).
  if (typed.length <= 2 || typed.length > 64) return undefined
  const lower = typed.toLowerCase()
  let best: string | undefined
  let bestDistance = edits + 1
  for (const name of names) {
    const d = editDistance(lower, name.toLowerCase())
    if (d < bestDistance) [best, bestDistance] = [name, d]
  }
  return best
}

/** `options.NAME: message`; `options: message` for the options object itself (`option` ''). */
const named = (option: string) => (option === '' ? 'options' : `options.${option}`)

export function optionError(option: string, message: string): IsolateError {
  return new IsolateError(`${named(option)}: ${message}`, { code: 'ERR_ISOLATE_OPTION', option })
}

export function unsupported(option: string, message: string): IsolateError {
  return new IsolateError(`${named(option)}: ${message}`, { code: 'ERR_ISOLATE_UNSUPPORTED', option })
}

/** A sandbox's helper ended without telling how its sandbox ended: only a SIGKILL from outside
 * (it ignores the stop signals) or a crash does that; the sandbox's processes went with it. */
export function helperGone(pid: number): IsolateError {
  // 0: forked by the helper server, which reaps it; this process never had its pid.
  return new IsolateError(`the sandbox helper${pid > 0 ? ` (pid ${pid})` : ''} ended without reporting`, {
    code: 'ERR_ISOLATE_HELPER',
    step: 'supervise',
    hint: withOverride('it was killed from outside (SIGKILL, the host\'s OOM killer) or crashed; the sandbox\'s processes ended with it. If nothing killed it, please report this as a bug'),
  })
}

/** A helper's failure's hint, and where ISOLATE_HELPER_PATH names the helper, the question whether it is one (a likely cause). */
export function withOverride(hint: string | undefined): string | undefined {
  const path = process.env.ISOLATE_HELPER_PATH
  if (!path) return hint
  const asked = `ISOLATE_HELPER_PATH names ${JSON.stringify(path)}: is that this version's isolate-helper?`
  return hint ? `${hint}; or: ${asked}` : asked
}
