/**
 * @isolate/core: run untrusted commands in lightweight Linux sandboxes made from kernel
 * primitives. See README.md for the API and the layout, docs/reference.md for the exact rules.
 */
import { abortReason, isAborted, whenAborted } from './lib/abort.js'
import { errnoAtEnd, IsolateError, START_HINTS, withOverride } from './lib/errors.js'
import { loadNative, takeWrapped, type Addon, type ExecStdio, type SpawnedHelper } from './lib/native.js'
import { normalize, normalizeSandbox, stdioCode, type SandboxOptions, type Spec, type SpawnOptions } from './lib/options.js'
import { helperPool, refillPool, startBegins } from './lib/pool.js'
import { collectOutput, decode, splitRunOptions } from './lib/collect.js'
import { endedBecause, PersistentSandbox } from './lib/persistent.js'
import { Sandbox, type SandboxResult } from './lib/sandbox.js'

export { IsolateError } from './lib/errors.js'
export type { IsolateErrorCode, IsolateErrorDetails } from './lib/errors.js'
export type { SpawnOptions, SandboxOptions, ExecOptions, Stop, MountOption, BindMount, TmpfsMount, OverlayMount, Limits, StdioMode, StderrMode, Stdio, NamespaceName } from './lib/options.js'
export { Sandbox } from './lib/sandbox.js'
export type { SandboxResult, ExitReason, Usage, SignalName } from './lib/sandbox.js'
export { PersistentSandbox, ExecProcess } from './lib/persistent.js'
export type { ExecExit, ExecResult, ExecReason, ExecRunOptions } from './lib/persistent.js'
export type { HostProbe } from './lib/probe.js'
export { probe } from './lib/probe.js'
export { configurePool } from './lib/pool.js'
export type { PoolOptions } from './lib/pool.js'

function abortError(signal: AbortSignal): IsolateError {
  return new IsolateError('the sandbox was aborted before it started', { code: 'ABORT_ERR', cause: abortReason(signal) })
}

/**
 * Start `file` with `args` in a new sandbox. Resolves once the command has been exec'd inside the
 * finished sandbox; rejects with an {@link IsolateError} naming the option or the setup step that
 * failed (and then nothing is left running).
 */
const optionFailure = (err: Error) => {
  const m = /^options\.([^:]*): (.*)$/s.exec(err.message)
  return new IsolateError(err.message, { code: 'ERR_ISOLATE_OPTION', option: m?.[1] })
}

/**
 * The sandbox object `make` builds, on a warm helper from the pool when there is one, else on a
 * new helper. A warm helper is handed its spec (`send`) only once `make` is ready to hear from
 * it: the spec's arrival wakes the helper on this CPU (a socket's wakeup is a "sync" one), where
 * it waits until this thread goes idle, so whatever this thread does after the send delays it.
 */
async function startSandbox<T>(spec: Spec, stdio: number[], make: (addon: Addon, h: SpawnedHelper, send?: () => ExecStdio) => T): Promise<T> {
  startBegins()
  const native = loadNative()
  const json = JSON.stringify(spec)
  const pool = helperPool(native.addon, native.helperPath)
  const warm = pool?.take(spec)
  if (pool && warm) {
    let sent: ExecStdio | undefined
    const send = () => {
      const fds = native.addon.sendSpec(warm.handoff, json, stdio, warm.epoch)
      sent = fds
      // A one-shot sandbox needs the handoff socket no more; a long-lived one sends its execs there.
      if (!spec.persistent) native.addon.closeFd(warm.handoff)
      return fds
    }
    try {
      const made = make(native.addon, { pid: warm.pid, control: -1, socket: warm.control, exec: spec.persistent ? warm.handoff : undefined }, send)
      // Wrapped in streams now: the addon holds them no more.
      if (sent) takeWrapped(native.addon, sent)
      return made
    } catch (e) {
      if (sent) throw e
      const err = e as Error & { code?: string }
      if (err.code === 'InvalidArg') {
        pool.giveBack(warm)
        throw optionFailure(err)
      }
      // Too large for the handoff socket, or the helper went away: the cold way.
      pool.discard(warm)
      // Made before this process changed its ids or cgroups: so were the others.
      if (err.code === 'Cancelled') pool.renew()
    }
  }
  let h: SpawnedHelper
  try {
    h = await native.addon.spawnHelper(native.helperPath, json, stdio)
  } catch (e) {
    const err = e as Error & { code?: string }
    if (err.code === 'InvalidArg') throw optionFailure(err)
    throw helperStartFailure(err, native.helperPath)
  }
  const made = make(native.addon, h)
  // Wrapped in streams now: the addon holds them no more.
  takeWrapped(native.addon, h)
  return made
}

function helperStartFailure(err: Error, helperPath: string): IsolateError {
  const errno = errnoAtEnd(err.message)
  return new IsolateError(`could not start the sandbox helper: ${err.message}`, { code: 'ERR_ISOLATE_NATIVE', path: helperPath, errno, hint: withOverride(errno ? START_HINTS[errno] : undefined), cause: err })
}

/** `stop` when `signal` aborts (at once if it already has: it may have fired while the helper was being started), until `settled`. */
function onAbort(signal: AbortSignal | undefined, stop: () => void, settled: Promise<unknown>): void {
  if (!signal) return
  const forget = whenAborted(signal, stop)
  void settled.then(forget, forget)
}

export async function spawnIsolated(file: string, args: string[] = [], options: SpawnOptions = {}): Promise<Sandbox> {
  return spawnAs('spawnIsolated', file, args, options)
}

/** spawnIsolated, whose option errors name `api`, the call the caller made. */
async function spawnAs(api: string, file: string, args: string[], options: SpawnOptions): Promise<Sandbox> {
  const { spec, stdio, signal, command } = normalize(file, args, options, api)
  if (isAborted(signal)) throw abortError(signal!)
  let sb: Sandbox
  try {
    sb = await startSandbox(spec, stdio.map((m) => stdioCode(m, spec.namespaces.user)), (addon, h, send) => new Sandbox(addon, h, command, spec, send))
    onAbort(signal, () => sb.cancel(), sb.wait())
    await sb.started
  } catch (e) {
    refillPool()
    throw e
  }
  if (isAborted(signal)) {
    // Aborted before the caller had it: as createSandbox, the promise rejects (once the sandbox,
    // canceled, is gone), whether or not the command had been exec'd meanwhile. Canceled here
    // too: the abort's listener may not have run yet (it runs as the event is dispatched).
    sb.cancel()
    // At once, whatever its stop: nobody has its streams to hear a graceful end.
    sb.kill('SIGKILL')
    await sb.wait().catch(() => {})
    for (const s of [sb.stdin, sb.stdout, sb.stderr]) s?.destroy()
    refillPool()
    throw abortError(signal!)
  }
  refillAfter(sb)
  return sb
}

/**
 * The pool refills once this sandbox ended or had its first moments, not while it starts: a
 * refill's exec and set-up would take CPU from it, even at idle priority (an idle task still
 * gets a slice now and then). A short command's exit comes first; a long one waits no more.
 */
function refillAfter(sb: Sandbox): void {
  let done = false
  const refill = () => {
    if (done) return
    done = true
    clearTimeout(timer)
    refillPool()
  }
  const timer = setTimeout(refill, REFILL_DELAY_MS).unref()
  // The caller's own continuation of wait() goes first: registered after this one, it would
  // otherwise run behind the refill's start of a helper.
  const later = () => void setImmediate(refill)
  void sb.wait().then(later, later)
}

const REFILL_DELAY_MS = 20

export interface RunOptions extends SpawnOptions {
  /** Written to the command's stdin, which is then closed. */
  input?: string | Uint8Array
  /** `'utf8'` (default) gives strings; `'buffer'` gives Buffers. */
  encoding?: BufferEncoding | 'buffer'
  /**
   * Most bytes of stdout and stderr together kept in Node (default 64 MiB, or no bound of its
   * own when `limits.outputBytes` is given, which bounds the command itself in its helper;
   * `Infinity`: none). Past it the sandbox is killed, the reason is `'output-limit'` and the
   * output holds its first `maxBuffer` bytes.
   */
  maxBuffer?: number
}

export interface RunResult<T = string> extends SandboxResult {
  stdout: T
  stderr: T
}

/**
 * Build a sandbox that stays up: its init waits for commands, run with `sb.exec()` or
 * `sb.spawn()`, until `sb.destroy()` (or Node's exit, or the sandbox's own `limits`). Takes the
 * options of {@link spawnIsolated} that describe the sandbox; its `env` and `cwd` are each exec's
 * defaults. Rejects like `spawnIsolated` when a setup step fails (and then nothing is left).
 */
export async function createSandbox(options: SandboxOptions = {}): Promise<PersistentSandbox> {
  const { spec, signal } = normalizeSandbox(options)
  if (isAborted(signal)) throw abortError(signal!)
  let sb: PersistentSandbox
  try {
    // The sandbox has no stdio of its own; each exec brings its own.
    sb = await startSandbox(spec, [-2, -2, -2], (addon, h, send) => new PersistentSandbox(addon, send ? { ...h, ...send() } : h, spec))
    // As spawnIsolated's: an abort after the start ends the sandbox (reason 'canceled').
    onAbort(signal, () => void sb.destroy(), sb.wait())
    await sb.ready
  } finally {
    refillPool()
  }
  if (isAborted(signal)) {
    // Aborted before the caller had it (its ready may come before the destroy's end): the promise
    // rejects once the sandbox is gone, as spawnIsolated's does.
    await sb.destroy().catch(() => {})
    throw abortError(signal!)
  }
  if (sb.destroyed) {
    const why = sb._result
    throw new IsolateError(`the sandbox ended before it was ready${why ? ` (reason '${why.reason}': ${endedBecause(why)})` : ''}`, { code: 'ERR_ISOLATE_DESTROYED' })
  }
  return sb
}

/** Like {@link spawnIsolated}, then wait for the end and collect stdout and stderr. */
export async function runIsolated(file: string, args: string[] | undefined, options: RunOptions & { encoding: 'buffer' }): Promise<RunResult<Buffer>>
export async function runIsolated(file: string, args?: string[], options?: RunOptions & { encoding?: BufferEncoding }): Promise<RunResult<string>>
/** Options whose encoding is only known at run time: either. */
export async function runIsolated(file: string, args?: string[], options?: RunOptions): Promise<RunResult<string | Buffer>>
export async function runIsolated(file: string, args: string[] = [], options: RunOptions = {}): Promise<RunResult<string | Buffer>> {
  const { run, rest: spawnOptions } = splitRunOptions<SpawnOptions>(options)
  if (spawnOptions.stdio === undefined) spawnOptions.stdio = ['pipe', 'pipe', 'pipe']
  const sb = await spawnAs('runIsolated', file, args, spawnOptions)
  const output = collectOutput(sb.stdout, sb.stderr, run.maxBuffer, () => {
    sb.kill('SIGKILL')
    return sb.wait()
  })
  if (sb.stdin) sb.stdin.end(run.input)
  const [result, { stdout, stderr, overflowed }] = await Promise.all([sb.wait(), output])
  // Cut output is reported as such even when the command had ended before Node read past the bound.
  return { ...result, reason: overflowed ? 'output-limit' : result.reason, stdout: decode(stdout, run.encoding), stderr: decode(stderr, run.encoding) }
}

export { unpackRootfs, importImage } from './lib/rootfs.js'
export type { UnpackOptions, UnpackProgress, UnpackStats, UnpackResult, ImportOptions, ImportResult, ImageLayer, ImageConfig } from './lib/rootfs.js'
