/** Limits that need no cgroup: output, file size, open files, core dumps, the default process bound; and the usage report. */
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import { chmodSync, closeSync, openSync, readdirSync, readFileSync } from 'node:fs'
import { configurePool, createSandbox, IsolateError, probe, runIsolated, spawnIsolated, type SpawnOptions } from '../index.js'
import { limitsHold } from '../lib/probe.js'
import { collectOutput } from '../lib/collect.js'
import { PassThrough } from 'node:stream'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { removeDir, root, sh, tempDir, waitUntil } from './helpers.js'

test.serial('1 GB of output stops at outputBytes, exactly, without Node buffering it', async (t) => {
  const limit = 1 << 20
  const rssBefore = process.memoryUsage().rss
  const r = await runIsolated('/bin/sh', ['-c', 'head -c 1000000000 /dev/zero; echo unreachable >&2'], { limits: { outputBytes: limit }, encoding: 'buffer' })
  t.is(r.reason, 'output-limit')
  t.true(r.signal !== null || r.exitCode !== 0, 'ended by the bound, not by finishing')
  t.is(r.stdout.length + r.stderr.length, limit)
  t.true(process.memoryUsage().rss - rssBefore < 32 << 20)
  t.true(r.durationMs < 10_000)
})

test("stop: at the timeout or an abort the command gets its signal and the grace to end (its output still comes), then the sandbox is killed; without stop, at once", async (t) => {
  const trap = 'trap "echo got-term; sleep 0.2; echo flushed; exit 7" TERM; echo ready; while :; do sleep 0.05; done'
  // Timeouts of 1 s: the shell has set its trap by then, on a loaded host too.
  const graceful = await runIsolated('/bin/sh', ['-c', trap], { timeoutMs: 1000, stop: { graceMs: 5000 } })
  t.like(graceful, { reason: 'timeout', exitCode: 7, signal: null, stdout: 'ready\ngot-term\nflushed\n' })
  t.true(graceful.durationMs >= 1190 && graceful.durationMs < 5000, `ended ${graceful.durationMs} ms after its start: at its own end, not the grace's`)
  // One that ignores the signal is killed once the grace has passed.
  const deaf = await runIsolated('/bin/sh', ['-c', 'trap "" TERM; echo ready; while :; do sleep 0.05; done'], { timeoutMs: 1000, stop: { graceMs: 700 } })
  t.like(deaf, { reason: 'timeout', exitCode: null, signal: 'SIGKILL', stdout: 'ready\n' })
  t.true(deaf.durationMs >= 1650, `killed ${deaf.durationMs} ms after its start`)
  // Without stop: killed at the timeout; the trap never runs.
  const hard = await runIsolated('/bin/sh', ['-c', trap], { timeoutMs: 500 })
  t.like(hard, { reason: 'timeout', signal: 'SIGKILL', stdout: 'ready\n' })
  // An abort, with another signal; what the command started is ended with the sandbox.
  const ac = new AbortController()
  const sb = await spawnIsolated('/bin/sh', ['-c', 'trap "echo int; exit 3" INT; sleep 4242 & echo ready; while :; do sleep 0.05; done'], { signal: ac.signal, stop: { signal: 'SIGINT', graceMs: 5000 } })
  let out = ''
  sb.stdout!.on('data', (d: Buffer) => (out += d))
  await waitUntil(() => out.includes('ready'), 5000)
  ac.abort()
  t.like(await sb.wait(), { reason: 'canceled', exitCode: 3, signal: null })
  if (sb.stdout!.readable) await once(sb.stdout!, 'end')
  t.is(out, 'ready\nint\n')
  const cmdline = (p: string) => {
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'utf8')
    } catch {
      return ''
    }
  }
  t.false(readdirSync('/proc').some((p) => /^\d+$/.test(p) && cmdline(p) === 'sleep\u00004242\u0000'), 'the background sleep is gone')
  // Bad stops are refused before anything starts.
  for (const [stop, option] of [[{ signal: 'SIGKILL', graceMs: 5 }, 'stop.signal'], [{ signal: 'SIGSTOP', graceMs: 5 }, 'stop.signal'], [{ signal: 'SIGCHLD', graceMs: 5 }, 'stop.signal'], [{ signal: 'SIGSEGV', graceMs: 5 }, 'stop.signal'], [{ graceMs: 0 }, 'stop.graceMs'], [{ signal: 'SIGTERM' }, 'stop.graceMs'], [{ graceMs: 5, after: 1 }, 'stop.after'], [5000, 'stop']] as const) {
    const e = await runIsolated('/bin/true', [], { stop } as never).catch((e: unknown) => e)
    t.true(e instanceof IsolateError && e.option === option, `${JSON.stringify(stop)}: ${String(e)}`)
  }
})

test("stop.group: the signal reaches the command's whole process group (a shell's child too); without it, the command alone", async (t) => {
  // A shell that ignores the signal and waits for its child: only a signal to the group reaches
  // the child's trap (the shell's wait then ends); to the shell alone, the grace ends them.
  const parent = `/bin/sh -c 'trap "echo child-term; exit 0" TERM; while :; do sleep 0.05; done' & trap "" TERM; wait`
  t.like(await runIsolated('/bin/sh', ['-c', parent], { timeoutMs: 1000, stop: { graceMs: 5000, group: true } }), { reason: 'timeout', exitCode: 0, stdout: 'child-term\n' })
  t.like(await runIsolated('/bin/sh', ['-c', parent], { timeoutMs: 1000, stop: { graceMs: 700 } }), { reason: 'timeout', signal: 'SIGKILL', stdout: '' })
  const e = await runIsolated('/bin/true', [], { stop: { graceMs: 5, group: 1 } } as never).catch((e: unknown) => e)
  t.true(e instanceof IsolateError && e.option === 'stop.group', String(e))
})

test('an abort while spawnIsolated starts rejects it at once, whatever its stop: nobody has the streams to hear a graceful end', async (t) => {
  // Aborts 0 to 20 ms into the call, three times over: some land between the command's execve
  // and the call's end (a window of a few ms: one sweep met it in 1 of 3 runs of the old code).
  for (let delay = 0; delay <= 62; delay++) {
    const ac = new AbortController()
    setTimeout(() => ac.abort(), delay % 21)
    const asked = Date.now()
    try {
      const sb = await spawnIsolated('/bin/sh', ['-c', 'trap "" TERM; while :; do sleep 0.05; done'], { signal: ac.signal, stop: { graceMs: 10_000 }, stdio: 'ignore' })
      sb.kill('SIGKILL')
      await sb.wait()
    } catch (e) {
      t.is((e as IsolateError).code, 'ABORT_ERR')
      t.true(Date.now() - asked < 5000, `aborted ${delay % 21} ms in, rejected after ${Date.now() - asked} ms`)
    }
  }
})

test('output under the bound passes through whole, stdout and stderr together', async (t) => {
  const r = await sh('head -c 3000 /dev/zero | tr "\\0" a; echo; echo to-stderr >&2', { limits: { outputBytes: 5000 } })
  t.is(r.reason, 'exited')
  t.is(r.exitCode, 0)
  t.is(r.stdout, `${'a'.repeat(3000)}\n`)
  t.is(r.stderr, 'to-stderr\n')
})

test('the bound counts stderr too', async (t) => {
  const r = await sh('head -c 100000 /dev/zero >&2', { limits: { outputBytes: 1000 }, encoding: 'buffer' })
  t.is(r.reason, 'output-limit')
  t.is(r.stderr.length, 1000)
})

test("the bound counts no slot that is /dev/null ('ignore', or a given fd of it): a judge that ignores stderr bounds stdout alone", async (t) => {
  const debugThenAnswer = 'head -c 200000 /dev/zero >&2; echo answer'
  const ignored = await sh(debugThenAnswer, { stdio: ['pipe', 'pipe', 'ignore'], limits: { outputBytes: 64 << 10 } })
  t.deepEqual([ignored.reason, ignored.exitCode, ignored.stdout], ['exited', 0, 'answer\n'])
  const null_ = openSync('/dev/null', 'w')
  t.teardown(() => closeSync(null_))
  const given = await sh(debugThenAnswer, { stdio: ['pipe', 'pipe', null_], limits: { outputBytes: 64 << 10 } })
  t.deepEqual([given.reason, given.exitCode, given.stdout], ['exited', 0, 'answer\n'])
  // The slot that is not /dev/null is still bounded, and stderr piped counts, as before.
  const flood = await sh('head -c 200000 /dev/zero', { stdio: ['pipe', 'pipe', 'ignore'], limits: { outputBytes: 64 << 10 }, encoding: 'buffer' })
  t.deepEqual([flood.reason, flood.stdout.length], ['output-limit', 64 << 10])
  const piped = await sh(debugThenAnswer, { limits: { outputBytes: 64 << 10 } })
  t.is(piped.reason, 'output-limit')
})

test('outputBytes also bounds a spawned sandbox whose streams are read slowly', async (t) => {
  const sb = await spawnIsolated('/bin/sh', ['-c', 'while :; do echo 0123456789; done'], { limits: { outputBytes: 64 << 10 } })
  let total = 0
  await new Promise((r) => setTimeout(r, 200))
  for await (const c of sb.stdout!) total += c.length
  const r = await sb.wait()
  t.is(r.reason, 'output-limit')
  t.is(total, 64 << 10)
})

test.serial('runIsolated keeps at most maxBuffer (64 MiB by default) of a command that writes without end, and kills it', async (t) => {
  const rssBefore = process.memoryUsage().rss
  // Not `yes`: a shell loop whose output never ends, with no outputBytes of the helper's to stop it.
  const r = await runIsolated('/bin/sh', ['-c', 'while :; do cat /bin/sh; done'], { encoding: 'buffer' })
  t.is(r.reason, 'output-limit')
  t.is(r.signal, 'SIGKILL')
  t.is(r.stdout.length + r.stderr.length, 64 << 20)
  // Without the bound Node grew by gigabytes before failing (ERR_STRING_TOO_LONG or the OOM killer).
  t.true(process.memoryUsage().rss - rssBefore < 400 << 20, `rss grew ${(process.memoryUsage().rss - rssBefore) >> 20} MiB`)
})

/** What Node holds (its heap and buffers) once what nobody holds is collected. */
function heldByNode(): number {
  setFlagsFromString('--expose-gc')
  ;(runInNewContext('gc') as () => void)()
  const m = process.memoryUsage()
  return m.heapUsed + m.arrayBuffers
}

test.serial("what runIsolated and exec keep of a command's output costs Node about the bytes maxBuffer counts, however small its writes (not an object of Node's for each)", async (t) => {
  const stdout = new PassThrough()
  const stderr = new PassThrough()
  const collected = collectOutput(stdout, stderr, Infinity, async () => {})
  const before = heldByNode()
  const writes = 200_000
  for (let i = 0; i < writes; i++) (i % 2 ? stderr : stdout).write(Buffer.from('x'))
  await new Promise((r) => setImmediate(r))
  // Before, each 1-byte chunk was kept as it came: about 40 MB of Node's memory for 200 KB.
  const grown = heldByNode() - before
  stdout.end()
  stderr.end()
  const r = await collected
  t.deepEqual([r.stdout.length, r.stderr.length], [writes / 2, writes / 2])
  t.true(grown < 4 << 20, `${writes} bytes in 1-byte chunks held ${(grown / (1 << 20)).toFixed(1)} MiB of Node's memory`)
  // Through a sandbox: every byte of a command writing one at a time, and the bound still exact.
  const perl = (n: number) => `$| = 1; print "x" for 1..${n}`
  const all = await runIsolated('/usr/bin/perl', ['-e', perl(50_000)])
  t.is(all.stdout, 'x'.repeat(50_000))
  const over = await runIsolated('/usr/bin/perl', ['-e', `${perl(50_000)}; sleep 10`], { maxBuffer: 5000 })
  t.deepEqual([over.reason, over.stdout.length], ['output-limit', 5000])
})

test.serial("a process an exec left behind, writing a byte at a time to the exec's stdout that nobody reads, holds Node to about the bound of what is read in after the exec's end", async (t) => {
  const box = await createSandbox({})
  t.teardown(() => box.destroy())
  const before = heldByNode()
  // Paced so that each of Node's reads finds a byte or a few: a chunk of its own each.
  const p = await box.spawn('/bin/sh', ['-c', "perl -e '$| = 1; while (1) { print q(x); for ($i = 0; $i < 40; $i++) {} }' & exit 0"])
  t.is((await p.wait()).exitCode, 0)
  await new Promise((r) => setTimeout(r, 2000))
  // Before, each chunk counted its length only: some 30 MB held for 1 MB of bytes read in.
  const grown = heldByNode() - before
  t.true(grown < 8 << 20, `${p.stdout!.readableLength} bytes read in held ${(grown / (1 << 20)).toFixed(1)} MiB of Node's memory`)
  t.true(p.stdout!.readableLength > 0, 'what the left process wrote is read in, up to the bound')
})

test('maxBuffer counts stdout and stderr together, exactly; output at the bound is whole', async (t) => {
  const over = await sh('head -c 600 /dev/zero; head -c 600 /dev/zero >&2; sleep 10', { maxBuffer: 1000, encoding: 'buffer' })
  t.is(over.reason, 'output-limit')
  t.is(over.stdout.length + over.stderr.length, 1000)
  t.true(over.durationMs < 5000, 'killed at the bound, not after the sleep')
  const at = await sh('head -c 1000 /dev/zero | tr "\\0" a', { maxBuffer: 1000 })
  t.is(at.reason, 'exited')
  t.is(at.stdout, 'a'.repeat(1000))
  const none = await sh('head -c 100000 /dev/zero', { maxBuffer: Infinity, encoding: 'buffer' })
  t.is(none.reason, 'exited')
  t.is(none.stdout.length, 100000)
})

test('a command cut at maxBuffer ends by the kill every time, never by a SIGPIPE of its own (a shell that exited 141)', async (t) => {
  const ends = new Set<string>()
  for (let i = 0; i < 15; i++) {
    const r = await sh('yes', { maxBuffer: 1000 })
    ends.add(`${r.reason} ${r.exitCode} ${r.signal}`)
  }
  t.deepEqual([...ends], ['output-limit null SIGKILL'])
})

test.serial('limits.outputBytes above 64 MiB is not cut short by the default maxBuffer', async (t) => {
  const r = await sh('head -c 70000000 /dev/zero', { limits: { outputBytes: 80_000_000 }, encoding: 'buffer' })
  t.is(r.reason, 'exited')
  t.is(r.stdout.length, 70_000_000)
})

test('a bad maxBuffer is an option error before anything starts', async (t) => {
  for (const maxBuffer of [-1, 1.5, Number.NaN, '10' as unknown as number]) {
    const e = await t.throwsAsync(runIsolated('/bin/true', [], { maxBuffer }), { instanceOf: IsolateError })
    t.is(e?.code, 'ERR_ISOLATE_OPTION')
    t.is(e?.option, 'maxBuffer')
  }
})

test('stackBytes is the command\'s stack limit, soft and hard: it cannot raise it; one above the caller\'s own hard limit is refused naming the option', async (t) => {
  const r = await sh('grep "^Max stack size" /proc/self/limits; ulimit -s; ulimit -s 131073 2>/dev/null; echo raise=$?', { limits: { stackBytes: 128 << 20 } })
  t.regex(r.stdout, /^Max stack size\s+134217728\s+134217728\s+bytes\s*$/m)
  t.regex(r.stdout, /^131072$/m)
  t.regex(r.stdout, /^raise=[12]$/m, 'not above what it was given')
  // A caller whose hard limit is 64 MiB (a Node started under `ulimit -Hs 65536`).
  const script = `const { runIsolated } = await import(${JSON.stringify(join(root, 'index.ts'))})
    for (const stackBytes of [64 << 20, (64 << 20) + 4096]) {
      try { console.log((await runIsolated('/bin/sh', ['-c', 'ulimit -s'], { limits: { stackBytes } })).stdout.trim()) } catch (e) { console.log(e.option, e.message) }
    }`
  const under = spawnSync('/bin/sh', ['-c', 'ulimit -Ss 8192 && ulimit -Hs 65536 && exec "$0" --import=tsx -e "$1"', process.execPath, script], { cwd: root, encoding: 'utf8' })
  t.is(under.status, 0, under.stderr)
  t.regex(under.stdout, /^65536\nlimits\.stackBytes .*must be at most 67108864, this process's own hard RLIMIT_STACK/, under.stdout)
  const zero = await t.throwsAsync(runIsolated('/bin/true', [], { limits: { stackBytes: 0 } }), { instanceOf: IsolateError })
  t.is(zero?.option, 'limits.stackBytes')
})

test('fileSizeBytes stops a large write', async (t) => {
  const r = await sh('head -c 5000000 /dev/zero > /tmp/big; echo rc=$?; wc -c < /tmp/big', { limits: { fileSizeBytes: 1 << 20 } })
  t.regex(r.stdout, /rc=153/, 'head died of SIGXFSZ (128 + 25)')
  t.regex(r.stdout, /^1048576$/m)
  const ok = await sh('head -c 5000000 /dev/zero > /tmp/big; wc -c < /tmp/big')
  t.is(ok.stdout.trim(), '5000000', 'and without the limit the same write succeeds')
})

test('openFiles bounds the descriptors a process may open', async (t) => {
  const r = await runIsolated('/usr/bin/python3', ['-c', 'import os\nfds = []\ntry:\n  while True: fds.append(os.open("/dev/null", 0))\nexcept OSError as e: print(e.errno, len(fds) + 3)'], { limits: { openFiles: 20 } })
  t.is(r.stdout.trim(), '24 20', 'EMFILE at exactly 20 descriptors')
})

test("a small openFiles is the command's: the setup's own descriptors (Landlock's) do not count against it", async (t) => {
  // Landlock opens a ruleset and each path: with the limit set before it, 4 failed at apply_landlock (EMFILE).
  const r = await runIsolated('/bin/sh', ['-c', 'ulimit -Sn; ulimit -Hn'], { limits: { openFiles: 4 }, landlock: { read: ['/'], exec: ['/usr', '/bin', '/lib'] } })
  t.is(r.exitCode, 0, r.stderr)
  t.is(r.stdout, '4\n4\n')
})

/**
 * Python starting `n` threads (they count as processes, and start faster), then, given a
 * `barrier` directory bound at /barrier, saying so there and waiting (20 s at most) until `others`
 * said so too, so that they hold theirs at the same time: prints what refused one, then how many
 * started and the RLIMIT_NPROC.
 */
const threads = (n: number, barrier?: { me: string; others: string[] }) =>
  `import threading, time, resource, os\nthreading.stack_size(65536)\nev = threading.Event()\nn = 0\ntry:\n  for _ in range(${n}):\n    threading.Thread(target=ev.wait, daemon=True).start(); n += 1\nexcept RuntimeError as e:\n  print("refused", e)\n` +
  (barrier
    ? `open("/barrier/${barrier.me}", "w").close()\nend = time.time() + 20\nwhile time.time() < end and not all(os.path.exists("/barrier/" + o) for o in ${JSON.stringify(barrier.others)}): time.sleep(0.02)\n`
    : '') +
  `ev.set()\nprint("started", n, resource.getrlimit(resource.RLIMIT_NPROC)[0])`
const started = (stdout: string) => {
  const m = /^started (\d+) (-?\d+)$/m.exec(stdout)
  return { n: Number(m?.[1]), nproc: Number(m?.[2]) }
}
/** This process's own soft RLIMIT_NPROC, which its sandboxes get no more than. */
const ownNproc = () => {
  const v = /^Max processes\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1]
  return v === undefined || v === 'unlimited' ? Infinity : Number(v)
}
/** The same as Python's getrlimit prints it (-1: RLIM_INFINITY). */
const ownNprocShown = () => (ownNproc() === Infinity ? -1 : ownNproc())

test.serial('a sandbox that names no pids limit is held to 2048 processes and threads, counted in its own user namespace apart from every other sandbox; Infinity lifts it', async (t) => {
  const host = await probe()
  const none = await runIsolated('/usr/bin/python3', ['-c', threads(2100)], { timeoutMs: 60_000 })
  t.is(none.exitCode, 0, none.stderr)
  if (host.defaultPids === null) {
    console.log(`limits.test: no default process bound on this kernel (${host.kernel}, older than 5.14: RLIMIT_NPROC is the host user's count there); 2100 threads must start`)
    t.is(started(none.stdout).n, 2100, none.stdout)
  } else {
    const bound = Math.min(2048, ownNproc())
    t.is(host.defaultPids, bound)
    t.regex(none.stdout, /^refused /m, 'a thread past the bound is refused')
    // Python's main thread and the sandbox's init count too.
    const { n, nproc } = started(none.stdout)
    t.true(n > bound - 100 && n <= bound - 2, `${n} threads started under ${bound}`)
    t.is(nproc, bound, 'the command sees its bound')
    // Each sandbox has a count of its own: two that hold 3/4 of the bound at the same time both get it.
    const each = Math.floor(bound * 0.75)
    const shared = tempDir()
    t.teardown(() => removeDir(shared))
    chmodSync(shared, 0o777)
    const both = await Promise.all(
      ['a', 'b'].map((me) =>
        runIsolated('/usr/bin/python3', ['-c', threads(each, { me, others: me === 'a' ? ['b'] : ['a'] })], {
          timeoutMs: 60_000,
          mounts: [{ type: 'bind', source: shared, target: '/barrier', readonly: false }],
        }),
      ),
    )
    for (const r of both) t.is(started(r.stdout).n, each, r.stdout + r.stderr)
    t.deepEqual(readdirSync(shared).sort(), ['a', 'b'], 'both held theirs at once')
    // An exec into a long-lived sandbox is held the same way, and while one holds the bound a
    // further exec is refused at its fork (the init that forks it has the bound too).
    const box = await createSandbox({})
    try {
      const e = await box.exec('/usr/bin/python3', ['-c', threads(2100)])
      t.true(started(e.stdout).n <= bound - 2, e.stdout + e.stderr)
      const fill = 'import threading, sys\nthreading.stack_size(65536)\nev = threading.Event()\ntry:\n  while True: threading.Thread(target=ev.wait, daemon=True).start()\nexcept RuntimeError:\n  print("full", flush=True)\nsys.stdin.read()'
      const holder = await box.spawn('/usr/bin/python3', ['-c', fill])
      let said = ''
      holder.stdout!.setEncoding('utf8').on('data', (d: string) => (said += d))
      t.true(await waitUntil(() => said.includes('full'), 20_000), 'the holder fills the bound')
      const refused = await t.throwsAsync(box.exec('/bin/true'), { instanceOf: IsolateError })
      t.deepEqual([refused?.step, refused?.errno], ['fork_command', 'EAGAIN'])
      t.regex(refused?.hint ?? '', /default bound of 2048/)
      holder.stdin!.end()
      await holder.wait()
      t.is((await box.exec('/bin/true')).exitCode, 0, 'room again once the holder ended')
    } finally {
      await box.destroy()
    }
  }
  const unbounded = await runIsolated('/usr/bin/python3', ['-c', threads(2100)], { limits: { pids: Infinity }, timeoutMs: 60_000 })
  t.is(started(unbounded.stdout).nproc, ownNprocShown(), 'the caller\'s own RLIMIT_NPROC, not the default')
  if (ownNproc() > 2200) t.is(started(unbounded.stdout).n, 2100, `no bound with pids: Infinity: ${unbounded.stdout}`)
  // A number is the cgroup's limit, and the default's RLIMIT_NPROC is not set beside it.
  const asked: SpawnOptions = { limits: { pids: 3000 }, timeoutMs: 60_000 }
  if (limitsHold(host, { ...asked.limits })) {
    const r = await runIsolated('/usr/bin/python3', ['-c', threads(2100)], asked)
    t.is(started(r.stdout).nproc, ownNprocShown(), r.stdout + r.stderr)
    if (ownNproc() > 3100) t.is(started(r.stdout).n, 2100, r.stdout + r.stderr)
  } else {
    const e = await t.throwsAsync(runIsolated('/bin/true', [], asked), { instanceOf: IsolateError })
    t.is(e?.step, 'create_cgroup', 'an asked bound no cgroup can hold fails closed')
  }
  await t.throwsAsync(runIsolated('/bin/true', [], { limits: { pids: -Infinity } }), { instanceOf: IsolateError, message: /limits\.pids.*Infinity for no bound/ })
})

test.serial('without a user namespace no default process bound holds (its count would be the host ids\', shared by every such sandbox)', async (t) => {
  const host = await probe()
  if (host.rootless) {
    console.log('limits.test: namespaces.user false is for root only; the root suite runs this one')
    return t.pass()
  }
  const r = await runIsolated('/usr/bin/python3', ['-c', threads(2100)], { namespaces: { user: false }, timeoutMs: 60_000 })
  t.is(started(r.stdout).n, 2100, r.stdout + r.stderr)
  t.not(started(r.stdout).nproc, 2048)
})

test('core dumps are off by default and on when asked', async (t) => {
  t.is((await sh('ulimit -c')).stdout.trim(), '0')
  t.not((await sh('ulimit -c', { limits: { coreDumps: true } })).stdout.trim(), '0')
})

test.serial("without a cgroup, a sandbox ended by force still counts what its processes used (the kernel reaps a killed init's children uncounted)", async (t) => {
  // Cold starts with no limit: no cgroup (a warm helper always has one where cgroups may be made).
  configurePool({ size: 0 })
  t.teardown(() => configurePool({}))
  // The command and its forked child say how much CPU each has used so far (their own clocks);
  // the usage must hold at least that. Bounds from what they say, not from the wall clock: a
  // loaded machine gives them less of a timeout (the start is part of it), never less than they said.
  const burn = 'import os, time\ntag = "child" if os.fork() == 0 else "parent"\nmark = 0.02\nwhile True:\n  used = time.process_time()\n  if used >= mark:\n    os.write(1, f"{tag} {used}\\n".encode())\n    mark += 0.02'
  const said = (out: string, tag: string) => Math.max(0, ...out.split('\n').filter((l) => l.startsWith(`${tag} `)).map((l) => Number(l.split(' ')[1]) * 1000))
  for (let timeoutMs = 1000; ; timeoutMs *= 2) {
    const timedOut = await runIsolated('/usr/bin/python3', ['-c', burn], { timeoutMs })
    t.is(timedOut.reason, 'timeout', timedOut.stderr)
    const child = said(timedOut.stdout, 'child')
    const parent = said(timedOut.stdout, 'parent')
    // Before, the init's own ~1 ms: neither the command nor its child counted.
    if (child > 0 && parent > 0) {
      t.true(timedOut.usage.cpuUserMs + timedOut.usage.cpuSystemMs >= child + parent - 1, `the command said ${parent} ms, its child ${child} ms: ${JSON.stringify(timedOut.usage)}`)
      break
    }
    if (timeoutMs >= 32_000) return t.fail(`in ${timeoutMs} ms the command and its child did not both use 20 ms of CPU: ${timedOut.stdout}`)
    console.log(`limits.test: in ${timeoutMs} ms the command and its child did not both use 20 ms of CPU (a loaded machine); again with twice the timeout`)
  }
  // Canceled once it holds 40 MiB and has used 50 ms of CPU by its own clock.
  const python = 'import os, time\nx = bytearray(40 << 20)\nwhile time.process_time() < 0.05: pass\nos.write(1, b"burned\\n")\nwhile True: pass'
  const cancel = new AbortController()
  const sb = await spawnIsolated('/usr/bin/python3', ['-c', python], { signal: cancel.signal })
  let out = ''
  sb.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d))
  t.true(await waitUntil(() => out.includes('burned'), 60_000), 'the program used 50 ms of CPU')
  cancel.abort()
  const canceled = await sb.wait()
  t.is(canceled.reason, 'canceled')
  t.true(canceled.usage.peakMemoryBytes >= 40 << 20, `a 40 MiB program: ${JSON.stringify(canceled.usage)}`)
  t.true(canceled.usage.cpuUserMs + canceled.usage.cpuSystemMs >= 50, JSON.stringify(canceled.usage))
})

test('the result carries usage', async (t) => {
  const r = await runIsolated('/usr/bin/python3', ['-c', 'x = bytearray(50 << 20)\nimport time\nt = time.process_time()\nwhile time.process_time() - t < 0.2: pass'])
  t.is(r.exitCode, 0, r.stderr)
  t.true(r.usage.cpuUserMs + r.usage.cpuSystemMs >= 150, JSON.stringify(r.usage))
  t.true(r.usage.peakMemoryBytes >= 50 << 20, JSON.stringify(r.usage))
  t.true(r.usage.wallMs >= (r.usage.cpuUserMs + r.usage.cpuSystemMs) * 0.5)
})
