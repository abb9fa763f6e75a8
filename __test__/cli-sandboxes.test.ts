/**
 * `isolate create`, `exec`, `ps`, `rm`: sandboxes that outlive the command that made them, held
 * by a detached keeper process, driven as a user drives them (real processes, real exit codes).
 * Each test has a runtime directory of its own and leaves nothing: no keeper, no process of a
 * sandbox, no file.
 */
import test, { type ExecutionContext } from 'ava'
import { execFile, spawn } from 'node:child_process'
import { accessSync, chmodSync, constants, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { probe } from '../index.js'
import { limitsHold } from '../lib/probe.js'
import { encodeFrame, FrameDecoder } from '../lib/frames.js'
import { cli, cliUnderTerminal, limited, type CliOptions, type CliResult } from './cli-runner.js'
import { driveShellInTmux, hasTmux, pidAlive, removeDir, root, tempDir, waitUntil } from './helpers.js'

const cliPath = join(root, 'cli.ts')

interface Entry {
  id: string
  name?: string
  pid: number
  keeperPid: number
  created: string
  rootfs: string
}

/** A runtime directory of its own, and the CLI pointed at it. */
class Runtime {
  readonly dir = mkdtempSync(join(tmpdir(), 'isolate-rt-'))
  readonly env: NodeJS.ProcessEnv = { ...process.env, ISOLATE_RUNTIME_DIR: this.dir }
  /** Keepers seen, for the final check (and the last-resort cleanup). */
  readonly keepers = new Set<number>()

  cli(args: string[], opts: Omit<CliOptions, 'env'> = {}): Promise<CliResult> {
    return cli(args, { ...opts, env: this.env })
  }

  /** `sh -c script` with `$ISOLATE` the CLI, for pipelines. */
  shell(script: string): Promise<CliResult> {
    return limited(
      () =>
        new Promise((resolve, reject) => {
          const env = { ...this.env, ISOLATE: `${process.execPath} --import=tsx ${cliPath}` }
          execFile('/bin/sh', ['-c', script], { cwd: root, env }, (err, stdout, stderr) => {
            if (err && typeof err.code !== 'number') reject(err)
            else resolve({ status: err ? (err.code as number) : 0, signal: null, stdout, stderr })
          })
        }),
    )
  }

  async create(t: ExecutionContext, args: string[] = []): Promise<string> {
    const r = await this.cli(['create', ...args])
    t.is(r.status, 0, r.stderr)
    t.regex(r.stdout, /^[0-9a-f]{12}\n$/)
    const id = r.stdout.trim()
    this.keepers.add(this.entry(id).keeperPid)
    return id
  }

  /** What the keeper of `id` wrote about it. */
  entry(id: string): Entry {
    return JSON.parse(readFileSync(join(this.dir, `${id}.json`), 'utf8')) as Entry
  }

  async ps(t: ExecutionContext): Promise<Entry[]> {
    const r = await this.cli(['ps', '--json'])
    t.is(r.status, 0, r.stderr)
    return JSON.parse(r.stdout) as Entry[]
  }

  files(): string[] {
    return existsSync(this.dir) ? readdirSync(this.dir) : []
  }

  /** Host processes that carry this runtime directory in their environment (keepers, helpers). */
  processes(): number[] {
    const needle = Buffer.from(`ISOLATE_RUNTIME_DIR=${this.dir}\0`)
    const found: number[] = []
    for (const name of readdirSync('/proc')) {
      if (!/^\d+$/.test(name) || Number(name) === process.pid) continue
      try {
        if (readFileSync(`/proc/${name}/environ`).includes(needle) && pidAlive(Number(name))) found.push(Number(name))
      } catch {}
    }
    return found
  }

  /** The end of every test: nothing of it is left on the host. */
  async assertClean(t: ExecutionContext): Promise<void> {
    t.deepEqual(await this.ps(t), [])
    t.true(await waitUntil(() => [...this.keepers].every((p) => !pidAlive(p)), 10_000), `keepers ${[...this.keepers]} gone`)
    t.deepEqual(this.files().filter((f) => /\.(sock|json|name|tmp)$/.test(f)), [])
    t.true(await waitUntil(() => this.processes().length === 0, 10_000), `processes left: ${this.processes()}`)
  }

  /** Teardown: whatever a failed test left. Keepers are ours (we started them): their pids only. */
  async cleanup(): Promise<void> {
    try {
      const r = await this.cli(['ps', '--json'])
      const ids = (JSON.parse(r.stdout) as Entry[]).map((e) => e.id)
      if (ids.length) await this.cli(['rm', '-f', ...ids])
    } catch {}
    for (const pid of this.keepers) {
      if (!pidAlive(pid)) continue
      try {
        process.kill(pid, 'SIGKILL')
      } catch {}
    }
    removeDir(this.dir)
  }
}

function runtime(t: ExecutionContext): Runtime {
  const rt = new Runtime()
  t.teardown(() => rt.cleanup())
  return rt
}

/** Host pids whose command line holds `marker`. */
function hostProcessesWith(marker: string): number[] {
  const found: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(marker) && pidAlive(Number(name))) found.push(Number(name))
    } catch {}
  }
  return found
}

test('frames: the same frames however the bytes are cut', (t) => {
  const frames = [
    { type: 0x01, payload: Buffer.from('{"op":"exec"}') },
    { type: 0x03, payload: Buffer.alloc(0) },
    { type: 0x12, payload: Buffer.alloc(70_000, 7) },
    { type: 0x14, payload: Buffer.from('{"exitCode":0}') },
  ]
  const wire = Buffer.concat(frames.map((f) => encodeFrame(f.type, f.payload)))
  for (const cut of [1, 2, 5, 6, 4096, wire.length]) {
    const d = new FrameDecoder()
    const got = []
    for (let i = 0; i < wire.length; i += cut) got.push(...d.push(wire.subarray(i, i + cut)))
    t.deepEqual(got.map((f) => ({ type: f.type, payload: Buffer.from(f.payload) })), frames, `chunks of ${cut}`)
    t.is(d.buffered, 0)
  }
  const huge = Buffer.alloc(5)
  huge.writeUInt32BE(0xffffffff, 1)
  t.throws(() => new FrameDecoder().push(huge), { message: /longer than/ })
})

test('exec: a client that goes away takes its command with it, and what the command runs in its foreground (its process group)', async (t) => {
  const rt = runtime(t)
  const id = await rt.create(t)
  const marker = `isolate-gone-${process.pid}-${Date.now()}`
  // The command is the outer shell; the marked one is its child, in its process group.
  const r = await rt.cli(['exec', id, '--', '/bin/sh', '-c', `echo ready; /bin/sh -c 'sleep 300; : ${marker}'; echo after`], {
    onStdout: { text: 'ready', then: (child) => child.kill('SIGKILL') },
  })
  t.is(r.signal, 'SIGKILL')
  t.true(await waitUntil(() => hostProcessesWith(marker).length === 0, 10_000), 'the command and its child were killed')
  const still = await rt.cli(['exec', id, '--', '/bin/echo', 'alive'])
  t.is(still.stdout, 'alive\n', 'the sandbox lives on')
  t.is((await rt.cli(['rm', id])).status, 0)
  await rt.assertClean(t)
})

test("exec: a command that never reads its stdin holds up neither the signals forwarded to it nor its end with its client's (the keeper never stops reading the client for stdin)", async (t) => {
  const rt = runtime(t)
  const id = await rt.create(t)
  // Megabytes more stdin than any pipe or socket buffer holds, and a command that reads none of it.
  const input = 'x'.repeat(8 << 20)
  const termed = await rt.cli(['exec', id, '--', '/bin/sh', '-c', 'echo ready; exec /bin/sleep 20'], { input, onStdout: { text: 'ready', then: (child) => setTimeout(() => child.kill('SIGTERM'), 300) } })
  t.is(termed.status, 143, `SIGTERM reached the command: ${termed.stderr}`)
  const marker = `isolate-unread-${process.pid}-${Date.now()}`
  const killed = await rt.cli(['exec', id, '--', '/bin/sh', '-c', `echo ready; /bin/sh -c 'sleep 300; : ${marker}'`], { input, onStdout: { text: 'ready', then: (child) => setTimeout(() => child.kill('SIGKILL'), 300) } })
  t.is(killed.signal, 'SIGKILL')
  t.true(await waitUntil(() => hostProcessesWith(marker).length === 0, 10_000), 'the client gone, the command and its child were killed')
  // Read, it all arrives, in order.
  const read = await rt.cli(['exec', id, '--', '/bin/sh', '-c', 'wc -c; echo done'], { input })
  t.is(read.stdout, `${8 << 20}\ndone\n`, read.stderr)
  t.is((await rt.cli(['rm', id])).status, 0)
  await rt.assertClean(t)
})

test('exec: all of the output reaches a reader slower than the pipes are large (the keeper waits on it, it does not take the wait for the end of the output)', async (t) => {
  const rt = runtime(t)
  const id = await rt.create(t)
  const r = await rt.shell(`$ISOLATE exec ${id} -- /usr/bin/head -c 600000 /dev/zero | (sleep 1.5; wc -c)`)
  t.is(r.stdout.trim(), '600000', r.stderr)
  // Processes it left that write on do not keep the exec from ending.
  const left = await rt.shell(`$ISOLATE exec ${id} -- /bin/sh -c 'yes & echo started' | (sleep 1; wc -c)`)
  t.is(left.status, 0, left.stderr)
  t.true(Number(left.stdout.trim()) > 0)
  t.is((await rt.cli(['rm', id])).status, 0)
  await rt.assertClean(t)
})

test("exec: a client killed while the command's output waits on it: the keeper lets go of that exec (its pipes, its connection) as it does for any other end", async (t) => {
  const rt = runtime(t)
  const id = await rt.create(t)
  const keeper = rt.entry(id).keeperPid
  const fds = () => readdirSync(`/proc/${keeper}/fd`).length
  const before = fds()
  // Its stdout is never read: the keeper's output for it waits for the connection to drain.
  const client = spawn(process.execPath, ['--import=tsx', cliPath, 'exec', id, '--', '/usr/bin/head', '-c', '20000000', '/dev/zero'], { cwd: root, env: rt.env, stdio: ['ignore', 'pipe', 'ignore'] })
  client.stdout!.pause()
  t.true(await waitUntil(() => fds() > before, 10_000), 'the exec runs')
  await new Promise((r) => setTimeout(r, 1000))
  client.kill('SIGKILL')
  await new Promise((r) => client.once('close', r))
  t.true(await waitUntil(() => fds() <= before, 10_000), `the keeper holds ${fds()} descriptors, ${before} before the exec`)
  // And nothing of it goes on waking the keeper (a wait for output for no one ran every 25 ms).
  const wakeups = () => readdirSync(`/proc/${keeper}/task`).reduce((n, tid) => n + Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(readFileSync(`/proc/${keeper}/task/${tid}/status`, 'utf8'))?.[1] ?? 0), 0)
  await new Promise((r) => setTimeout(r, 500))
  const w0 = wakeups()
  await new Promise((r) => setTimeout(r, 2000))
  t.true(wakeups() - w0 < 20, `the idle keeper woke ${wakeups() - w0} times in 2 s`)
  t.is((await rt.cli(['rm', id])).status, 0)
  await rt.assertClean(t)
})

test('rm while an exec runs: the exec ends killed (137), rm returns once all is gone', async (t) => {
  const rt = runtime(t)
  const id = await rt.create(t)
  let removed: Promise<CliResult> | undefined
  const r = await rt.cli(['exec', id, '--', '/bin/sh', '-c', 'echo ready; exec /bin/sleep 300'], {
    onStdout: { text: 'ready', then: () => (removed = rt.cli(['rm', id], { nested: true })) },
  })
  t.is(r.status, 137, r.stderr)
  const rm = await removed!
  t.is(rm.status, 0, rm.stderr)
  t.is(rm.stdout, `${id}\n`)
  await rt.assertClean(t)
})

test("kill-all: every process in the sandbox is killed, a running exec ends killed (137), what was left in the background too; files stay and the next exec runs", async (t) => {
  const rt = runtime(t)
  const id = await rt.create(t)
  const left = await rt.cli(['exec', id, '--', '/bin/sh', '-c', 'echo kept > /tmp/file; setsid /bin/sleep 301 >/dev/null 2>&1 < /dev/null & echo started'])
  t.is(left.status, 0, left.stderr)
  const sleeps = 'for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null | tr "\\0" " "; echo; done | grep -c "^/bin/sleep 30" || true'
  t.is((await rt.cli(['exec', id, '--', '/bin/sh', '-c', sleeps])).stdout, '1\n', 'the background sleep runs before kill-all')
  let killed: Promise<CliResult> | undefined
  const r = await rt.cli(['exec', id, '--', '/bin/sh', '-c', 'echo ready; exec /bin/sleep 302'], {
    onStdout: { text: 'ready', then: () => (killed = rt.cli(['kill-all', id], { nested: true })) },
  })
  t.is(r.status, 137, r.stderr)
  const k = await killed!
  t.is(k.status, 0, k.stderr)
  t.is(k.stdout, `${id}\n`)
  const after = await rt.cli(['exec', id, '--', '/bin/sh', '-c', `${sleeps}; cat /tmp/file`])
  t.is(after.status, 0, after.stderr)
  t.is(after.stdout, '0\nkept\n', 'no sleep left; the file stays')
  const unknown = await rt.cli(['kill-all', 'nosuch'])
  t.is(unknown.status, 125)
  t.regex(unknown.stderr, /nosuch/)
  t.is((await rt.cli(['kill-all'])).status, 125)
  t.is((await rt.cli(['rm', id])).status, 0)
  const ended = await rt.cli(['kill-all', id])
  t.is(ended.status, 125)
  t.regex(ended.stderr, new RegExp(id))
  await rt.assertClean(t)
})

test('exec --json: one JSON object on stdout telling the ends apart (exit code, oom, its own kill), the command\'s output on stderr; a failure is {error}', async (t) => {
  const rt = runtime(t)
  const memory = limitsHold(await probe(), { memoryBytes: 64 << 20 })
  const id = await rt.create(t, memory ? ['--memory', '64M'] : [])
  const exited = await rt.cli(['exec', '--json', id, '--', '/bin/sh', '-c', 'echo out; echo err >&2; exit 3'])
  t.is(exited.status, 3)
  t.like(JSON.parse(exited.stdout), { exitCode: 3, signal: null, reason: 'exited' })
  t.is(exited.stderr, 'out\nerr\n')
  const own = await rt.cli(['exec', '--json', id, '--', '/bin/sh', '-c', 'kill -9 $$'])
  t.deepEqual([own.status, JSON.parse(own.stdout).reason, JSON.parse(own.stdout).signal], [137, 'signaled', 'SIGKILL'])
  if (memory) {
    const oom = await rt.cli(['exec', '--json', id, '--', '/usr/bin/python3', '-c', 'x = bytearray(300 << 20)'])
    t.deepEqual([oom.status, JSON.parse(oom.stdout).reason], [137, 'oom'], 'the same exit code, told apart')
  } else t.log('no memory limit holds for this caller here (isolate doctor): the oom end is told apart in the root suite')
  const missing = await rt.cli(['exec', '--json', id, '--', '/nonexistent'])
  t.is(missing.status, 127)
  t.like(JSON.parse(missing.stdout).error, { step: 'execve', errno: 'ENOENT' })
  const unknown = await rt.cli(['exec', '--json', 'nosuch', '--', '/bin/true'])
  t.is(unknown.status, 125)
  t.regex(JSON.parse(unknown.stdout).error.message, /nosuch/)
  t.is((await rt.cli(['rm', id])).status, 0)
  await rt.assertClean(t)
})

test('create prints an ID; files and processes persist between execs; ps lists it; rm leaves nothing', async (t) => {
  const rt = runtime(t)
  const id = await rt.create(t)

  // The registry: a private directory, a private socket, a description.
  t.is(statSync(rt.dir).mode & 0o777, 0o700)
  t.is(statSync(join(rt.dir, `${id}.sock`)).mode & 0o777, 0o600)
  t.true(statSync(join(rt.dir, `${id}.sock`)).isSocket())
  t.is(rt.entry(id).id, id)

  // Files persist.
  const w = await rt.cli(['exec', id, '--', '/bin/sh', '-c', 'echo kept > /tmp/note'])
  t.is(w.status, 0, w.stderr)
  const r = await rt.cli(['exec', id, '--', '/bin/cat', '/tmp/note'])
  t.is(r.status, 0, r.stderr)
  t.is(r.stdout, 'kept\n')

  // Processes persist, in the same pid namespace.
  const marker = `isolate-marker-${process.pid}-${Date.now()}`
  const bg = await rt.cli(['exec', id, '--', '/bin/sh', '-c', `sh -c 'sleep 300; : ${marker}' >/dev/null 2>&1 &`])
  t.is(bg.status, 0, bg.stderr)
  const seen = await rt.cli(['exec', id, '--', '/bin/sh', '-c', 'for p in /proc/[0-9]*; do [ "$p" = /proc/$$ ] || { tr "\\0" " " < $p/cmdline; echo; }; done 2>/dev/null'])
  t.is(seen.status, 0, seen.stderr)
  t.regex(seen.stdout, /^sleep 300 ?$/m)
  t.true(seen.stdout.includes(marker), seen.stdout)
  t.true(hostProcessesWith(marker).length > 0, 'the background shell runs on the host too')

  // ps lists it, as text and as JSON.
  const text = await rt.cli(['ps'])
  t.is(text.status, 0, text.stderr)
  t.regex(text.stdout, /^ID\s+NAME\s+PID\s+CREATED\s+ROOTFS$/m)
  t.regex(text.stdout, new RegExp(`^${id}\\s+-\\s+\\d+\\s+\\S+ \\S+\\s+host$`, 'm'))
  const [entry, ...others] = await rt.ps(t)
  t.deepEqual(others, [])
  t.is(entry.id, id)
  t.is(entry.rootfs, 'host')
  t.true(entry.pid > 0 && pidAlive(entry.pid), 'the init pid is a live host process')
  t.true(pidAlive(entry.keeperPid))
  t.false(Number.isNaN(Date.parse(entry.created)))

  // rm: the keeper, the sandbox's processes and the files are gone when it returns.
  const rm = await rt.cli(['rm', id])
  t.is(rm.status, 0, rm.stderr)
  t.is(rm.stdout, `${id}\n`)
  t.false(pidAlive(entry.keeperPid), 'the keeper has exited')
  t.deepEqual(rt.files(), [])
  t.true(await waitUntil(() => !pidAlive(entry.pid) && hostProcessesWith(marker).length === 0, 5000), `left: init ${entry.pid}, ${hostProcessesWith(marker)}`)

  // Gone means gone.
  const after = await rt.cli(['exec', id, '--', '/bin/true'])
  t.is(after.status, 125)
  t.true(after.stderr.includes(id), after.stderr)
  t.regex(after.stderr, /isolate ps/)
  await rt.assertClean(t)
})

test('exec: exit codes, stdin, and stdout kept apart from stderr', async (t) => {
  const rt = runtime(t)
  const id = await rt.create(t)

  const seven = await rt.cli(['exec', id, '--', '/bin/sh', '-c', 'exit 7'])
  t.is(seven.status, 7)
  t.is(seven.stderr, '')

  const killed = await rt.cli(['exec', id, '--', '/bin/sh', '-c', 'kill -TERM $$'])
  t.is(killed.status, 143)

  const data = 'data\n'.repeat(50_000) // 250 KB: more than a pipe holds
  const cat = await rt.cli(['exec', id, '--', '/bin/cat'], { input: data })
  t.is(cat.status, 0, cat.stderr)
  t.true(cat.stdout === data, `stdin came back whole (${cat.stdout.length} of ${data.length} bytes)`)
  const printf = await rt.cli(['exec', id, '/bin/sh', '-c', 'wc -c'], { input: 'data' })
  t.is(printf.stdout.trim(), '4', 'without -- and with the EOF passed on')

  const split = await rt.cli(['exec', id, '--', '/bin/sh', '-c', 'echo out; echo err >&2; echo out2; exit 3'])
  t.is(split.status, 3)
  t.is(split.stdout, 'out\nout2\n')
  t.is(split.stderr, 'err\n')

  // -e is set over the sandbox's environment; --cwd applies.
  const env = await rt.cli(['exec', '-e', 'FOO=bar', '--cwd', '/tmp', id, '--', '/bin/sh', '-c', 'echo "$FOO $PATH"; pwd'])
  t.is(env.status, 0, env.stderr)
  t.regex(env.stdout, /^bar \/\S*bin\S*\n\/tmp\n$/)

  t.is((await rt.cli(['rm', id])).status, 0)
  await rt.assertClean(t)
})

test('exec: a command that cannot be found exits 127 naming the step; --timeout exits 124; signals are forwarded', async (t) => {
  const rt = runtime(t)
  const id = await rt.create(t)

  const missing = await rt.cli(['exec', id, '--', '/no/such'])
  t.is(missing.status, 127)
  t.regex(missing.stderr, /^isolate: /)
  t.regex(missing.stderr, /^ {2}step: execve$/m)
  t.regex(missing.stderr, /^ {2}errno: ENOENT$/m)

  const slow = await rt.cli(['exec', '--timeout', '300ms', id, '--', '/bin/sleep', '30'])
  t.is(slow.status, 124)
  // --grace: the command's trap runs at the timeout, its output still comes; still 124.
  const graceful = await rt.cli(['exec', '--timeout', '1s', '--grace', '5s', '--stop-signal', 'INT', id, '--', '/bin/sh', '-c', 'trap "echo got-int; exit 4" INT; while :; do sleep 0.05; done'])
  t.is(graceful.status, 124, graceful.stderr)
  t.is(graceful.stdout, 'got-int\n')
  const ungraced = await rt.cli(['exec', '--grace', '1s', id, '--', '/bin/true'])
  t.is(ungraced.status, 125)
  t.regex(ungraced.stderr, /--grace needs --timeout/)

  const term = await rt.cli(['exec', id, '--', '/bin/sh', '-c', 'echo ready; exec /bin/sleep 30'], {
    onStdout: { text: 'ready', then: (child) => child.kill('SIGTERM') },
  })
  t.is(term.signal, null, 'isolate itself was not killed')
  t.is(term.status, 143)

  // A second SIGTERM kills the command and its foreground child (a shell that ignores the first).
  const marker = `isolate-term-${process.pid}-${Date.now()}`
  const twice = await rt.cli(['exec', id, '--', '/bin/sh', '-c', `trap '' TERM; echo ready; /bin/sh -c 'trap "" TERM; sleep 300; : ${marker}'`], {
    onStdout: {
      text: 'ready',
      then: (child) => {
        child.kill('SIGTERM')
        setTimeout(() => child.kill('SIGTERM'), 200)
      },
    },
  })
  t.is(twice.status, 137, twice.stderr)
  t.true(await waitUntil(() => hostProcessesWith(marker).length === 0, 10_000), 'its child went with it')

  // The sandbox outlived all of that.
  const still = await rt.cli(['exec', id, '--', '/bin/echo', 'alive'])
  t.is(still.stdout, 'alive\n')
  t.is((await rt.cli(['rm', id])).status, 0)
  await rt.assertClean(t)
})

test('create --grace: rm sends every process SIGTERM (or --stop-signal) first, and ends the sandbox once none is left, long before the grace', async (t) => {
  const rt = runtime(t)
  const id = await rt.create(t, ['--grace', '60s', '--stop-signal', 'INT'])
  let removed: Promise<CliResult> | undefined
  const began = Date.now()
  const r = await rt.cli(['exec', id, '--', '/bin/sh', '-c', 'trap "echo bye; exit 9" INT; echo ready; while :; do sleep 0.05; done'], {
    onStdout: { text: 'ready', then: () => (removed = rt.cli(['rm', id], { nested: true })) },
  })
  t.is(r.stdout, 'ready\nbye\n', 'its trap ran')
  const rm = await removed!
  t.is(rm.status, 0, rm.stderr)
  t.true(Date.now() - began < 45_000, `took ${Date.now() - began} ms: once empty, not the grace`)
  await rt.assertClean(t)
  const lone = await rt.cli(['create', '--stop-signal', 'INT'])
  t.is(lone.status, 125)
  t.regex(lone.stderr, /--stop-signal needs --grace/)
})

test("a reader that goes away early: isolate exits 141 as a tool SIGPIPE ended would, never with a stack trace; create removes the sandbox whose ID nobody got", async (t) => {
  const rt = runtime(t)
  const id = await rt.create(t)
  // isolate's own status, from inside the pipeline: `{ isolate ...; echo status; } | reader`.
  for (const [line, reader] of [
    // The command's own output through isolate's (-t): the command gets SIGPIPE.
    ['$ISOLATE run -t -- /usr/bin/seq 1 100000', 'head -n 1'],
    // The command's own stdout, shared: its write fails, not ours (and never with EAGAIN).
    ['$ISOLATE run -- /usr/bin/yes', 'head -n 1'],
    // isolate's own output, once the reader is gone.
    ['$ISOLATE run --json -- /bin/true', 'head -c 0'],
    ['sleep 0.3; $ISOLATE ps --json', 'true'],
    ['sleep 0.3; $ISOLATE create --name gone', 'true'],
    [`$ISOLATE exec ${id} -- /bin/echo hi`, 'true'],
  ]) {
    const r = await rt.shell(`{ ${line}; echo "status=$?" >&2; } | ${reader}`)
    t.regex(r.stderr, /^status=141$/m, `${line} | ${reader}: ${r.stderr}`)
    t.notRegex(r.stderr, /Error|at .*\.(ts|js):\d+|Resource temporarily unavailable/, line)
  }
  // A command that ignores SIGPIPE is killed a moment later (it writes through isolate, never to the pipe).
  for (const how of [`exec ${id}`, 'run -t']) {
    const ignoring = await rt.shell(`{ $ISOLATE ${how} -- /bin/sh -c 'trap "" PIPE; while :; do echo y; done'; echo "status=$?" >&2; } | head -n 1`)
    t.regex(ignoring.stderr, /^status=137$/m, `${how}: ${ignoring.stderr}`)
  }
  const full = await rt.shell('$ISOLATE ps --json > /dev/full; echo "status=$?" >&2')
  t.regex(full.stderr, /^isolate: cannot write to stdout \(ENOSPC\)$/m)
  t.regex(full.stderr, /^status=125$/m)
  // create's own output: it said nothing and exited 141 as if a reader had gone.
  const fullCreate = await rt.shell('$ISOLATE create --name full > /dev/full; echo "status=$?" >&2')
  t.regex(fullCreate.stderr, /^isolate: create: the ID could not be written to stdout \(ENOSPC\); the sandbox was removed again\nstatus=125$/m)
  t.is((await rt.cli(['rm', id])).status, 0)
  t.false((await rt.ps(t)).some((e) => e.name === 'gone' || e.name === 'full'), 'the sandboxes whose IDs nobody got are gone')
  await rt.assertClean(t)
})

test('create interrupted before it printed the ID (SIGINT, SIGKILL, at once or while the sandbox is made): the keeper ends the sandbox nobody will learn of, and leaves nothing', async (t) => {
  const rt = runtime(t)
  const childrenOf = (pid: number) => {
    try {
      return readdirSync(`/proc/${pid}/task`).flatMap((task) => readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').split(' ').filter(Boolean).map(Number))
    } catch {
      return []
    }
  }
  for (const [signal, afterMs] of [['SIGKILL', 0], ['SIGINT', 0], ['SIGKILL', 60], ['SIGINT', 150]] as const) {
    const create = spawn(process.execPath, ['--import=tsx', cliPath, 'create'], { cwd: root, env: rt.env, stdio: 'ignore' })
    const closed = new Promise((r) => create.once('close', r))
    let keeper: number | undefined
    await waitUntil(() => (keeper = childrenOf(create.pid!).find((p) => readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('__keeper'))) !== undefined, 30_000, 1)
    t.truthy(keeper, `${signal} after ${afterMs} ms: a keeper was started`)
    rt.keepers.add(keeper!)
    if (afterMs) await new Promise((r) => setTimeout(r, afterMs))
    create.kill(signal)
    await closed
    t.true(await waitUntil(() => !pidAlive(keeper!), 15_000), `${signal} after ${afterMs} ms: the keeper ended`)
  }
  await rt.assertClean(t)
})

test("exec -t in a terminal: each line ends as the sandbox's terminal ended it (\\r\\n, not \\r\\r\\n)", async (t) => {
  const rt = runtime(t)
  const id = await rt.create(t)
  const r = await cliUnderTerminal(['exec', '-t', id, '--', '/bin/sh', '-c', 'printf "one\\ntwo\\n"; exit 3'], rt.env)
  t.is(r.status, 3)
  t.is(r.bytes.toString('latin1'), 'one\r\ntwo\r\n')
  t.is((await rt.cli(['rm', id])).status, 0)
  await rt.assertClean(t)
})

test('exec: pipelines, background output holders, and execs side by side', async (t) => {
  const rt = runtime(t)
  const id = await rt.create(t)

  // Nobody reads our output any more: the command gets SIGPIPE, as in a pipeline of its own.
  const head = await rt.shell(`{ $ISOLATE exec ${id} -- /usr/bin/yes; echo "status=$?" >&2; } | head -n 2`)
  t.is(head.stdout, 'y\ny\n')
  t.regex(head.stderr, /^status=141$/m, '128+SIGPIPE')

  // Its end is its end, even when something it left in the background holds its stdout.
  const started = Date.now()
  const bg = await rt.cli(['exec', id, '--', '/bin/sh', '-c', 'echo before; /bin/sleep 300 & echo after'])
  t.is(bg.status, 0, bg.stderr)
  t.is(bg.stdout, 'before\nafter\n')
  t.true(Date.now() - started < 60_000)

  // Several at once, each with its own stdio.
  const many = await Promise.all([1, 2, 3, 4, 5].map((n) => rt.cli(['exec', id, '--', '/bin/sh', '-c', `read x; echo "$x-${n}"; echo e${n} >&2; exit ${n}`], { input: `in${n}\n` })))
  many.forEach((r, i) => {
    t.is(r.status, i + 1)
    t.is(r.stdout, `in${i + 1}-${i + 1}\n`)
    t.is(r.stderr, `e${i + 1}\n`)
  })

  t.is((await rt.cli(['rm', id])).status, 0)
  await rt.assertClean(t)
})

test('exec, rm: an unknown ID is an error naming it (125); rm -f ignores it', async (t) => {
  const rt = runtime(t)
  const exec = await rt.cli(['exec', '0123456789ab', '--', '/bin/true'])
  t.is(exec.status, 125)
  t.regex(exec.stderr, /0123456789ab/)
  t.regex(exec.stderr, /isolate ps/)
  const rm = await rt.cli(['rm', 'nosuch'])
  t.is(rm.status, 125)
  t.regex(rm.stderr, /nosuch/)
  const force = await rt.cli(['rm', '-f', 'nosuch'])
  t.is(force.status, 0, force.stderr)
  t.is(force.stdout, '')
  const usage = await rt.cli(['exec', '0123456789ab'])
  t.is(usage.status, 125)
  t.regex(usage.stderr, /no command given/)
  const late = await rt.cli(['exec', '0123456789ab', '--cwd', '/tmp', '--', '/bin/pwd'])
  t.is(late.status, 125)
  t.regex(late.stderr, /"--cwd" after the sandbox ID: options come before it/)
  await rt.assertClean(t)
})

test('create: a setup failure exits 125 naming the step, and leaves no keeper and no file', async (t) => {
  const rt = runtime(t)
  const r = await rt.cli(['create', '--rootfs', '/nonexistent'])
  t.is(r.status, 125)
  t.is(r.stdout, '')
  t.regex(r.stderr, /^isolate: /)
  t.regex(r.stderr, /^ {2}step: \w+$/m)
  t.regex(r.stderr, /^ {2}path: \/nonexistent$/m)
  t.deepEqual(rt.files(), [])
  t.deepEqual(rt.processes(), [], 'the keeper has exited')

  const run = await rt.cli(['create', '-t'])
  t.is(run.status, 125, 'no -t for create')
  const cmd = await rt.cli(['create', '--', '/bin/sh'])
  t.is(cmd.status, 125)
  t.regex(cmd.stderr, /isolate exec/)
  await rt.assertClean(t)
})

test("create: a runtime directory is as long as its sockets' paths allow, no shorter; a longer one is refused before it is made", async (t) => {
  const rt = runtime(t)
  // A socket path is DIR/ID.sock, an ID of 12 characters: 107 bytes at most.
  const fits = join(rt.dir, 'd'.repeat(107 - rt.dir.length - 1 - 18))
  const env = { ...rt.env, ISOLATE_RUNTIME_DIR: fits }
  const made = await cli(['create'], { env })
  t.is(made.status, 0, made.stderr)
  t.is((await cli(['rm', made.stdout.trim()], { env })).status, 0)
  const long = join(rt.dir, 'e'.repeat(107 - rt.dir.length - 1 - 17), 'deeper')
  const refused = await cli(['create'], { env: { ...rt.env, ISOLATE_RUNTIME_DIR: long } })
  t.is(refused.status, 125)
  t.regex(refused.stderr, /too long for a unix socket path/)
  t.false(existsSync(long), 'nothing was made')
  removeDir(fits)
  await rt.assertClean(t)
})

test('create: a relative ISOLATE_RUNTIME_DIR is the one ps, exec and rm find (relative to where isolate runs, not to the keeper\'s /)', async (t) => {
  // Beneath the directory the CLI runs in (the repository), named relative to it: resolved
  // against / instead, it would be another directory. Where this user may not write there (the
  // rootless run), beneath the temporary directory, which tells the two apart only where the
  // repository lies as deep as it (a relative name climbs to / either way).
  let base = root
  try {
    accessSync(root, constants.W_OK)
  } catch {
    base = tmpdir()
    t.log(`${root} is not writable by this user: the runtime directory is made in ${base}`)
  }
  const dir = mkdtempSync(join(base, '.isolate-rt-'))
  const rel = relative(root, dir)
  t.teardown(() => [dir, join('/', rel)].forEach((d) => rmSync(d, { recursive: true, force: true })))
  const env = { ...process.env, ISOLATE_RUNTIME_DIR: rel }
  const made = await cli(['create'], { env })
  t.is(made.status, 0, made.stderr)
  const id = made.stdout.trim()
  try {
    t.true(existsSync(join(dir, `${id}.json`)), 'registered in the directory named')
    t.regex((await cli(['ps'], { env })).stdout, new RegExp(id))
    t.is((await cli(['exec', id, '--', '/bin/echo', 'hi'], { env })).stdout, 'hi\n')
  } finally {
    const removed = await cli(['rm', id], { env })
    if (removed.status !== 0) await cli(['rm', id], { env: { ...env, ISOLATE_RUNTIME_DIR: join('/', rel) } })
  }
  t.deepEqual(readdirSync(dir), [], 'nothing left in it')
})

test('create: a runtime directory that is a symlink, dangling or not, is refused naming where it points and who made it; nothing is made through it', async (t) => {
  const rt = runtime(t)
  const base = tempDir('isolate-rtlink-')
  t.teardown(() => removeDir(base))
  for (const [what, to] of [['dangling', join(base, 'nowhere', 'x')], ['to a directory', base]] as const) {
    const link = join(base, `rt-${what.replace(/ /g, '-')}`)
    symlinkSync(to, link)
    const r = await cli(['create'], { env: { ...rt.env, ISOLATE_RUNTIME_DIR: link } })
    t.is(r.status, 125, what)
    t.regex(r.stderr, new RegExp(`^isolate: runtime directory ${link} is a symbolic link to ${to} \\(made by uid ${process.geteuid!()}\\); refusing`), what)
  }
  t.false(existsSync(join(base, 'nowhere')), 'nothing made through the dangling link')
  // Another user's link in /tmp may point at terminal escapes (a title, OSC 52's clipboard, a
  // cleared screen): they are shown escaped, never sent to the caller's terminal.
  const hostile = join(base, 'rt-hostile')
  symlinkSync('\x1b]0;title\x07\x1b]52;c;cm0gLXJm\x07\x1b[2J', hostile)
  const shown = await cli(['ps'], { env: { ...rt.env, ISOLATE_RUNTIME_DIR: hostile } })
  t.is(shown.status, 125)
  t.false(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/.test(shown.stderr), JSON.stringify(shown.stderr))
  t.true(shown.stderr.includes('is a symbolic link to \\x1b]0;title\\x07\\x1b]52;c;cm0gLXJm\\x07\\x1b[2J (made by uid'), shown.stderr)
  t.deepEqual(readdirSync(base).sort(), ['rt-dangling', 'rt-hostile', 'rt-to-a-directory'], 'nor through the other')
  await rt.assertClean(t)
})

test('create: refuses a runtime directory that others may use', async (t) => {
  const rt = runtime(t)
  chmodSync(rt.dir, 0o755)
  const r = await rt.cli(['create'])
  t.is(r.status, 125)
  t.regex(r.stderr, /runtime directory .* mode 0755/)
  t.regex(r.stderr, /hint: chmod 700/)
  t.deepEqual(rt.files(), [])
  chmodSync(rt.dir, 0o700)
  await rt.assertClean(t)
})

test('create --timeout: the sandbox ends on its own, and its keeper and files with it; an exec or rm after says why, and rm forgets it', async (t) => {
  const rt = runtime(t)
  const id = await rt.create(t, ['--timeout', '3s', '--name', 'brief'])
  const entry = rt.entry(id)
  t.true(pidAlive(entry.pid))
  t.true(await waitUntil(() => !pidAlive(entry.keeperPid), 15_000), 'the keeper exits')
  t.deepEqual(rt.files(), [`${id}.ended`], 'a record of its end, nothing else')
  t.false(pidAlive(entry.pid))
  for (const ref of ['brief', id]) {
    const late = await rt.cli(['exec', ref, '--', '/bin/true'])
    t.is(late.status, 125)
    t.regex(late.stderr, new RegExp(`^isolate: sandbox brief \\(${id}\\) ended at \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d UTC: its --timeout \\(3s\\) passed\n  hint: .*'isolate rm ${ref}' forgets this one`))
  }
  // Its keeper told to end it is said so too.
  const told = await rt.create(t)
  process.kill(rt.entry(told).keeperPid, 'SIGTERM')
  t.true(await waitUntil(() => rt.files().includes(`${told}.ended`) && !rt.files().includes(`${told}.sock`), 10_000))
  t.regex((await rt.cli(['exec', told, '--', '/bin/true'])).stderr, /: its keeper was told to end it \(SIGTERM or SIGINT\)\n/)
  // Gone already, as rm asks: it succeeds, and the record goes.
  const rm = await rt.cli(['rm', 'brief', told])
  t.is(rm.status, 0, rm.stderr)
  t.is(rm.stdout, `${id}\n${told}\n`)
  t.deepEqual(rt.files(), [])
  t.regex((await rt.cli(['exec', 'brief', '--', '/bin/true'])).stderr, /^isolate: no such sandbox: brief\n/)
  // A name taken again: the earlier sandbox's end is no longer told of it.
  const first = await rt.create(t, ['--timeout', '1s', '--name', 'again'])
  t.true(await waitUntil(() => rt.files().includes(`${first}.ended`) && !rt.files().includes(`${first}.sock`), 10_000))
  const second = await rt.create(t, ['--name', 'again'])
  t.false(rt.files().includes(`${first}.ended`), 'forgotten when the name was taken again')
  t.is((await rt.cli(['rm', 'again'])).stdout, `${second}\n`)
  t.regex((await rt.cli(['exec', 'again', '--', '/bin/true'])).stderr, /^isolate: no such sandbox: again\n/)
  await rt.assertClean(t)
})

test('create --pids: unlimited crosses to the keeper (JSON has no Infinity) and lifts the default bound; without it an exec sees 2048', async (t) => {
  const rt = runtime(t)
  const nproc = "grep '^Max processes' /proc/self/limits"
  const free = await rt.create(t, ['--pids', 'unlimited'])
  const unbounded = await rt.cli(['exec', free, '--', '/bin/sh', '-c', nproc])
  t.is(unbounded.status, 0, unbounded.stderr)
  t.notRegex(unbounded.stdout, /\s2048\s+2048\s/, unbounded.stdout)
  const listed = JSON.parse((await rt.cli(['ps', '--json'])).stdout) as Array<{ id: string; summary: { limits?: { pids?: unknown } } }>
  t.is(listed.find((e) => e.id === free)?.summary.limits?.pids, 'unlimited', 'ps --json says so')
  const bounded = await rt.create(t)
  const dflt = await rt.cli(['exec', bounded, '--', '/bin/sh', '-c', nproc])
  t.is(dflt.status, 0, dflt.stderr)
  const p = await probe()
  if (p.defaultPids !== null) t.regex(dflt.stdout, new RegExp(`\\s${p.defaultPids}\\s+\\d+\\s`), dflt.stdout)
  t.is((await rt.cli(['rm', free, bounded])).status, 0)
  await rt.assertClean(t)
})

test('ps: an entry with fields missing or of another type is no sandbox (ps printed a stack trace)', async (t) => {
  const rt = runtime(t)
  const id = await rt.create(t)
  const file = join(rt.dir, `${id}.json`)
  const good = readFileSync(file, 'utf8')
  writeFileSync(file, JSON.stringify({ id, keeperPid: 'x', pid: null }))
  const ps = await rt.cli(['ps'])
  writeFileSync(file, good)
  t.is(ps.status, 0, ps.stderr)
  t.notRegex(ps.stderr, /internal error|TypeError|\bat /)
  t.notRegex(ps.stdout, new RegExp(id), 'not listed while its entry is not one')
  t.regex((await rt.cli(['ps'])).stdout, new RegExp(id), 'listed again once it is')
  t.is((await rt.cli(['rm', id])).status, 0)
  await rt.assertClean(t)
})

test('rm -f: a keeper that does not end its sandbox (stopped) is killed after 2 s, and the sandbox ends with it', async (t) => {
  const rt = runtime(t)
  const id = await rt.create(t)
  const [entry] = await rt.ps(t)
  // Ours: we started this keeper. Stopped, it answers nothing (rm without -f waits 30 s).
  process.kill(entry.keeperPid, 'SIGSTOP')
  t.teardown(() => {
    try {
      process.kill(entry.keeperPid, 'SIGCONT')
    } catch {}
  })
  const started = Date.now()
  const r = await rt.cli(['rm', '-f', id])
  t.is(r.status, 0, r.stderr)
  t.is(r.stdout, `${id}\n`)
  // Without -f it waits 30 s and fails (125); how long this takes is the loaded machine's.
  t.log(`rm -f took ${Date.now() - started} ms`)
  t.false(pidAlive(entry.keeperPid), 'the keeper was killed')
  t.true(await waitUntil(() => !pidAlive(entry.pid), 5000), 'the sandbox ended with its keeper')
  await rt.assertClean(t)
})

test('ps: a keeper that was killed is pruned (its sandbox ended with it)', async (t) => {
  const rt = runtime(t)
  const id = await rt.create(t)
  const [entry] = await rt.ps(t)
  // We started this keeper: ending it by its pid is ours to do.
  process.kill(entry.keeperPid, 'SIGKILL')
  t.true(await waitUntil(() => !pidAlive(entry.keeperPid), 5000))
  t.true(existsSync(join(rt.dir, `${id}.json`)), 'a keeper killed outright cannot clean up')
  t.deepEqual(await rt.ps(t), [])
  t.deepEqual(rt.files(), [`${id}.ended`], 'its files went, and a record of its end came')
  t.true(await waitUntil(() => !pidAlive(entry.pid), 5000), 'the sandbox ended with its keeper')
  const exec = await rt.cli(['exec', id, '--', '/bin/true'])
  t.is(exec.status, 125)
  t.regex(exec.stderr, new RegExp(`^isolate: sandbox ${id} ended at .*: its keeper was found gone then, without a word \\(killed\\?\\)`))
  t.is((await rt.cli(['rm', id])).stdout, `${id}\n`)
  t.deepEqual(rt.files(), [])
  await rt.assertClean(t)
})

test('--name: exec and rm by name; a name is taken once', async (t) => {
  const rt = runtime(t)
  const id = await rt.create(t, ['--name', 'box-1', '--hostname', 'named'])
  const r = await rt.cli(['exec', 'box-1', '--', '/bin/hostname'])
  t.is(r.status, 0, r.stderr)
  t.is(r.stdout, 'named\n')
  const [entry] = await rt.ps(t)
  t.is(entry.name, 'box-1')
  const again = await rt.cli(['create', '--name', 'box-1'])
  t.is(again.status, 125)
  t.regex(again.stderr, new RegExp(`taken by sandbox ${id}`))
  const rm = await rt.cli(['rm', 'box-1'])
  t.is(rm.status, 0, rm.stderr)
  t.is(rm.stdout, `${id}\n`)
  await rt.assertClean(t)
})

test('the start of an ID names its sandbox (exec 3f2a, as docker takes it); a start shared by two IDs is an error listing them; no name looks like one, and an ended name never falls through to another ID', async (t) => {
  const rt = runtime(t)
  const id = await rt.create(t, ['--hostname', 'by-prefix'])
  const r = await rt.cli(['exec', id.slice(0, 4), '--', '/bin/hostname'])
  t.is(r.status, 0, r.stderr)
  t.is(r.stdout, 'by-prefix\n')
  // Two IDs with one start (records of keepers that never ran: only their names are looked at).
  const other = id[0] === 'a' ? 'b' : 'a'
  for (const fake of [`${other}bc111111111`, `${other}bc222222222`]) writeFileSync(join(rt.dir, `${fake}.json`), '{}')
  const shared = await rt.cli(['exec', `${other}bc`, '--', '/bin/true'])
  t.is(shared.status, 125)
  t.regex(shared.stderr, new RegExp(`^isolate: ${other}bc starts 2 sandbox IDs: ${other}bc111111111, ${other}bc222222222\n  hint: give more of the ID, or its name\n`))
  t.is((await rt.cli(['exec', `${other}bc1`, '--', '/bin/true'])).status, 125, 'a record without a live keeper is no sandbox')
  // A name of hex digits alone would, once its sandbox ended, be the start of another's ID.
  for (const name of [id.slice(0, 3), id.slice(0, 5), 'cafe']) {
    const refused = await rt.cli(['create', '--name', name])
    t.is(refused.status, 125, name)
    t.regex(refused.stderr, new RegExp(`^isolate: --name: "${name}" looks like a sandbox ID, or the start of one \\(which exec and rm take too\\)`), name)
  }
  // One a version before that refusal took, whose sandbox ended (its --timeout): told so, never
  // the sandbox whose ID starts alike.
  const gone = `${other}${'0'.repeat(11)}`
  writeFileSync(join(rt.dir, `${gone}.ended`), `${JSON.stringify({ id: gone, name: id.slice(0, 4), ended: new Date().toISOString(), reason: 'timeout', exitCode: null, signal: 'SIGKILL', timeoutMs: 2000 })}\n`)
  const late = await rt.cli(['exec', id.slice(0, 4), '--', '/bin/hostname'])
  t.is(late.status, 125)
  t.is(late.stdout, '', 'nothing ran in the sandbox whose ID starts so')
  t.regex(late.stderr, new RegExp(`^isolate: sandbox ${id.slice(0, 4)} \\(${gone}\\) ended at .*: its --timeout \\(2s\\) passed\n`))
  const rmEnded = await rt.cli(['rm', id.slice(0, 4)])
  t.is(rmEnded.stdout, `${gone}\n`, rmEnded.stderr)
  // Such a sandbox whose keeper was killed (it left its files, no record of its end): found gone
  // once, its end is recorded, and the name is still its own after.
  const killed = `${other}${'1'.repeat(11)}`
  const legacy = id.slice(0, 3)
  writeFileSync(join(rt.dir, `${killed}.json`), JSON.stringify({ ...rt.entry(id), id: killed, name: legacy }))
  symlinkSync(killed, join(rt.dir, `${legacy}.name`))
  for (const look of [1, 2]) {
    const r = await rt.cli(['exec', legacy, '--', '/bin/hostname'])
    t.is(r.status, 125, `look ${look}`)
    t.is(r.stdout, '', `look ${look}: nothing ran in the sandbox whose ID starts so`)
    t.regex(r.stderr, new RegExp(`^isolate: sandbox ${legacy} \\(${killed}\\) ended at .*: its keeper was found gone then`), `look ${look}`)
  }
  t.is((await rt.cli(['rm', legacy])).stdout, `${killed}\n`)
  t.true(pidAlive(rt.entry(id).pid), 'the sandbox whose ID starts so runs on')
  const rm = await rt.cli(['rm', id.slice(0, 5)])
  t.is(rm.stdout, `${id}\n`, rm.stderr)
  for (const fake of [`${other}bc111111111`, `${other}bc222222222`]) rmSync(join(rt.dir, `${fake}.json`), { force: true })
  await rt.assertClean(t)
})

if (!hasTmux) console.log('cli-sandboxes.test: tmux is not installed; the exec -t test cannot run without it')
const withTmux = hasTmux ? test : test.skip

withTmux('exec -t: a shell on a terminal of the sandbox, in a real terminal', async (t) => {
  const rt = runtime(t)
  const id = await rt.create(t)
  const cmd = `ISOLATE_RUNTIME_DIR=${rt.dir} ${process.execPath} --import=tsx ${cliPath} exec -t ${id} -- /bin/sh; echo EXIT=$?; sleep 60`
  await driveShellInTmux(t, cmd, async (keys, seen, screen) => {
    keys('tty')
    t.true(await seen(/^\/dev\/pts\/\d+$/m), screen())
  })
  t.is((await rt.cli(['rm', id])).status, 0)
  await rt.assertClean(t)
})
