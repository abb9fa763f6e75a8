/**
 * A long-lived sandbox as Node sees it: the helper's control socket (events in, requests out),
 * its exec socket (each exec's request with its stdio attached, written only by the addon), and
 * the execs running in it.
 */
import { randomBytes } from 'node:crypto'
import { Socket } from 'node:net'
import type { Readable, Writable } from 'node:stream'
import { abortReason, isAborted, whenAborted } from './abort.js'
import { collectOutput, decode, splitRunOptions } from './collect.js'
import { errnoAtEnd, helperGone, IsolateError, optionError, RESOURCE_HINTS } from './errors.js'
import { takeWrapped, type Addon, type ExecStdio, type SpawnedHelper } from './native.js'
import { normalizeExec, stdioCode, type ExecOptions, type Spec } from './options.js'
import { checkSize, onEvents, readable, reapHelper, refStdio, sendLine, execRest, setupError, signalNumber, takeRest, writable, type SignalName, type SandboxResult, type SetupFailure, type Usage } from './sandbox.js'

export type ExecReason = 'exited' | 'signaled' | 'timeout' | 'canceled' | 'oom' | 'cpu-time' | 'output-limit'

/** `sb.exec`'s options: those of `sb.spawn`, and how the output comes back. */
export interface ExecRunOptions extends ExecOptions {
  /** Written to the command's stdin, which is then closed. */
  input?: string | Uint8Array
  /** `'utf8'` (default) gives strings; `'buffer'` gives Buffers. */
  encoding?: BufferEncoding | 'buffer'
  /** As runIsolated's: most bytes of stdout and stderr together kept (default 64 MiB); past it the command's process group is killed, reason `'output-limit'`. */
  maxBuffer?: number
}

export interface ExecExit {
  /** The command line, for logs. */
  command: string
  exitCode: number | null
  signal: string | null
  /**
   * `'timeout'`: its own timeoutMs (from `sb.exec`, also when the command ended in time but what
   * it left behind held its output past it: what is left of its process group is killed then, and
   * what still holds the output is cut 250 ms later). When the sandbox ends while the command runs, the sandbox's
   * reason: `'canceled'` (destroyed) or that of its limit (`'timeout'`, `'oom'`, `'cpu-time'`), or
   * `'signaled'` (SIGKILL) when its init was killed from outside.
   * `'output-limit'`: `sb.exec` killed it at its `maxBuffer`.
   */
  reason: ExecReason
  /** From the command's execve to its end. */
  durationMs: number
  /** The command's pid as the sandbox sees it. */
  pid: number
  /**
   * What the command and the descendants it waited for used, as time(1) counts a command
   * (`wait4`): CPU time, and as `peakMemoryBytes` the largest resident set among them (not the
   * sandbox cgroup's peak, which also holds page cache and /tmp); `wallMs` is `durationMs`.
   * Processes it left running are not in it. Absent when the command was still running as its
   * sandbox ended (the sandbox's own `usage` counts it), and when its process group was killed
   * while it ran (its `timeoutMs`, an abort, `maxBuffer`): children whose parent died first are
   * reaped by the sandbox's init, so what they used could not be counted.
   */
  usage?: Usage
}

type Event =
  | { event: 'ready'; pid: number }
  | ({ event: 'error' } & SetupFailure)
  | { event: 'exit'; exitCode: number | null; signal: string | null; reason: SandboxResult['reason']; durationMs: number; usage: Usage }
  | { event: 'execSpawned'; id: number; pid: number }
  | ({ event: 'execError'; id: number } & SetupFailure)
  | { event: 'execExit'; id: number; exitCode: number | null; signal: string | null; reason: ExecReason; durationMs: number; usage?: Usage }
  | { event: 'killedAll' }

/** How long after an exec's deadline (or its end, when that came later) its output may still drain. */
const DRAIN_MS = 250

/** Characters of a sandbox's id (hex): what a socket named after it takes (lib/registry.ts). */
export const ID_LENGTH = 12

/** Why a long-lived sandbox ended, as its result says. */
export function endedBecause(r: SandboxResult): string {
  switch (r.reason) {
    case 'timeout':
      return 'its timeoutMs passed'
    case 'oom':
      return 'it ran out of memory (limits.memoryBytes; the kernel killed it)'
    case 'cpu-time':
      return 'it used up its CPU time (limits.cpuTimeMs)'
    case 'canceled':
      return 'destroy() or its signal ended it'
    case 'signaled':
      return `its init was killed by ${r.signal} from outside`
    default:
      return `its init ended (${r.reason}${r.exitCode === null ? '' : `, exit code ${r.exitCode}`})`
  }
}

/** `why`: its end, once known; else it is still being destroyed, or its helper's report is on its way. */
const destroyedError = (id: string, why?: SandboxResult) =>
  new IsolateError(why ? `the sandbox ${id} has ended (reason '${why.reason}': ${endedBecause(why)}); nothing can run in it any more` : `the sandbox ${id} has ended or is being destroyed; nothing can run in it any more`, {
    code: 'ERR_ISOLATE_DESTROYED',
    hint: 'create a new sandbox with createSandbox()',
  })

const execAborted = (signal: AbortSignal) => new IsolateError('the exec was aborted before it started', { code: 'ABORT_ERR', cause: abortReason(signal) })

/** One command running in a long-lived sandbox. */
export class ExecProcess {
  /** The command's pid as the sandbox sees it (0 until started). */
  pid = 0
  readonly stdin: Writable | null
  readonly stdout: Readable | null
  readonly stderr: Readable | null
  /** Resolves once the command runs; rejects with the step that failed (the sandbox lives on). */
  readonly started: Promise<void>
  readonly #done: Promise<ExecExit>
  #settle: { spawned(pid: number): void; failed(e: IsolateError): void; exit(e: Omit<ExecExit, 'command' | 'pid'>): void }
  #running = true
  /** Its signal aborted: a SIGKILL that ends it is a cancel. */
  #aborted = false
  /** @internal Its exec's `signal`, if it has one. */
  _signal?: AbortSignal
  readonly #request: (line: string) => boolean
  readonly #tty: boolean

  constructor(
    readonly command: string,
    stdio: ExecStdio,
    request: (line: string) => boolean,
    /** @internal */
    readonly id: number,
    tty: boolean,
  ) {
    this.#request = request
    this.#tty = tty
    this.stdin = writable(stdio.stdin)
    this.stdout = readable(stdio.stdout)
    this.stderr = readable(stdio.stderr)
    let resolveStarted!: () => void
    let rejectStarted!: (e: Error) => void
    this.started = new Promise((res, rej) => ((resolveStarted = res), (rejectStarted = rej)))
    let resolveDone!: (r: ExecExit) => void
    let rejectDone!: (e: Error) => void
    this.#done = new Promise((res, rej) => ((resolveDone = res), (rejectDone = rej)))
    this.started.catch(() => {})
    this.#done.catch(() => {})
    this.#settle = {
      spawned: (pid) => {
        this.pid = pid
        resolveStarted()
      },
      failed: (e) => {
        this.#running = false
        rejectStarted(e)
        rejectDone(e)
        this.stdin?.destroy()
        this.stdout?.destroy()
        this.stderr?.destroy()
      },
      exit: (e) => {
        this.#running = false
        // As child_process does: the fd goes with the command, not when the object is collected.
        this.stdin?.destroy()
        // Processes it left may still write there: bounded.
        takeRest(this.stdout, execRest())
        takeRest(this.stderr, execRest())
        resolveStarted()
        resolveDone({ command, pid: this.pid, ...e, reason: this.#aborted && e.reason === 'signaled' ? 'canceled' : e.reason })
      },
    }
  }

  /** @internal The sandbox's events for this exec. */
  _event(ev: Event): void {
    if (ev.event === 'execSpawned') this.#settle.spawned(ev.pid)
    else if (ev.event === 'execError') this.#settle.failed(setupError(ev, `exec of ${this.command}`, {}))
    else if (ev.event === 'execExit') this.#settle.exit({ exitCode: ev.exitCode, signal: ev.signal, reason: ev.reason, durationMs: ev.durationMs, ...(ev.usage ? { usage: ev.usage } : {}) })
  }

  /** @internal */
  _failed(e: IsolateError): void {
    this.#settle.failed(e)
  }

  /**
   * Send a signal to the command, only to it; with `{ group: true }` to its whole process group,
   * what it started in the background too, also after the command itself ended. False when it
   * was not sent: the command has ended (without `group`), or the sandbox has. True says only
   * that it was sent: the group may have emptied meanwhile.
   */
  kill(signal: SignalName | number = 'SIGTERM', options: { group?: boolean } = {}): boolean {
    const n = signalNumber(signal)
    if (typeof options !== 'object' || options === null) throw optionError('', 'must be an object ({ group })')
    for (const k of Object.keys(options)) if (k !== 'group') throw optionError(k, "is not an option of kill(); its option is 'group'")
    if (options.group !== undefined && typeof options.group !== 'boolean') throw optionError('group', 'must be true or false')
    if (options.group) return this.pid > 0 && this.#request(`exec-signal-group ${this.id} ${n}`)
    return this.#running && this.#request(`exec-signal ${this.id} ${n}`)
  }

  /**
   * @internal SIGKILL to the command's whole process group, as its own timeoutMs does; after the
   * command's end, to what it left in that group (the init keeps track of it).
   */
  _killGroup(): boolean {
    return this.pid > 0 && this.#request(`exec-signal-group ${this.id} ${signalNumber('SIGKILL')}`)
  }

  /**
   * @internal Its exec's `signal`: an abort ends it as its timeout does (its process group
   * killed, or its stop's signal first), and its end is a cancel.
   */
  _abortOn(signal: AbortSignal): void {
    this._signal = signal
    const abort = () => {
      this.#aborted = true
      // Once it runs: the request goes on another socket than the exec itself, and one that
      // overtook it would find no such command yet.
      this.started.then(() => this.pid > 0 && this.#request(`exec-cancel ${this.id}`), () => {})
    }
    const forget = whenAborted(signal, abort)
    void this.#done.then(forget, forget)
  }

  /** With a tty: the terminal's new size (the command gets SIGWINCH); false without one. */
  resize(cols: number, rows: number): boolean {
    checkSize(cols, rows)
    return this.#tty && this.#running && this.#request(`exec-resize ${this.id} ${rows} ${cols}`)
  }

  /** Resolves when the command has ended (what it left running in the background lives on). */
  wait(): Promise<ExecExit> {
    return this.#done
  }
}

export interface ExecResult<T = string> extends ExecExit {
  stdout: T
  stderr: T
}

/** A sandbox that stays up between commands: files and background processes persist. */
export class PersistentSandbox {
  /** 12 hex digits, for logs and the CLI's registry. */
  readonly id = randomBytes(ID_LENGTH / 2).toString('hex')
  /** The host pid of the sandbox's init (0 until ready). */
  pid = 0
  /** @internal Resolves once the sandbox is built; rejects with the setup error. */
  readonly ready: Promise<void>
  readonly #control: Socket
  readonly #done: Promise<SandboxResult>
  readonly #addon: Addon
  readonly #spec: Spec
  #execFd: number | undefined
  #nextId = 1
  readonly #execs = new Map<number, ExecProcess>()
  #ended = false
  /** How it ended, once its helper said so. */
  #result: SandboxResult | undefined
  /** destroy() was called: no exec starts any more (one sent meanwhile would race the end). */
  #destroying = false
  /** unref() was called (and no ref() since): execs' stdio pipes keep the loop alive neither. */
  #unrefd = false
  /** killAll() calls waiting for the helper's word, oldest first (one word per call). */
  #killingAll: Array<{ resolve: () => void; reject: (e: Error) => void }> = []

  constructor(addon: Addon, h: SpawnedHelper, spec: Spec) {
    this.#addon = addon
    this.#spec = spec
    this.#execFd = h.exec
    this.#control = h.socket ?? new Socket({ fd: h.control, readable: true, writable: true })
    let resolveReady!: () => void
    let rejectReady!: (e: Error) => void
    this.ready = new Promise((res, rej) => ((resolveReady = res), (rejectReady = rej)))
    let resolveDone!: (r: SandboxResult) => void
    let rejectDone!: (e: Error) => void
    this.#done = new Promise((res, rej) => ((resolveDone = res), (rejectDone = rej)))
    this.ready.catch(() => {})
    this.#done.catch(() => {})

    let settled = false
    onEvents<Event>(this.#control, (ev) => {
      if (ev.event === 'ready') {
        this.pid = ev.pid
        resolveReady()
      } else if (ev.event === 'error') {
        settled = true
        const e = setupError(ev, 'sandbox setup', spec)
        rejectReady(e)
        rejectDone(e)
      } else if (ev.event === 'exit') {
        settled = true
        this.#result = { command: `sandbox ${this.id}`, exitCode: ev.exitCode, signal: ev.signal, reason: ev.reason, durationMs: ev.durationMs, pid: this.pid, usage: ev.usage }
        this.#end()
        resolveReady()
        resolveDone(this.#result)
      } else if (ev.event === 'killedAll') {
        this.#killingAll.shift()?.resolve()
      } else {
        const exec = this.#execs.get(ev.id)
        exec?._event(ev)
        if (ev.event !== 'execSpawned') this.#execs.delete(ev.id)
      }
    })
    this.#control.on('error', () => {})
    this.#control.on('close', () => {
      this.#end()
      reapHelper(addon, h.pid)
      if (!settled) {
        const e = helperGone(h.pid)
        rejectReady(e)
        rejectDone(e)
      }
    })
  }

  /** No more execs: the exec socket is closed and whatever still waits on an answer fails. */
  #end(): void {
    if (this.#ended) return
    this.#ended = true
    if (this.#execFd !== undefined) this.#addon.closeFd(this.#execFd)
    this.#execFd = undefined
    for (const exec of this.#execs.values()) exec._failed(destroyedError(this.id, this.#result))
    this.#execs.clear()
    for (const w of this.#killingAll.splice(0)) w.reject(destroyedError(this.id, this.#result))
  }

  /** @internal How it ended, once its helper said so. */
  get _result(): SandboxResult | undefined {
    return this.#result
  }

  /** True once the sandbox has ended (destroyed, or ended by its own limits). */
  get destroyed(): boolean {
    return this.#ended
  }

  #request = (line: string): boolean => {
    if (this.#ended || this.#control.destroyed) return false
    return sendLine(this.#addon, this.#control, line)
  }

  /**
   * Run `file` inside, in the same namespaces, cgroup, capabilities, seccomp filter and Landlock
   * domain as every other command of this sandbox. Resolves once it runs; rejects with an
   * `IsolateError` (an option, a step such as `execve`, or `ERR_ISOLATE_DESTROYED`).
   */
  async spawn(file: string, args: string[] = [], options: ExecOptions = {}): Promise<ExecProcess> {
    const { request, stdio, command, signal } = normalizeExec(file, args, options, this.#spec)
    if (isAborted(signal)) throw execAborted(signal!)
    const id = this.#nextId++
    let fds: ExecStdio | undefined
    for (let delay = 1; ; delay = Math.min(delay * 2, 50)) {
      if (this.#ended || this.#destroying || this.#execFd === undefined) throw destroyedError(this.id, this.#result)
      try {
        fds = this.#addon.sendExec(this.#execFd, JSON.stringify({ ...request, id }), stdio.map((m) => stdioCode(m, this.#spec.namespaces.user)))
        break
      } catch (e) {
        const err = e as Error & { code?: string }
        // The helper reads its socket as fast as it can; a full one only needs a moment.
        if (err.code === 'QueueFull') {
          await new Promise((r) => setTimeout(r, delay))
          continue
        }
        if (err.code === 'InvalidArg') {
          const m = /^options\.([^:]*): (.*)$/s.exec(err.message)
          throw new IsolateError(err.message, { code: 'ERR_ISOLATE_OPTION', option: m?.[1] })
        }
        // The helper closed its end: the sandbox ended (destroyed, timed out, its init killed)
        // and this process has not heard yet.
        // Its report of why comes on the control socket: waited for a moment, to say it.
        if (/\((EPIPE|ECONNRESET|ENOTCONN)\)\s*$/.test(err.message)) {
          let timer: NodeJS.Timeout | undefined
          await Promise.race([this.#done.catch(() => {}), new Promise((r) => (timer = setTimeout(r, 1000)))]).finally(() => clearTimeout(timer))
          throw destroyedError(this.id, this.#result)
        }
        const errno = errnoAtEnd(err.message)
        throw new IsolateError(`could not hand the exec to the sandbox: ${err.message}`, {
          code: 'ERR_ISOLATE_NATIVE',
          errno,
          // ETOOMANYREFS is counted per host user: a caller without root is the same user as its sandboxes.
          hint: errno === 'ETOOMANYREFS' ? "this user has too many descriptors in flight in unix sockets, which the kernel counts per host user: a sandbox of this caller's (the same user) holds them; give untrusted sandboxes a limits.openFiles well below this process's" : errno ? RESOURCE_HINTS[errno] : undefined,
          cause: e,
        })
      }
    }
    const exec = new ExecProcess(command, fds, this.#request, id, request.tty !== undefined)
    // Wrapped in streams now: the addon holds them no more.
    takeWrapped(this.#addon, fds)
    this.#execs.set(id, exec)
    if (this.#unrefd) refStdio([exec.stdin, exec.stdout, exec.stderr], false)
    if (signal) exec._abortOn(signal)
    await exec.started
    if (isAborted(signal)) {
      // Aborted before the caller had it: the call rejects once the command, killed, is gone
      // (killed here too: the abort's listener may not have run yet).
      exec._killGroup()
      await exec.wait().catch(() => {})
      for (const s of [exec.stdin, exec.stdout, exec.stderr]) s?.destroy()
      throw execAborted(signal!)
    }
    return exec
  }

  /** Like {@link spawn}, then wait for the command's end and collect its stdout and stderr. */
  async exec(file: string, args: string[] | undefined, options: ExecRunOptions & { encoding: 'buffer' }): Promise<ExecResult<Buffer>>
  async exec(file: string, args?: string[], options?: ExecRunOptions & { encoding?: BufferEncoding }): Promise<ExecResult<string>>
  async exec(file: string, args?: string[], options?: ExecRunOptions): Promise<ExecResult<string | Buffer>>
  async exec(file: string, args: string[] = [], options: ExecRunOptions = {}): Promise<ExecResult<string | Buffer>> {
    const { run, rest: execOptions } = splitRunOptions<ExecOptions>(options)
    const p = await this.spawn(file, args, execOptions)
    const deadline = execOptions.timeoutMs === undefined ? undefined : Date.now() + execOptions.timeoutMs
    const ended = p.wait()
    // Its timeoutMs and its signal bound the call: what the command left behind (`sleep 30 &`)
    // may hold its output open long after it ended or was killed. Once it has ended, what it left
    // in its process group is killed at the deadline or the abort, as the command would have
    // been, and what still holds the output then (a setsid child) is cut a moment later (time
    // to drain what is already written).
    let timer: NodeJS.Timeout | undefined
    let cutBy: 'timeout' | 'canceled' | undefined
    // Once the call has its result, nothing more is killed (a timer that fired as the output
    // ended still runs its setImmediate).
    let settled = false
    let forgetAbort = () => {}
    // (A timer takes at most 2^31-1 ms, 24.8 days: a longer timeoutMs cuts there.)
    // One I/O turn more when it fires: after a stalled loop, timers run before the reads that
    // would have ended the output in time. Unref'd: it never keeps Node alive by itself.
    const cutAt = ended.then(() => new Promise<void>((resolve) => {
      const later = (ms: number, then: () => void) => setTimeout(() => setImmediate(then), Math.min(ms, 2 ** 31 - 1)).unref()
      const stop = (by: 'timeout' | 'canceled') => {
        // The first of the deadline and the abort decides.
        if (settled || cutBy) return
        clearTimeout(timer)
        cutBy = by
        p._killGroup()
        timer = later(DRAIN_MS, resolve)
      }
      if (deadline !== undefined) timer = later(Math.max(0, deadline - Date.now()), () => stop('timeout'))
      if (p._signal) forgetAbort = whenAborted(p._signal, () => stop('canceled'))
    }))
    // The group, as its timeoutMs does: what the command started would live on otherwise.
    const output = collectOutput(p.stdout, p.stderr, run.maxBuffer, () => {
      void p._killGroup()
      return ended
    }, cutAt)
    if (p.stdin) p.stdin.end(run.input)
    const [result, { stdout, stderr, overflowed }] = await Promise.all([ended, output]).finally(() => {
      settled = true
      clearTimeout(timer)
      forgetAbort()
    })
    const reason = overflowed ? 'output-limit' : (cutBy ?? result.reason)
    return { ...result, reason, stdout: decode(stdout, run.encoding), stderr: decode(stderr, run.encoding) }
  }

  /**
   * Kill every process in the sandbox, and keep the sandbox: its files, mounts, network and
   * limits stay as they are, and execs start again at once. The way back from a command that ran
   * wild (a fork bomb holding every pid, background processes nothing else reaches) without
   * losing the session. Resolves once no process is left but the sandbox's init; the execs that
   * were running end with reason `'canceled'`. Rejects with `ERR_ISOLATE_DESTROYED` once the
   * sandbox has ended.
   */
  killAll(): Promise<void> {
    if (this.#ended || this.#destroying) return Promise.reject(destroyedError(this.id, this.#result))
    return new Promise((resolve, reject) => {
      this.#killingAll.push({ resolve, reject })
      // Not sent: the sandbox ended meanwhile, and #end() rejects it (or is about to).
      this.#request('kill-all')
    })
  }

  /**
   * End everything in the sandbox (processes, mounts, cgroup). Resolves when it is all gone. With
   * its `stop`, every process in it gets the stop's signal first, and is killed after the grace
   * (sooner, once none is left); the execs running end with reason `'canceled'`.
   */
  destroy(): Promise<SandboxResult> {
    this.#destroying = true
    this.#request('cancel')
    return this.#done
  }

  /** Resolves when the sandbox has ended, by destroy() or by its own limits. */
  wait(): Promise<SandboxResult> {
    return this.#done
  }

  /** Let the event loop exit while this sandbox lives, its execs' stdio pipes included, now and later (it still ends when Node exits). */
  unref(): this {
    this.#unrefd = true
    refStdio([this.#control], false)
    for (const e of this.#execs.values()) refStdio([e.stdin, e.stdout, e.stderr], false)
    return this
  }

  ref(): this {
    this.#unrefd = false
    refStdio([this.#control], true)
    for (const e of this.#execs.values()) refStdio([e.stdin, e.stdout, e.stderr], true)
    return this
  }
}
