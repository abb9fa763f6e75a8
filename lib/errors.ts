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

export function optionError(option: string, message: string): IsolateError {
  return new IsolateError(`options.${option}: ${message}`, { code: 'ERR_ISOLATE_OPTION', option })
}

export function unsupported(option: string, message: string): IsolateError {
  return new IsolateError(`options.${option}: ${message}`, { code: 'ERR_ISOLATE_UNSUPPORTED', option })
}
