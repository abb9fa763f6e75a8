/** A running sandbox as Node sees it: the helper's control socket, the command's stdio streams. */
import { readFileSync } from 'node:fs'
import { Socket } from 'node:net'
import { constants } from 'node:os'
import { Readable, type Writable } from 'node:stream'
import { helperGone, IsolateError, shown } from './errors.js'
import type { Addon, ExecStdio, SpawnedHelper } from './native.js'
import { optionOfFailure, type Spec } from './options.js'

export type ExitReason = 'exited' | 'signaled' | 'timeout' | 'canceled' | 'oom' | 'cpu-time' | 'output-limit'

export interface Usage {
  cpuUserMs: number
  cpuSystemMs: number
  /** From the sandbox's cgroup when it has one, else the largest process's peak RSS. */
  peakMemoryBytes: number
  /** `durationMs`. */
  wallMs: number
  /**
   * Forks and new threads that `limits.pids` refused (they failed with EAGAIN), from the
   * sandbox's cgroup. Only with `limits.pids`, and in a sandbox's result, not an exec's: nothing
   * counts the refusals of the default bound.
   */
  pidsLimitHits?: number
}

export interface SandboxResult {
  /** The command line, for logs. */
  command: string
  /** The command's exit code, or null when it was killed by a signal. */
  exitCode: number | null
  /** The signal that ended it (`'SIGKILL'`; a real-time one as `'SIGRTMIN+6'`), or null. */
  signal: string | null
  reason: ExitReason
  /**
   * From the command's execve to its end (its setup before it is not counted; see timeoutMs).
   * A long-lived sandbox's own: from when its helper had the spec.
   */
  durationMs: number
  /** The command's pid as the host sees it. */
  pid: number
  usage: Usage
}

type Event =
  | { event: 'spawned'; pid: number }
  | { event: 'error'; step: string; path?: string; errno?: string; message: string; hint?: string }
  | { event: 'exit'; exitCode: number | null; signal: string | null; reason: ExitReason; durationMs: number; usage: Usage }

export type SetupFailure = Omit<Extract<Event, { event: 'error' }>, 'event'>

/** A setup step's failure as it crossed from the helper, as an IsolateError naming the option it came from where one did (`spec`'s). */
export function setupError(e: SetupFailure, what: string, spec: Parameters<typeof optionOfFailure>[0]): IsolateError {
  return new IsolateError(`${what} failed at ${e.step}${e.path ? ` (${e.path})` : ''}: ${e.message}`, {
    code: 'ERR_ISOLATE_SETUP',
    step: e.step,
    path: e.path,
    errno: e.errno,
    hint: e.hint,
    option: optionOfFailure(spec, e.step, e.path),
  })
}

/**
 * The command's output as the caller reads it: a stream fed from the pipe, so that the pipe's fd
 * goes as soon as its end has been read, whether or not anyone reads what it held (that stays
 * readable, as long as the caller keeps the stream). While the command runs, a stream nobody
 * reads holds at most its buffer and the rest waits in the pipe (the command blocks on a full
 * pipe, as with child_process); once it ended, {@link takeRest} reads the rest in.
 */
export function readable(fd: number | undefined): Readable | null {
  if (fd === undefined) return null
  const pipe = new Socket({ fd, readable: true, writable: false })
  // Read in past the stream's buffer once the command ended, up to this many bytes more.
  let budget = 0
  const out = new Readable({ read: () => void pipe.resume() })
  pipe.on('data', (chunk: Buffer) => {
    // A chunk costs Node some 400 bytes whatever its length: counted as 1 KiB at least, so that
    // a process left behind writing a byte at a time cannot make the rest read in hundreds of
    // times its bound in Node's memory.
    budget -= Math.max(chunk.length, CHUNK_COST)
    if (!out.push(chunk) && budget < 0) pipe.pause()
  })
  pipe.on('end', () => out.push(null))
  // A read error ends the output; as an 'error' only for a caller who listens for one (on a
  // stream nobody listened to, it would end Node).
  pipe.on('error', (e) => (out.listenerCount('error') > 0 ? out.destroy(e) : out.push(null)))
  out.on('close', () => pipe.destroy())
  pipes.set(out, pipe)
  rests.set(out, (bound) => {
    budget = bound
    pipe.resume()
  })
  return out
}

/** What a chunk read in after the end counts against its bound at least (see {@link readable}). */
const CHUNK_COST = 1024

const rests = new WeakMap<Readable, (bound: number) => void>()
const pipes = new WeakMap<Readable, Socket>()

/**
 * Whether the pipes behind a command's stdio (or a helper's control socket) keep Node's event
 * loop alive (`ref`) or not: what a sandbox's unref() and ref() do to its streams too
 * (child_process leaves that to the caller, on Sockets of its own; ours are streams in front of
 * a socket, and a caller cannot reach it).
 */
export function refStdio(streams: (Readable | Writable | null)[], ref: boolean): void {
  for (const s of streams) {
    const socket = s instanceof Socket ? s : s && pipes.get(s as Readable)
    // A destroyed one has no handle: ref() and unref() would each add a 'connect' listener.
    if (socket && !socket.destroyed) ref ? socket.ref() : socket.unref()
  }
}

/**
 * The command behind `out` ended: read in what its pipe still holds, even if nobody reads the
 * stream, so that the pipe's fd goes at its end (else it stayed open for as long as the process,
 * the Sandbox long collected). `bound`: how much more at most, for a pipe that processes still
 * running may write on (an exec that left `sleep 30 &` behind with its stdout): past it, the rest
 * comes only as it is read. Without one, for a sandbox whose every process has ended, all of it:
 * what a pipe holds once its writers are gone.
 */
export function takeRest(out: Readable | null, bound = Infinity): void {
  if (out) rests.get(out)?.(bound)
}

/**
 * What an exec's pipe may still hold when its command ended (and processes it left may add as
 * it is read): a pipe grows to `fs.pipe-max-size` at most (a sandbox may ask for that much with
 * F_SETPIPE_SZ), and the stream's socket buffers a read or two more.
 */
export function execRest(): number {
  if (pipeMax === undefined) {
    try {
      pipeMax = Number(readFileSync('/proc/sys/fs/pipe-max-size', 'utf8')) || 1 << 20
    } catch {
      pipeMax = 1 << 20
    }
  }
  return pipeMax + (256 << 10)
}
let pipeMax: number | undefined

export function writable(fd: number | undefined): Writable | null {
  const stdin = fd === undefined ? null : new Socket({ fd, readable: false, writable: true })
  // A command that stops reading makes writes fail with EPIPE; that is its business, not a crash of ours.
  stdin?.on('error', () => {})
  return stdin
}

/**
 * A signal's number, from its name (Node's, or a real-time one as a result names it: `SIGRTMIN`,
 * `SIGRTMIN+6`) or number; throws on anything else.
 */
export function signalNumber(signal: SignalName | number): number {
  if (typeof signal !== 'number' && typeof signal !== 'string') throw new IsolateError(`unknown signal ${shown(signal)}`, { code: 'ERR_ISOLATE_OPTION', option: 'signal' })
  const n = typeof signal === 'number' ? signal : (Object.hasOwn(constants.signals, signal) ? constants.signals[signal as NodeJS.Signals] : realtimeNumber(signal))
  if (n === undefined || !Number.isInteger(n) || n <= 0 || n > 64) throw new IsolateError(`unknown signal ${shown(signal)}`, { code: 'ERR_ISOLATE_OPTION', option: 'signal' })
  // The C library keeps them for its threads: the init can neither block nor forward them.
  if (n === 32 || n === 33) throw new IsolateError(`signal ${n} is reserved by the C library (its threads use it) and is not forwarded; real-time signals start at 34 (SIGRTMIN)`, { code: 'ERR_ISOLATE_OPTION', option: 'signal' })
  return n
}

/** A signal by name: Node's, or a real-time one (`SIGRTMIN`, `SIGRTMIN+6`: 34 and 40 in the C library's numbering). */
export type SignalName = NodeJS.Signals | 'SIGRTMIN' | `SIGRTMIN+${RealtimeOffset}`

/** SIGRTMIN+1 to SIGRTMIN+30: 35 to 64, the real-time signals past the first. */
type RealtimeOffset = 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 | 10 | 11 | 12 | 13 | 14 | 15 | 16 | 17 | 18 | 19 | 20 | 21 | 22 | 23 | 24 | 25 | 26 | 27 | 28 | 29 | 30

/** The C library's first real-time signal (glibc and musl alike: 32 and 33 are its own). */
const SIGRTMIN = 34

/** `SIGRTMIN` and `SIGRTMIN+n`, as results name real-time signals (crates/core/src/protocol.rs `signal_name`). */
function realtimeNumber(name: string): number | undefined {
  const m = /^SIGRTMIN(?:\+([1-9]\d?))?$/.exec(name)
  return m ? SIGRTMIN + Number(m[1] ?? 0) : undefined
}

/** A terminal size from resize(cols, rows); throws when out of range. */
export function checkSize(cols: number, rows: number): void {
  if (!Number.isInteger(cols) || !Number.isInteger(rows) || cols < 1 || rows < 1 || cols > 65535 || rows > 65535) {
    throw new IsolateError(`resize(${shown(cols)}, ${shown(rows)}): sizes must be integers from 1 to 65535`, { code: 'ERR_ISOLATE_OPTION', option: 'tty' })
  }
}

/**
 * One request line to a helper: false when the helper has gone. Sent past the stream (a failed
 * write there would destroy it before the helper's last report, still unread, is read: the
 * sandbox's `exit` right as it is canceled); what did not fit goes through the stream.
 */
export function sendLine(addon: Addon, control: Socket, line: string): boolean {
  const fd = (control as unknown as { _handle?: { fd?: number } })._handle?.fd
  const text = `${line}\n`
  // Behind a line still queued in the stream, never ahead of it.
  const direct = typeof fd === 'number' && fd >= 0 && control.writableLength === 0
  const sent = direct ? addon.sendControl(fd, text) : 0
  if (sent < 0) return false
  if (sent < Buffer.byteLength(text)) control.write(Buffer.from(text).subarray(sent))
  return true
}

/** The helper exits right after closing its socket; reap it without ever blocking. */
export function reapHelper(addon: Addon, pid: number, delay = 0): void {
  // 0: a helper the helper server forked and reaps.
  if (pid <= 0 || addon.reapHelper(pid)) return
  setTimeout(() => reapHelper(addon, pid, Math.min(delay * 2 + 1, 100)), delay).unref()
}

/** Each JSON line the helper writes on its control socket, parsed, in order. */
export function onEvents<E>(control: Socket, fn: (ev: E) => void): void {
  let buffered = ''
  control.setEncoding('utf8')
  control.on('data', (chunk: string) => {
    buffered += chunk
    for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
      const line = buffered.slice(0, nl)
      buffered = buffered.slice(nl + 1)
      let ev: E
      try {
        ev = JSON.parse(line) as E
      } catch {
        // Never thrown in a 'data' handler (Node would die of it): a line that is not an event
        // (the tail of one an earlier listener read the start of) is none of this listener's.
        continue
      }
      fn(ev)
    }
  })
}

export class Sandbox {
  /** The command's host pid (0 until started). */
  pid = 0
  readonly stdin: Writable | null
  readonly stdout: Readable | null
  readonly stderr: Readable | null
  /** Resolves once the command runs inside the finished sandbox; rejects with the setup error. */
  readonly started: Promise<void>
  readonly #control: Socket
  readonly #done: Promise<SandboxResult>
  readonly #addon: Addon
  readonly #helperPid: number
  readonly #tty: boolean
  #exited = false
  #ended = false

  /**
   * `send`: hands a warm helper its spec, last, once this object listens to the helper (see
   * startSandbox); returns the stdio ends. Throws what it throws, with nothing left listening.
   */
  constructor(addon: Addon, h: SpawnedHelper, readonly command: string, spec: Spec, send?: () => ExecStdio) {
    this.#addon = addon
    this.#tty = spec.tty !== undefined
    this.#helperPid = h.pid
    this.#control = h.socket ?? new Socket({ fd: h.control, readable: true, writable: true })

    let resolveStarted!: () => void
    let rejectStarted!: (e: Error) => void
    this.started = new Promise((res, rej) => ((resolveStarted = res), (rejectStarted = rej)))
    let resolveDone!: (r: SandboxResult) => void
    let rejectDone!: (e: Error) => void
    this.#done = new Promise((res, rej) => ((resolveDone = res), (rejectDone = rej)))
    // Both are observed by their users; never let one of them become an unhandled rejection.
    this.started.catch(() => {})
    this.#done.catch(() => {})

    let failure: IsolateError | undefined
    // Read only for a setup step's failure, which comes before the command runs: not held after
    // (a spec may carry a seccomp profile of megabytes, and the sandbox may run for days).
    let setupSpec: Spec | undefined = spec
    onEvents<Event>(this.#control, (ev) => {
      if (ev.event === 'spawned') {
        this.pid = ev.pid
        setupSpec = undefined
        resolveStarted()
      } else if (ev.event === 'error') {
        failure = setupError(ev, 'sandbox setup', setupSpec ?? {})
        rejectStarted(failure)
        rejectDone(failure)
        this.#destroyStdio()
      } else if (ev.event === 'exit') {
        this.#exited = true
        // Nothing reads it any more; as child_process does, its fd goes now, not when the Sandbox is collected.
        this.stdin?.destroy()
        takeRest(this.stdout)
        takeRest(this.stderr)
        resolveStarted()
        resolveDone({ command, exitCode: ev.exitCode, signal: ev.signal, reason: ev.reason, durationMs: ev.durationMs, pid: this.pid, usage: ev.usage })
      }
    })
    this.#control.on('error', () => {})
    this.#control.on('close', () => {
      this.#ended = true
      reapHelper(this.#addon, this.#helperPid)
      if (!this.#exited && !failure) {
        const e = helperGone(this.#helperPid)
        rejectStarted(e)
        rejectDone(e)
        this.#destroyStdio()
      }
    })
    let io: ExecStdio = h
    if (send) {
      try {
        io = send()
      } catch (e) {
        this.#control.removeAllListeners()
        throw e
      }
    }
    this.stdin = writable(io.stdin)
    this.stdout = readable(io.stdout)
    this.stderr = readable(io.stderr)
  }

  #destroyStdio(): void {
    this.stdin?.destroy()
    this.stdout?.destroy()
    this.stderr?.destroy()
  }


  #send(line: string): boolean {
    if (this.#ended || this.#exited || this.#control.destroyed) return false
    return sendLine(this.#addon, this.#control, line)
  }

  /** Send a signal to the command (SIGKILL ends the whole sandbox at once). */
  kill(signal: SignalName | number = 'SIGTERM'): boolean {
    return this.#send(`signal ${signalNumber(signal)}`)
  }

  /** A sandbox with a tty: the terminal's new size (the command gets SIGWINCH); false without one. */
  resize(cols: number, rows: number): boolean {
    checkSize(cols, rows)
    return this.#tty && this.#send(`resize ${rows} ${cols}`)
  }

  /**
   * End the whole sandbox; `wait()` reports `reason: 'canceled'`. With the `stop` option the
   * command gets its signal and grace first (`kill('SIGKILL')` ends it at once).
   */
  cancel(): boolean {
    return this.#send('cancel')
  }

  /**
   * Resolves once the command and everything it started have ended. The sandbox's own init, its
   * mounts (but an overlay's, gone already) and its cgroup go right after, before its helper exits.
   */
  wait(): Promise<SandboxResult> {
    return this.#done
  }

  /** Let the event loop exit while this sandbox runs, its stdio pipes included (it is still killed when Node exits). */
  unref(): this {
    refStdio([this.#control, this.stdin, this.stdout, this.stderr], false)
    return this
  }

  ref(): this {
    refStdio([this.#control, this.stdin, this.stdout, this.stderr], true)
    return this
  }
}
