/**
 * The keeper: the detached Node process that `isolate create` leaves behind to hold one
 * long-lived sandbox (the sandbox lives exactly as long as it does), and what the other commands
 * use to talk to it.
 *
 * `isolate create` starts it (`startKeeper`) with stdio ignored, in a session of its own, and one
 * pipe on fd 3: down it go the sandbox options, up it comes `{ id }` once the sandbox exists and
 * the keeper listens on `<id>.sock` (or the setup error). It then serves requests over its
 * socket, one per connection, in the frames of ./frames.ts:
 *
 * - `exec`: run a command inside (`PersistentSandbox.spawn`) and relay its stdio, signals and
 *   terminal size until it ends;
 * - `info`: its entry;
 * - `rm`: destroy the sandbox, remove its files, answer, exit.
 *
 * When the sandbox ends on its own (its lifetime, OOM...), the keeper removes its files and exits
 * too. A keeper killed outright takes its sandbox with it (the library's lifeline); its files stay
 * until `isolate ps` (or the next look-up of that id) finds nobody listening and removes them.
 */
import { spawn } from 'node:child_process'
import { chmodSync, rmSync } from 'node:fs'
import { createServer, Socket, type Server } from 'node:net'
import { createSandbox, IsolateError, type ExecOptions, type ExecProcess, type PersistentSandbox, type SandboxOptions, type SandboxResult, type Stop } from '../index.js'
import { ackFrame, encodeFrame, Frame, jsonFrame, onFrames } from './frames.js'
import { claimName, endedError, ensureRuntimeDir, forgetEnded, jsonPath, NotFoundError, procGone, procStartTime, RegistryError, releaseName, removeFiles, runtimeDir, sockPath, writeEnded, writeEntry, type SandboxEntry } from './registry.js'
import { execRest } from './sandbox.js'

/** What `create` sends the keeper on fd 3. */
export interface KeeperSetup {
  options: SandboxOptions
  name?: string
  /** For `ps`: what the sandbox was made of (no environment values). */
  summary: Record<string, unknown>
}

/** The keeper's one line back on fd 3. */
export type KeeperReport = { id: string; pid: number } | { error: Record<string, unknown> }

/** The request frame of an `exec` connection. */
export interface ExecRequest {
  op: 'exec'
  file: string
  args: string[]
  env?: Record<string, string>
  cwd?: string
  tty?: { rows: number; cols: number }
  timeoutMs?: number
  stop?: Stop
  /** The client waits for STDIN_ACK frames (a client from before them sends on and is paused). */
  stdinAcks?: boolean
}

export type KeeperRequest = ExecRequest | { op: 'info' } | { op: 'rm' } | { op: 'kill-all' }

/** The code of an error frame about a sandbox that is being (or has been) destroyed. */
export const DESTROYED = 'ERR_ISOLATE_DESTROYED'

// ---------------------------------------------------------------------------------------------
// Errors across the wire

/** An error as it travels in a frame or on fd 3. */
export function errorToJSON(e: unknown): Record<string, unknown> {
  if (e instanceof IsolateError) return e.toJSON()
  if (e instanceof RegistryError) return { name: e.name, message: e.message, hint: e.hint }
  return { name: 'Error', message: e instanceof Error ? e.message : String(e) }
}

/** Back into an `IsolateError` when it was one (with its details), else a plain `Error`. */
export function errorFromJSON(o: Record<string, unknown>): Error {
  const s = (k: string) => (typeof o[k] === 'string' ? (o[k] as string) : undefined)
  let message = s('message') ?? 'unknown error'
  const hint = s('hint')
  if (s('name') === 'IsolateError' && s('code')) {
    // The message already ends with the hint; the constructor appends it again.
    if (hint && message.endsWith(` (hint: ${hint})`)) message = message.slice(0, -` (hint: ${hint})`.length)
    return new IsolateError(message, { code: s('code') as IsolateError['code'], step: s('step'), path: s('path'), errno: s('errno'), hint, option: s('option') })
  }
  return new RegistryError(message, hint)
}

// ---------------------------------------------------------------------------------------------
// isolate create: start a keeper and wait for its report

/**
 * Start a keeper for a sandbox with these options, detached from us (own session, stdio
 * ignored), and wait until it reports. Resolves with the id, or rejects with the setup error
 * (an `IsolateError` as `createSandbox` threw it).
 */
export function startKeeper(cliFile: string, setup: KeeperSetup): Promise<{ id: string; pid: number }> {
  // The same Node and loader flags as ours (tsx when run from source), minus a debugger's.
  const execArgv = process.execArgv.filter((a) => !a.startsWith('--inspect'))
  const child = spawn(process.execPath, [...execArgv, cliFile, '__keeper'], {
    detached: true,
    // Our cwd, so that loader flags resolve; the keeper moves to / as soon as it runs, so the
    // runtime directory is ours as we resolved it (a relative ISOLATE_RUNTIME_DIR would be /'s).
    stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
    env: { ...process.env, ISOLATE_RUNTIME_DIR: runtimeDir() },
  })
  const pipe = child.stdio[3] as Socket
  return new Promise((resolve, reject) => {
    let line = ''
    let settled = false
    const exited = new Promise<void>((r) => child.once('exit', () => r()))
    const fail = (e: Error) => {
      if (settled) return
      settled = true
      pipe.destroy()
      // It reported a failure, or died: it is our child until it is gone, so wait for that (it
      // exits right after reporting) and leave nothing behind.
      void Promise.race([exited, new Promise((r) => setTimeout(r, 5000).unref())]).then(() => reject(e))
    }
    child.once('error', (e) => fail(new RegistryError(`could not start the sandbox keeper: ${e.message}`)))
    pipe.setEncoding('utf8')
    pipe.on('data', (d: string) => {
      line += d
      const nl = line.indexOf('\n')
      if (nl < 0 || settled) return
      let report: KeeperReport
      try {
        report = JSON.parse(line.slice(0, nl)) as KeeperReport
      } catch {
        return fail(new RegistryError('the sandbox keeper sent a report that is not JSON'))
      }
      if ('error' in report) return fail(errorFromJSON(report.error))
      settled = true
      pipe.destroy()
      child.unref()
      resolve(report)
    })
    pipe.on('error', () => {})
    pipe.on('close', () => fail(new RegistryError('the sandbox keeper ended before it reported', 'run the same options with isolate run to see what fails')))
    pipe.write(`${JSON.stringify(setup, (key, v: unknown) => (key === 'pids' && v === Infinity ? 'Infinity' : v))}\n`)
  })
}

// ---------------------------------------------------------------------------------------------
// The keeper itself

/** `p`, or nothing after `ms` (a timer that holds nothing up once `p` is settled). */
async function within(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([p, new Promise((r) => (timer = setTimeout(r, ms)))])
  clearTimeout(timer)
}

/** The one line `create` sends on fd 3. */
function readSetup(ctl: Socket): Promise<KeeperSetup> {
  return new Promise((resolve, reject) => {
    let buf = ''
    const onData = (d: string) => {
      buf += d
      const nl = buf.indexOf('\n')
      if (nl < 0) return
      ctl.off('data', onData)
      ctl.pause()
      try {
        // JSON has no Infinity: `limits.pids: Infinity` (no bound) crosses as text.
        resolve(JSON.parse(buf.slice(0, nl), (key, v: unknown) => (key === 'pids' && v === 'Infinity' ? Infinity : v)) as KeeperSetup)
      } catch (e) {
        reject(e)
      }
    }
    ctl.setEncoding('utf8')
    ctl.on('data', onData)
    ctl.once('close', () => reject(new Error('create went away before sending the options')))
  })
}

/**
 * The hidden `isolate __keeper` subcommand. Resolves with the exit code once the sandbox is gone
 * and every file of it removed.
 */
export async function runKeeper(): Promise<number> {
  process.chdir('/')
  process.umask(0o077)
  // Its own session already; a hang-up of a terminal it never had must not end the sandbox.
  process.on('SIGHUP', () => {})
  const ctl = new Socket({ fd: 3, readable: true, writable: true })
  ctl.on('error', () => {})
  // `create` may be interrupted at any moment before it has the id (Ctrl-C, a kill): then
  // nobody will ever learn it, and the sandbox, without a time limit, would be kept for good.
  let creatorGone = false
  ctl.once('close', () => (creatorGone = true))
  // Written (true), or given up on when `create` is no longer there to read it.
  const report = (r: KeeperReport) => {
    let written = false
    const sent = new Promise<void>((res) => {
      if (ctl.destroyed) return res()
      ctl.once('error', () => res())
      ctl.end(`${JSON.stringify(r)}\n`, () => {
        written = !creatorGone
        res()
      })
    })
    return within(sent, 2000).then(() => written)
  }

  let setup: KeeperSetup
  let dir: string
  let sb: PersistentSandbox
  try {
    setup = await readSetup(ctl)
    // Read on (nothing more comes): its end, should `create` go, is seen while the sandbox is made.
    ctl.on('data', () => {})
    ctl.resume()
    dir = ensureRuntimeDir()
    sb = await createSandbox(setup.options)
  } catch (e) {
    await report({ error: errorToJSON(e) })
    return 1
  }

  const keeper = new Keeper(sb, dir, setup)
  try {
    await keeper.listen()
    const held = setup.name === undefined ? undefined : await claimName(dir, setup.name, sb.id)
    if (held !== undefined) throw new RegistryError(`the name ${setup.name} is taken by sandbox ${held}`, "choose another --name, or 'isolate rm' that one first")
    if (setup.name !== undefined) {
      keeper.name = setup.name
      // The name is this sandbox's now: an earlier one's end under it would be told of this one.
      forgetEnded(dir, setup.name)
    }
    writeEntry(dir, keeper.entry())
  } catch (e) {
    await keeper.shutdown()
    await report({ error: errorToJSON(e) })
    return 1
  }
  process.title = `isolate keeper ${sb.id}`
  if (creatorGone || !(await report({ id: sb.id, pid: sb.pid }))) {
    await keeper.shutdown()
    return 1
  }

  // Asked to end: as rm does. Asked again while that is under way: now.
  let asked = false
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.on(sig, () => {
      if (asked) {
        keeper.removeFilesSync()
        process.exit(128 + (sig === 'SIGTERM' ? 15 : 2))
      }
      asked = true
      keeper.recordEnd({ reason: 'canceled', exitCode: null, signal: null })
      void keeper.shutdown()
    })
  }
  // An unexpected failure of ours: the sandbox dies with us anyway; leave no files that say otherwise.
  process.on('uncaughtException', () => {
    keeper.removeFilesSync()
    process.exit(70)
  })
  void sb.wait().then(
    (result) => {
      keeper.recordEnd(result)
      return keeper.shutdown()
    },
    () => keeper.shutdown(),
  )
  await keeper.done
  // Nothing of ours should be left to keep us; if something is, it must not keep us either.
  setTimeout(() => process.exit(0), 2000).unref()
  return 0
}

class Keeper {
  readonly #sb: PersistentSandbox
  readonly #dir: string
  readonly #setup: KeeperSetup
  readonly #created = new Date().toISOString()
  #server: Server | undefined
  /** Connections still relaying an exec; shutdown lets them send their exit first. */
  readonly #execs = new Set<Promise<void>>()
  readonly #conns = new Set<Socket>()
  #closing: Promise<SandboxResult | undefined> | undefined
  name: string | undefined
  #resolveDone!: () => void
  readonly done = new Promise<void>((r) => (this.#resolveDone = r))

  constructor(sb: PersistentSandbox, dir: string, setup: KeeperSetup) {
    this.#sb = sb
    this.#dir = dir
    this.#setup = setup
  }

  entry(): SandboxEntry {
    const rootfs = this.#setup.options.rootfs
    return {
      id: this.#sb.id,
      ...(this.name !== undefined ? { name: this.name } : {}),
      keeperPid: process.pid,
      keeperStart: procStartTime(process.pid) ?? '',
      pid: this.#sb.pid,
      created: this.#created,
      rootfs: typeof rootfs === 'string' ? rootfs : rootfs === undefined ? 'host' : JSON.stringify(rootfs),
      summary: this.#setup.summary,
    }
  }

  listen(): Promise<void> {
    const path = sockPath(this.#dir, this.#sb.id)
    return new Promise((resolve, reject) => {
      const server = createServer((conn) => this.#serve(conn))
      server.once('error', reject)
      server.listen(path, () => {
        server.off('error', reject)
        server.on('error', () => {})
        this.#server = server
        chmodSync(path, 0o600)
        resolve()
      })
    })
  }

  /**
   * Leave a record of an end nobody asked for with `isolate rm` (its --timeout, its init's end, a
   * signal to this keeper), written before the sandbox's files go: an exec or rm that comes later
   * finds one or the other and says why, never just "no such sandbox".
   */
  recordEnd(result: Pick<SandboxResult, 'reason' | 'exitCode' | 'signal'>): void {
    if (this.#closing !== undefined) return
    try {
      const timeoutMs = this.#setup.options.limits?.timeoutMs ?? this.#setup.options.timeoutMs
      writeEnded(this.#dir, {
        id: this.#sb.id,
        ...(this.name !== undefined ? { name: this.name } : {}),
        ended: new Date().toISOString(),
        reason: result.reason,
        exitCode: result.exitCode,
        signal: result.signal,
        ...(typeof timeoutMs === 'number' ? { timeoutMs } : {}),
      })
    } catch {}
  }

  removeFilesSync(): void {
    if (this.name !== undefined) releaseName(this.#dir, this.name, this.#sb.id)
    rmSync(jsonPath(this.#dir, this.#sb.id), { force: true })
    rmSync(`${jsonPath(this.#dir, this.#sb.id)}.tmp`, { force: true })
    rmSync(sockPath(this.#dir, this.#sb.id), { force: true })
  }

  /**
   * Destroy the sandbox (if it still runs), let running execs report their end, stop listening,
   * remove every file. Idempotent; resolves with the sandbox's result.
   */
  shutdown(): Promise<SandboxResult | undefined> {
    this.#closing ??= (async () => {
      // No longer listed from here on; new requests are refused as destroyed.
      if (this.name !== undefined) releaseName(this.#dir, this.name, this.#sb.id)
      rmSync(jsonPath(this.#dir, this.#sb.id), { force: true })
      let result: SandboxResult | undefined
      try {
        result = await this.#sb.destroy()
      } catch {
        result = undefined
      }
      await within(Promise.allSettled([...this.#execs]), 3000)
      // Stop accepting (its callback would wait for the connections, the rm ones among them,
      // which wait for us: not awaited).
      this.#server?.close()
      this.removeFilesSync()
      return result
    })()
    void this.#closing.then(() => {
      // Requests that wait for the end (rm) answer once the files are gone; then we are done.
      setImmediate(() => {
        for (const c of this.#conns) if (!c.writableEnded) c.end()
        this.#resolveDone()
      })
    })
    return this.#closing
  }

  #serve(conn: Socket): void {
    this.#conns.add(conn)
    conn.on('close', () => this.#conns.delete(conn))
    conn.on('error', () => {})
    let handler: ((type: number, payload: Buffer) => void) | undefined
    onFrames(conn, (type, payload) => {
      if (handler) return handler(type, payload)
      let req: KeeperRequest | undefined
      try {
        if (type === Frame.REQUEST) req = JSON.parse(payload.toString('utf8')) as KeeperRequest
      } catch {}
      if (req) handler = this.#handle(conn, req)
      else conn.destroy()
    })
  }

  /** Start serving one request; returns what takes the frames that follow it. */
  #handle(conn: Socket, req: KeeperRequest): (type: number, payload: Buffer) => void {
    const ignore = () => {}
    if (req.op === 'info') {
      conn.end(jsonFrame(Frame.REPLY, this.entry()))
      return ignore
    }
    if (req.op === 'rm') {
      void this.shutdown().then((result) => {
        if (!conn.destroyed) conn.end(jsonFrame(Frame.REPLY, { id: this.#sb.id, result: result ?? null }))
      })
      return ignore
    }
    if (req.op === 'kill-all') {
      this.#sb.killAll().then(
        () => conn.destroyed || conn.end(jsonFrame(Frame.REPLY, { id: this.#sb.id })),
        (e: unknown) => conn.destroyed || conn.end(jsonFrame(Frame.ERROR, errorToJSON(e))),
      )
      return ignore
    }
    if (req.op === 'exec') {
      const relay = new ExecRelay(this.#sb, conn, req, this.#closing !== undefined)
      const p = relay.run()
      this.#execs.add(p)
      void p.finally(() => this.#execs.delete(p))
      return (type, payload) => relay.frame(type, payload)
    }
    conn.end(jsonFrame(Frame.ERROR, { name: 'Error', message: `unknown request ${JSON.stringify((req as { op?: unknown }).op)}` }))
    return ignore
  }
}

/** One `exec` connection: the command's stdio over the frames, until it ends. */
class ExecRelay {
  #proc: ExecProcess | undefined
  /** Frames that came before the command ran: delivered once it does. */
  #early: Array<[number, Buffer]> = []
  #finished = false

  constructor(
    readonly sb: PersistentSandbox,
    readonly conn: Socket,
    readonly req: ExecRequest,
    readonly refused: boolean,
  ) {}

  #send(buf: Buffer): boolean {
    if (this.conn.destroyed || this.conn.writableEnded) return true
    return this.conn.write(buf)
  }

  frame(type: number, payload: Buffer): void {
    if (this.#finished) return
    const proc = this.#proc
    if (!proc) {
      this.#early.push([type, payload])
      return
    }
    switch (type) {
      case Frame.STDIN: {
        const stdin = proc.stdin
        const ack = () => void (this.req.stdinAcks && this.#send(ackFrame(payload.length)))
        if (!stdin || stdin.destroyed || stdin.writableEnded) {
          // Nobody takes it any more: gone, as a write to a closed pipe's would be.
          ack()
        } else if (!stdin.write(payload, ack) && !this.req.stdinAcks) {
          // A client that sends on regardless: stop reading it while the command catches up
          // (which stalls its signals behind its stdin: what the acknowledgements avoid).
          this.conn.pause()
          stdin.once('drain', () => this.conn.resume())
        }
        break
      }
      case Frame.STDIN_EOF:
        if (proc.stdin && !proc.stdin.destroyed) proc.stdin.end()
        break
      case Frame.RESIZE: {
        try {
          const { cols, rows } = JSON.parse(payload.toString('utf8')) as { cols: number; rows: number }
          proc.resize(cols, rows)
        } catch {}
        break
      }
      case Frame.SIGNAL: {
        const signal = payload.toString('utf8') as NodeJS.Signals
        try {
          // A kill (isolate's second SIGTERM, its third SIGINT) ends what the command runs in
          // its foreground too, its process group, as --timeout does; a signal goes to it alone.
          if (signal === 'SIGKILL') proc._killGroup()
          else proc.kill(signal)
        } catch {}
        break
      }
      default:
        break
    }
  }

  async run(): Promise<void> {
    const { file, args, env, cwd, tty, timeoutMs, stop } = this.req
    if (this.refused || this.sb.destroyed) {
      this.#finished = true
      this.conn.end(jsonFrame(Frame.ERROR, { name: 'IsolateError', code: DESTROYED, message: `sandbox ${this.sb.id} has ended` }))
      return
    }
    // The client went away before the end: the command goes too, with its process group (what
    // it started in the background, in a group of its own, stays, as in any sandbox of this kind).
    let clientGone = false
    const onClose = () => {
      clientGone = true
      if (this.#proc && !this.#finished) this.#proc._killGroup()
    }
    this.conn.once('close', onClose)
    const opts: ExecOptions = { stdio: 'pipe' }
    if (env !== undefined) opts.env = env
    if (cwd !== undefined) opts.cwd = cwd
    if (tty !== undefined) opts.tty = tty
    if (timeoutMs !== undefined) opts.timeoutMs = timeoutMs
    if (stop !== undefined) opts.stop = stop
    let proc: ExecProcess
    try {
      proc = await this.sb.spawn(file, args ?? [], opts)
    } catch (e) {
      this.#finished = true
      this.conn.off('close', onClose)
      this.conn.end(jsonFrame(Frame.ERROR, errorToJSON(e)))
      return
    }
    this.#proc = proc
    if (clientGone) proc._killGroup()
    proc.stdin?.on('error', () => {})
    this.#send(jsonFrame(Frame.START, { pid: proc.pid, stdinAcks: true }))

    // Output, in order, with backpressure from the connection.
    let lastData = Date.now()
    /** Streams paused until the connection drains: their output waits on the client, it has not stopped. */
    let waiting = 0
    /** What came after the command's end, from processes it left or out of its pipes. */
    let afterExit = 0
    let exited = false
    const pump = (stream: NodeJS.ReadableStream | null, type: number) => {
      if (!stream) return Promise.resolve()
      return new Promise<void>((resolve) => {
        stream.on('data', (d: Buffer) => {
          lastData = Date.now()
          if (exited) afterExit += d.length
          if (!this.#send(encodeFrame(type, d))) {
            stream.pause()
            waiting++
            this.conn.once('drain', () => {
              waiting--
              lastData = Date.now()
              stream.resume()
            })
          }
        })
        stream.once('end', resolve)
        stream.once('close', resolve)
        stream.on('error', () => resolve())
      })
    }
    const outputs = Promise.all([pump(proc.stdout, Frame.STDOUT), pump(proc.stderr, Frame.STDERR)])

    for (const [type, payload] of this.#early.splice(0)) this.frame(type, payload)

    let exit
    try {
      exit = await proc.wait()
    } catch (e) {
      this.#finished = true
      this.conn.off('close', onClose)
      this.conn.end(jsonFrame(Frame.ERROR, errorToJSON(e)))
      return
    }
    // What it wrote before it ended is still in the pipes: pass it on. Its output ends when
    // the last writer is gone; one it left in the background may hold it open, so stop once
    // nothing has come for a while, after 2 s, or past what its pipes could have held (as the
    // library bounds an exec's rest). Time spent waiting on a slow client counts for none of
    // these: what waits then is output, not silence.
    exited = true
    let ended = false
    const quiet = new Promise<void>((resolve) => {
      let flowing = 0
      let prev = Date.now()
      const tick = () => {
        const now = Date.now()
        if (waiting > 0) lastData = now
        else flowing += now - prev
        prev = now
        // A client gone meanwhile drains nothing any more: what waits for it waits for no one.
        if (ended || this.conn.destroyed || now - lastData >= 100 || flowing >= 2000 || afterExit > execRest()) resolve()
        else setTimeout(tick, 25)
      }
      tick()
    })
    await Promise.race([outputs, quiet])
    ended = true
    this.#finished = true
    this.conn.off('close', onClose)
    this.conn.resume()
    proc.stdin?.destroy()
    proc.stdout?.destroy()
    proc.stderr?.destroy()
    this.conn.end(jsonFrame(Frame.EXIT, exit))
  }
}

// ---------------------------------------------------------------------------------------------
// Talking to a keeper

/** Connect to the keeper of `id`; a keeper that is gone is a NotFoundError naming `ref`. */
export function connectKeeper(dir: string, id: string, ref: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = new Socket()
    s.once('error', (e: NodeJS.ErrnoException) => {
      reject(e.code === 'ECONNREFUSED' || e.code === 'ENOENT' ? endedError(dir, ref) : e)
    })
    s.connect(sockPath(dir, id), () => {
      s.removeAllListeners('error')
      resolve(s)
    })
  })
}

/**
 * `isolate rm`: ask the keeper to destroy its sandbox, then wait until the keeper has exited.
 * Resolves with the sandbox's result (null when it had already ended). With `force` (`rm -f`), a
 * keeper that has not ended it within 2 s (stopped, stuck) is killed, which ends the sandbox too:
 * its helper ends everything in it once the keeper's end closes its control socket.
 */
export async function removeSandbox(dir: string, entry: SandboxEntry, ref: string, { timeoutMs = 30_000, force = false } = {}): Promise<SandboxResult | null> {
  try {
    return await removeWithin(dir, entry, ref, force ? FORCE_AFTER_MS : timeoutMs)
  } catch (e) {
    if (!force || !(e instanceof RegistryError)) throw e
  }
  // Still the keeper this entry names (its start time), not a process that took its pid since.
  if (!procGone(entry.keeperPid, entry.keeperStart)) {
    try {
      process.kill(entry.keeperPid, 'SIGKILL')
    } catch {}
  }
  const end = Date.now() + timeoutMs
  while (!procGone(entry.keeperPid, entry.keeperStart)) {
    if (Date.now() > end) throw new RegistryError(`sandbox ${entry.id}: its keeper (pid ${entry.keeperPid}) was killed and has not exited after ${timeoutMs / 1000}s`)
    await new Promise((r) => setTimeout(r, 10))
  }
  removeFiles(dir, entry.id)
  return null
}

/**
 * `isolate kill-all`: ask the keeper to kill every process in its sandbox but the init (the
 * sandbox stays). Resolves once they are gone; rejects with the keeper's error (an `IsolateError`
 * of code DESTROYED for a sandbox that is ending), or a RegistryError after `timeoutMs`.
 */
export async function killAllIn(dir: string, entry: SandboxEntry, ref: string, timeoutMs = 30_000): Promise<void> {
  const conn = await connectKeeper(dir, entry.id, ref)
  const late = () => new RegistryError(`sandbox ${entry.id}: its keeper (pid ${entry.keeperPid}) has not killed its processes after ${timeoutMs / 1000}s`, 'a process stuck in the kernel (state D) holds it; `isolate rm -f` ends the sandbox')
  const answer = await askKeeper(conn, { op: 'kill-all' }, timeoutMs, late)
  if (answer.error) throw answer.error
  if (!('reply' in answer)) throw new RegistryError(`sandbox ${entry.id}: its keeper (pid ${entry.keeperPid}) closed the connection without an answer (was it killed?)`)
}

/**
 * Send one request on `conn` and wait until the keeper closes it (it does once it has answered):
 * resolves with its REPLY's payload or the error it sent, or neither (closed without an answer);
 * rejects with `late()` when it has neither answered nor closed within `timeoutMs`.
 */
function askKeeper(conn: Socket, request: KeeperRequest, timeoutMs: number, late: () => Error): Promise<{ reply?: unknown; error?: Error }> {
  return new Promise((resolve, reject) => {
    const answer: { reply?: unknown; error?: Error } = {}
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      conn.destroy()
    }, timeoutMs)
    onFrames(conn, (type, payload) => {
      if ('reply' in answer || answer.error) return
      try {
        if (type === Frame.REPLY) answer.reply = JSON.parse(payload.toString('utf8'))
        else if (type === Frame.ERROR) answer.error = errorFromJSON(JSON.parse(payload.toString('utf8')) as Record<string, unknown>)
      } catch {
        conn.destroy()
      }
    })
    conn.on('error', () => {})
    conn.on('close', () => {
      clearTimeout(timer)
      if (timedOut && !('reply' in answer) && !answer.error) reject(late())
      else resolve(answer)
    })
    conn.write(jsonFrame(Frame.REQUEST, request))
  })
}

/** How long `rm -f` lets a keeper take before it kills it. */
const FORCE_AFTER_MS = 2000

async function removeWithin(dir: string, entry: SandboxEntry, ref: string, timeoutMs: number): Promise<SandboxResult | null> {
  const end = Date.now() + timeoutMs
  const late = () =>
    new RegistryError(`sandbox ${entry.id}: its keeper (pid ${entry.keeperPid}) has not ended it after ${timeoutMs / 1000}s`, 'it is stopped or stuck: `isolate rm -f` kills it, and its sandbox with it')
  let result: SandboxResult | null = null
  let conn: Socket | undefined
  try {
    conn = await connectKeeper(dir, entry.id, ref)
  } catch (e) {
    if (!(e instanceof NotFoundError)) throw e
  }
  if (conn) {
    const answer = await askKeeper(conn, { op: 'rm' }, timeoutMs, late)
    result = (answer.reply as { result?: SandboxResult | null } | undefined)?.result ?? null
  }
  // The keeper answers after removing its files, and exits right after.
  while (!procGone(entry.keeperPid, entry.keeperStart)) {
    if (Date.now() > end) throw late()
    await new Promise((r) => setTimeout(r, 10))
  }
  // Normally gone already; not so when the keeper died without cleaning up.
  removeFiles(dir, entry.id)
  return result
}
