/** Every failure of @isolate/core: bad options, a setup step that failed, a missing native part. */
export type IsolateErrorCode =
  | 'ERR_ISOLATE_OPTION' // an option is invalid; nothing was spawned
  | 'ERR_ISOLATE_UNSUPPORTED' // an option this version or this host cannot honour; nothing was spawned
  | 'ERR_ISOLATE_SETUP' // a sandbox setup step failed; nothing is left running
  | 'ERR_ISOLATE_NATIVE' // the addon or the helper could not be found or started
  | 'ERR_ISOLATE_HELPER' // the helper ended without reporting (a bug: please report it)
  | 'ERR_ISOLATE_DESTROYED' // the long-lived sandbox has ended; nothing can run in it any more
  | 'ABORT_ERR' // the AbortSignal fired before the sandbox started

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
    this.name = 'IsolateError'
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

/** A value as an error message shows it: JSON where it has one, never a throw (BigInt, cycles). */
export function shown(v: unknown): string {
  if (typeof v === 'bigint') return `${v}n`
  try {
    return JSON.stringify(v) ?? String(v)
  } catch {
    return Object.prototype.toString.call(v)
  }
}

/** What ownOptions made: taken as it is when it comes again (runIsolated's options, then its spawn's). */
const owned = new WeakSet<object>()
const mark = <T extends object>(v: T): T => (owned.add(v), v)

/**
 * Options as the caller owns them: every object that holds options (a literal, one made in another
 * realm such as a vm context or a test runner's, an instance of the caller's own class) is copied
 * into an object without a prototype with its own enumerable properties and the getters of the
 * prototypes its class defines; nothing a realm's Object.prototype holds is read, so a
 * property set there (prototype pollution elsewhere in the process: `seccomp: 'none'`,
 * `namespaces`) is never an option. Arrays are copied entry by entry. The objects that are values,
 * not options (an AbortSignal, a Buffer or other view), are taken as they are. A getter that
 * throws, a cycle or a nesting past 64 levels is an option error naming where.
 */
export function ownOptions(v: unknown, path = '', depth = 0, seen: Set<object> = new Set()): unknown {
  if (typeof v !== 'object' || v === null || owned.has(v)) return v
  const readable = (what: () => unknown): unknown => {
    try {
      return what()
    } catch (e) {
      throw optionError(path, `could not be read: ${(e as Error)?.message ?? shown(e)}`)
    }
  }
  if (readable(() => v instanceof AbortSignal || ArrayBuffer.isView(v) || v instanceof ArrayBuffer)) return v
  const where = path === '' ? 'options' : path
  const array = readable(() => Array.isArray(v)) as boolean
  if (array && (v as unknown[]).length > 65536) throw optionError(path, `has ${(v as unknown[]).length} entries; at most 65536 are taken`)
  if (seen.has(v)) throw optionError(path, `${where} holds itself (a cycle)`)
  if (depth >= 64) throw optionError(path, 'is nested too deep (64 levels)')
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
      return ownOptions(value, at, depth + 1, seen)
    }
    if (array) return mark(Array.from({ length: (v as unknown[]).length }, (_, i) => (Object.prototype.hasOwnProperty.call(v, i) ? read(String(i)) : undefined)))
    const out: Record<string, unknown> = Object.create(null)
    for (const key of readable(() => new Set([...classKeys(v), ...Object.keys(v)])) as Set<string>) out[key] = read(key)
    return mark(out)
  } finally {
    seen.delete(v)
  }
}

/**
 * The getters of the prototypes between an object and its realm's root (the one whose own
 * prototype is null: Object.prototype of whichever realm, or none): what a caller's class
 * defines (its fields are the object's own), never what the root holds.
 */
function classKeys(v: object): string[] {
  const keys: string[] = []
  for (let p = Object.getPrototypeOf(v); p !== null && Object.getPrototypeOf(p) !== null; p = Object.getPrototypeOf(p)) {
    for (const key of Object.getOwnPropertyNames(p)) if (Object.getOwnPropertyDescriptor(p, key)!.get !== undefined) keys.push(key)
  }
  return keys
}

export function optionError(option: string, message: string): IsolateError {
  return new IsolateError(`options.${option}: ${message}`, { code: 'ERR_ISOLATE_OPTION', option })
}

export function unsupported(option: string, message: string): IsolateError {
  return new IsolateError(`options.${option}: ${message}`, { code: 'ERR_ISOLATE_UNSUPPORTED', option })
}
