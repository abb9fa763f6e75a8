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
 * Options as the caller owns them: plain objects (and arrays) copied with their own enumerable
 * properties only, into objects without a prototype, so a property set on Object.prototype
 * (prototype pollution elsewhere in the process: `seccomp: 'none'`, `namespaces`) is never read
 * as an option; other objects (an AbortSignal, a Buffer) as they are. A getter that throws, a
 * cycle or a nesting past 64 levels is an option error naming where.
 */
export function ownOptions(v: unknown, path = '', depth = 0, seen: Set<object> = new Set()): unknown {
  if (typeof v !== 'object' || v === null || owned.has(v)) return v
  let proto: unknown
  try {
    proto = Object.getPrototypeOf(v)
  } catch (e) {
    throw optionError(path, `could not be read: ${(e as Error)?.message ?? shown(e)}`)
  }
  const plain = proto === Object.prototype || proto === null
  if (!plain && !Array.isArray(v)) return v
  const where = path === '' ? 'options' : path
  if (Array.isArray(v) && v.length > 65536) throw optionError(path, `has ${v.length} entries; at most 65536 are taken`)
  if (seen.has(v)) throw optionError(path, `${where} holds itself (a cycle)`)
  if (depth >= 64) throw optionError(path, 'is nested too deep (64 levels)')
  seen.add(v)
  try {
    const read = (key: string): unknown => {
      const at = Array.isArray(v) ? `${path}[${key}]` : path === '' ? key : `${path}.${key}`
      let value: unknown
      try {
        value = (v as Record<string, unknown>)[key]
      } catch (e) {
        throw optionError(at, `could not be read: ${(e as Error)?.message ?? shown(e)}`)
      }
      return ownOptions(value, at, depth + 1, seen)
    }
    if (Array.isArray(v)) return mark(Array.from({ length: v.length }, (_, i) => (Object.prototype.hasOwnProperty.call(v, i) ? read(String(i)) : undefined)))
    const out: Record<string, unknown> = Object.create(null)
    for (const key of Object.keys(v)) out[key] = read(key)
    return mark(out)
  } finally {
    seen.delete(v)
  }
}

export function optionError(option: string, message: string): IsolateError {
  return new IsolateError(`options.${option}: ${message}`, { code: 'ERR_ISOLATE_OPTION', option })
}

export function unsupported(option: string, message: string): IsolateError {
  return new IsolateError(`options.${option}: ${message}`, { code: 'ERR_ISOLATE_UNSUPPORTED', option })
}
