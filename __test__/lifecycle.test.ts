/** Lifecycle: timeouts, kill, abort, Node dying, and nothing left behind. */
import test from 'ava'
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { configurePool, createSandbox, IsolateError, probe, runIsolated, spawnIsolated } from '../index.js'
import { limitsHold } from '../lib/probe.js'
import { poolEligible } from '../lib/pool.js'
import { ended, helperServersOf, isHelperOf, isRoot, namespaceHolders, nodeScript, openFds, startFixture, parentOf, pidAlive, pidsInNamespace, poolReady, removeDir, root, sh, tempDir, waitUntil, zombieChildren } from './helpers.js'

test('timeoutMs kills the whole sandbox, background children too', async (t) => {
  // Long enough for a loaded machine to start the sleeps, and this test to look, before it runs
  // out (at 3 s a loaded rootless run once found the command gone before its first look).
  const sb = await spawnIsolated('/bin/sh', ['-c', 'sleep 100 & sleep 100 & wait'], { timeoutMs: 6000 })
  const ns = readlinkSync(`/proc/${sb.pid}/ns/pid`)
  const init = parentOf(sb.pid)
  // The init is not dumpable, so an unprivileged caller cannot read its ns link: add it by pid.
  const inside = () => [...new Set([init, ...pidsInNamespace(ns)])]
  t.true(await waitUntil(() => inside().length === 4, 5000), 'init, sh and two sleeps')
  const members = inside()
  // The namespace's inode number goes to the next new one once it is freed (another test's
  // sandbox, the pool refilling): only processes made before its end can have been in it.
  const lastPid = Number(readFileSync('/proc/sys/kernel/ns_last_pid', 'utf8'))
  const r = await sb.wait()
  t.is(r.reason, 'timeout')
  t.is(r.signal, 'SIGKILL')
  t.true(r.durationMs >= 6000 && r.durationMs < 11000, String(r.durationMs))
  for (const pid of members) t.false(pidAlive(pid), `pid ${pid} survived`)
  t.deepEqual(pidsInNamespace(ns).filter((p) => p <= lastPid), [])
})

test('when the command exits, everything it started ends with it', async (t) => {
  // The command ends when told (a fixed sleep could run out before the test looked, under load).
  const sb = await spawnIsolated('/bin/sh', ['-c', '(setsid sleep 100 &) ; read x; exit 5'], { stdio: ['pipe', 'ignore', 'ignore'] })
  const ns = readlinkSync(`/proc/${sb.pid}/ns/pid`)
  const init = parentOf(sb.pid)
  t.true(await waitUntil(() => pidsInNamespace(ns).length >= 2, 5000))
  const members = [init, ...pidsInNamespace(ns)]
  sb.stdin!.end('\n')
  const r = await sb.wait()
  t.is(r.exitCode, 5)
  t.is(r.reason, 'exited')
  for (const pid of members) t.false(pidAlive(pid), `pid ${pid} survived`)
})

test('a command that left nothing running: its end comes back with its usage, the init is reaped right after', async (t) => {
  // The init reports the end at once when it has reaped every other process (it is then alone
  // in the pid namespace) and exits meanwhile; the test above is the case where it is not alone.
  const sb = await spawnIsolated('/bin/sh', ['-c', 'read x; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exit 7'], { stdio: ['pipe', 'ignore', 'ignore'] })
  const ns = readlinkSync(`/proc/${sb.pid}/ns/pid`)
  // Held open, the namespace keeps its number once the init is gone: a sandbox of another test
  // file started meanwhile could otherwise get a namespace of the same number (seen in the
  // rootless lane: a stranger's pid counted as left behind in this one).
  const held = openSync(`/proc/${sb.pid}/ns/pid`, 'r')
  t.teardown(() => closeSync(held))
  const init = parentOf(sb.pid)
  sb.stdin!.end('\n')
  const r = await sb.wait()
  t.is(r.exitCode, 7)
  t.is(r.reason, 'exited')
  t.true(r.usage.cpuUserMs + r.usage.cpuSystemMs > 5, `the command's CPU is counted: ${JSON.stringify(r.usage)}`)
  t.true(r.usage.peakMemoryBytes > 0)
  t.false(pidAlive(sb.pid), 'the command is gone')
  t.deepEqual(pidsInNamespace(ns).filter((p) => p !== init), [], 'nothing but the init, on its way out')
  t.true(await waitUntil(() => !existsSync(`/proc/${init}`), 3000), 'the init ends and its helper reaps it')
})

test("the sandbox's mount namespace goes with its helper, after Node heard of the end", async (t) => {
  const sb = await spawnIsolated('/bin/sleep', ['100'])
  const mnt = readlinkSync(`/proc/${sb.pid}/ns/mnt`)
  const init = parentOf(sb.pid)
  const helper = parentOf(init)
  // A namespace's inode number is reused as soon as it is freed: a process made after that
  // (another sandbox, this process's pool refilling, which may start before this sandbox's end
  // is heard) can be in a new namespace of the same number. Only processes that existed while
  // this one was alive can hold it.
  const lastPid = Number(readFileSync('/proc/sys/kernel/ns_last_pid', 'utf8'))
  sb.kill('SIGKILL')
  await sb.wait()
  // The helper drops the namespace (its mounts, their superblocks) once it reported the end:
  // by then no process of the sandbox is in it, and once the helper exits nothing holds it.
  t.false(pidAlive(init), 'the init was reaped before the end was reported')
  t.true(await waitUntil(() => !pidAlive(helper), 3000), 'the helper exits')
  t.deepEqual(namespaceHolders('mnt', mnt).filter((p) => p <= lastPid), [], `nothing holds ${mnt}`)
})

test('kill() forwards a signal through the init to the command', async (t) => {
  const sb = await spawnIsolated('/bin/sh', ['-c', 'trap "echo got-term; exit 9" TERM; echo ready; while :; do sleep 0.05; done'])
  let out = ''
  sb.stdout!.on('data', (d) => (out += d))
  t.true(await waitUntil(() => out.includes('ready'), 2000))
  t.true(sb.kill('SIGTERM'))
  const r = await sb.wait()
  await ended(sb.stdout)
  t.is(r.exitCode, 9)
  t.regex(out, /got-term/)
  t.false(sb.kill('SIGTERM'), 'nothing left to signal')
})

test('kill() forwards real-time signals; SIGSTOP stops the command (not the init) and SIGCONT goes on', async (t) => {
  const script = 'import signal, sys, time\nsignal.signal(40, lambda *a: (print("got 40", flush=True), sys.exit(7)))\nprint("ready", flush=True)\nwhile True: time.sleep(0.05)'
  const sb = await spawnIsolated('/usr/bin/python3', ['-c', script])
  let out = ''
  sb.stdout!.on('data', (d) => (out += d))
  t.true(await waitUntil(() => out.includes('ready'), 5000))
  // Its state as the host sees it (the command's host pid).
  const state = () => /^\d+ \(.*\) (\S)/.exec(readFileSync(`/proc/${sb.pid}/stat`, 'utf8'))?.[1]
  t.true(sb.kill('SIGSTOP'))
  t.true(await waitUntil(() => state() === 'T', 5000), `stopped: ${state()}`)
  t.true(sb.kill('SIGCONT'))
  t.true(await waitUntil(() => state() !== 'T', 5000), 'going on')
  // 40 was dropped by the init, which forwarded only the standard signals. (32 and 33 are the C
  // library's: refused.)
  t.throws(() => sb.kill(32), { instanceOf: IsolateError })
  // Not a name or a number: an option error, never a raw TypeError (of a regex given a Symbol).
  t.is(t.throws(() => sb.kill(Symbol('x') as never), { instanceOf: IsolateError })?.option, 'signal')
  t.regex(t.throws(() => sb.kill(NaN), { instanceOf: IsolateError })?.message ?? '', /unknown signal NaN/)
  t.throws(() => sb.kill('toString' as never), { instanceOf: IsolateError })
  t.true(sb.kill(40))
  const r = await sb.wait()
  await ended(sb.stdout)
  t.is(r.exitCode, 7, out)
  t.regex(out, /got 40/)
})

test('kill(SIGKILL) ends the sandbox at once', async (t) => {
  const sb = await spawnIsolated('/bin/sleep', ['100'])
  sb.kill('SIGKILL')
  const r = await sb.wait()
  t.is(r.signal, 'SIGKILL')
  t.is(r.reason, 'signaled')
  t.false(pidAlive(sb.pid))
})

test('a command ended by a real-time signal is reported signaled, with its name, a first command and an exec alike (its end was lost before: wait() never settled)', async (t) => {
  // Timeouts only so that a lost end fails here instead of hanging.
  const own = await runIsolated('/bin/sh', ['-c', 'kill -s 40 $$'], { timeoutMs: 20_000 })
  t.is(own.reason, 'signaled')
  t.is(own.signal, 'SIGRTMIN+6')
  const sb = await spawnIsolated('/bin/sleep', ['100'], { timeoutMs: 20_000 })
  t.true(sb.kill('SIGRTMIN'), 'named as results name it')
  const r = await sb.wait()
  t.is(r.reason, 'signaled')
  t.is(r.signal, 'SIGRTMIN')
  // @ts-expect-error past SIGRTMIN+30 is no signal, and SignalName says so (the typecheck fails without it)
  t.throws(() => sb.kill('SIGRTMIN+31'), { instanceOf: IsolateError }, 'past 64')
  const box = await createSandbox({ timeoutMs: 30_000 })
  t.teardown(() => box.destroy())
  const e = await box.exec('/bin/sh', ['-c', 'kill -s 64 $$'], { timeoutMs: 20_000 })
  t.is(e.reason, 'signaled')
  t.is(e.signal, 'SIGRTMIN+30')
  t.is((await box.exec('/bin/echo', ['still serves'])).stdout, 'still serves\n')
})

test('an AbortSignal cancels a running sandbox', async (t) => {
  const ac = new AbortController()
  const sb = await spawnIsolated('/bin/sleep', ['100'], { signal: ac.signal })
  setTimeout(() => ac.abort(), 100)
  const r = await sb.wait()
  t.is(r.reason, 'canceled')
  t.is(r.signal, 'SIGKILL')
  t.false(pidAlive(sb.pid))
})

test('an abort while spawnIsolated is pending rejects it with ABORT_ERR, as createSandbox, and leaves no process', async (t) => {
  const ac = new AbortController()
  // A duration no other test sleeps for: its process is this sandbox's command.
  const pending = spawnIsolated('/bin/sleep', ['3141'], { signal: ac.signal, stdio: ['pipe', 'pipe', 'pipe'] })
  ac.abort()
  const e = await t.throwsAsync(pending, { instanceOf: IsolateError })
  t.is(e?.code, 'ABORT_ERR')
  t.is(e?.name, 'AbortError', "as Node's own aborts are named")
  t.is(e?.message, 'the sandbox was aborted before it started')
  const sleeping = readdirSync('/proc').filter((p) => {
    try {
      return /^\d+$/.test(p) && readFileSync(`/proc/${p}/cmdline`, 'utf8') === '/bin/sleep\u00003141\u0000'
    } catch {
      return false
    }
  })
  t.deepEqual(sleeping, [], 'the command is not left running')
})

test('an aborted signal refuses to start', async (t) => {
  const ac = new AbortController()
  ac.abort()
  const e = await t.throwsAsync(spawnIsolated('/bin/true', [], { signal: ac.signal }), { instanceOf: IsolateError })
  t.is(e?.code, 'ABORT_ERR')
})

for (const [how, size] of [['from a warm helper where there is a pool', undefined], ['cold', 0]] as const) {
  test.serial(`a helper killed with SIGKILL takes its sandbox with it: the init dies with it (${how})`, async (t) => {
    configurePool({ size })
    t.teardown(() => configurePool({}))
    if (size === undefined && poolEligible(isRoot, (await probe()).cgroupHost?.canCreate === true)) await waitUntil(() => poolReady(), 10_000)
    const sb = await spawnIsolated('/bin/sh', ['-c', 'sleep 100 & sleep 100'], { limits: {} })
    const init = parentOf(sb.pid)
    const helper = parentOf(init)
    const ns = readlinkSync(`/proc/${sb.pid}/ns/pid`)
    t.true(await waitUntil(() => pidsInNamespace(ns).length >= 2, 2000), 'the shell and its sleeps run')
    const members = [...new Set([init, ...pidsInNamespace(ns)])]
    const failed = t.throwsAsync(sb.wait())
    process.kill(helper, 'SIGKILL')
    t.true(await waitUntil(() => members.every((p) => !pidAlive(p)), 2000), `init ${init} and ${members.filter(pidAlive)} outlived helper ${helper}`)
    await failed
  })
}

test('a Node process killed with SIGKILL leaves no sandbox process behind', async (t) => {
  const { child, line } = await startFixture(t, 'spawn-and-hang.ts')
  const { pid } = JSON.parse(line) as { pid: number }
  const init = parentOf(pid)
  const helper = parentOf(init)
  t.true(isHelperOf(helper, child.pid!), 'the helper is the Node process\'s child, or its helper server\'s')
  const ns = readlinkSync(`/proc/${pid}/ns/pid`)
  const members = [...new Set([init, ...pidsInNamespace(ns)])]
  t.is(members.length, 3, 'init, the exec\'d sleep and the background sleep')
  const servers = helperServersOf(child.pid!)
  const exited = new Promise((r) => child.once('exit', r))
  child.kill('SIGKILL')
  await exited
  t.true(await waitUntil(() => [helper, ...members, ...servers].every((p) => !pidAlive(p)), 1000), 'all gone within a second (the helper server too)')
})

test('a worker thread that is terminated ends the sandboxes it started and the ones it was starting, warm or cold, and leaves no descriptor in the process', async (t) => {
  const { line } = await startFixture(t, 'workers-terminated.ts')
  const seen = JSON.parse(line) as { first: number; rounds: Array<{ cold: boolean; after: string; started: number; running: number }>; newFds: string[] }
  t.is(seen.first, 0)
  for (const r of seen.rounds) {
    if (r.after === 'started') t.is(r.started, 3, 'three sandboxes ran in the worker before it was terminated')
    t.is(r.running, 0, `${r.cold ? 'cold' : 'warm'}, terminated once ${r.after}: nothing of it runs two seconds later`)
  }
  t.deepEqual(seen.newFds, [], 'the process holds no descriptor of the workers\' sandboxes or helpers')
})

test.serial('no fd, zombie or process is left after many sandboxes, failed ones and unclosed stdins included', async (t) => {
  // A fixed pool: the default one grows when a burst like this finds it empty, and each warm
  // helper holds two of this process's fds (pool.test.ts counts those).
  configurePool({ size: 2 })
  t.teardown(() => configurePool({}))
  await sh('true') // warm up lazy loading so its fds are not counted
  // And, where there is a pool (lib/pool.ts: root, or a caller who may not create cgroups), its
  // two warm helpers: their fds are this process's too.
  if (poolEligible(isRoot, (await probe()).cgroupHost?.canCreate === true)) await waitUntil(() => poolReady(), 10_000)
  const fdsBefore = openFds().length
  const runs = []
  for (let i = 0; i < 12; i++) {
    runs.push(sh(`echo ${i}`))
    // Its stdin never written nor closed by the caller: it goes with the command (it stayed open).
    runs.push(spawnIsolated('/bin/true').then((sb) => (sb.stdout?.resume(), sb.stderr?.resume(), sb.wait())))
    runs.push(spawnIsolated('/no/such/command').catch((e: IsolateError) => e))
    runs.push(spawnIsolated('/bin/true', [], { mounts: [{ type: 'bind', source: '/no/such/source', target: '/x' }] }).catch((e: IsolateError) => e))
  }
  const results = await Promise.all(runs)
  t.is(results.filter((r) => r instanceof IsolateError).length, 24)
  t.true(await waitUntil(() => zombieChildren().length === 0 && openFds().length <= fdsBefore, 2000), `fds ${fdsBefore} -> ${openFds().length}, zombies ${zombieChildren()}`)
})

test.serial('output nobody reads leaves no fd once the command ends; output read right after wait() is all there', async (t) => {
  // A fixed pool, full before counting: each warm helper holds two of this process's fds.
  configurePool({ size: 2 })
  t.teardown(() => configurePool({}))
  await sh('true')
  if (poolEligible(isRoot, (await probe()).cgroupHost?.canCreate === true)) await waitUntil(() => poolReady(), 10_000)
  const fdsBefore = openFds().length
  for (let i = 0; i < 40; i++) {
    const sb = await spawnIsolated('/bin/echo', ['unread'])
    await sb.wait()
  }
  t.true(await waitUntil(() => openFds().length <= fdsBefore, 2000), `fds ${fdsBefore} -> ${openFds().length}`)
  const sb = await spawnIsolated('/bin/sh', ['-c', 'echo out; echo err >&2'])
  await sb.wait()
  const text = async (s: NodeJS.ReadableStream | null) => {
    let out = ''
    for await (const c of s!) out += String(c)
    return out
  }
  t.deepEqual(await Promise.all([text(sb.stdout), text(sb.stderr)]), ['out\n', 'err\n'])
  // More than the stream's buffer and the pipe hold together, nobody reading: the writer blocks
  // until its timeout. Once it ended, the rest is read in, so the fds go with no reader; and
  // all of what it wrote is there for a late one.
  // Pipes only: the pool's refill comes and goes meanwhile, with sockets.
  const pipes = () => openFds().filter((fd) => { try { return readlinkSync(`/proc/self/fd/${fd}`).startsWith('pipe:') } catch { return false } }).length
  const pipesNow = pipes()
  const full = await spawnIsolated('/bin/sh', ['-c', 'head -c 1000000 /dev/zero; echo done >&2'], { timeoutMs: 1000 })
  const fullDone = await full.wait()
  t.is(fullDone.reason, 'timeout', 'it blocked on the full pipe')
  t.true(await waitUntil(() => pipes() <= pipesNow, 2000), `pipes ${pipesNow} -> ${pipes()}: a pipe whose command ended stayed open`)
  const held = await text(full.stdout)
  t.true(held.length > 64 << 10, `what the pipe held came in too (${held.length} bytes)`)
  t.is(held.replaceAll('\0', ''), '', 'only what was written')
  // A command that grew its pipe to the most it may (F_SETPIPE_SZ, 1 MiB by default) and filled it.
  const grown = await spawnIsolated('/usr/bin/python3', ['-c', 'import fcntl, sys\nfcntl.fcntl(1, 1031, 1 << 20)\nsys.stdout.buffer.write(bytes(4 << 20))'], { timeoutMs: 2000 })
  t.is((await grown.wait()).reason, 'timeout', 'it blocked on its full pipe')
  t.true(await waitUntil(() => pipes() <= pipesNow, 2000), `pipes ${pipesNow} -> ${pipes()}: a grown pipe whose command ended stayed open`)
  const box = await createSandbox()
  t.teardown(() => box.destroy())
  // Counted once the pool refilled the place of the helper the sandbox took.
  if (poolEligible(isRoot, (await probe()).cgroupHost?.canCreate === true)) await waitUntil(() => poolReady(), 10_000)
  const pipesBox = pipes()
  const exec = await box.spawn('/bin/sh', ['-c', 'head -c 2000000 /dev/zero'], { timeoutMs: 1000 })
  t.is((await exec.wait()).reason, 'timeout')
  t.true(await waitUntil(() => pipes() <= pipesBox, 2000), `an exec's too: pipes ${pipesBox} -> ${pipes()}`)
})

test('a wait() without reading stdout still resolves', async (t) => {
  const sb = await spawnIsolated('/bin/sh', ['-c', 'echo some output'])
  const r = await sb.wait()
  t.is(r.exitCode, 0)
  sb.stdout!.resume()
})

test('a descriptor Node inherited without close-on-exec reaches neither the helper, the init nor the image tool', async (t) => {
  // This child Node inherits fd 100 from a shell, not close-on-exec (as Node inherits whatever its
  // parent leaves open); posix_spawn passes such fds on, so the helper must close them itself.
  // Not a low fd: Node marks the inherited fds below about 20 close-on-exec at its start, so
  // those never reach a child of Node's and would test nothing.
  const fd = 100
  const dir = tempDir()
  t.teardown(() => removeDir(dir))
  // With cgroups the second and third come from the warm pool (cgroup v1); without, all cold.
  const cgroupLimits = limitsHold(await probe(), { memoryBytes: 1 }) ? [{}, { memoryBytes: 64 << 20 }, { memoryBytes: 64 << 20 }] : [{}, {}, {}]
  const marker = join(dir, 'leaked-fd')
  writeFileSync(marker, '')
  execFileSync('mkfifo', [join(dir, 'fifo')])
  const script = `
    const { spawnIsolated } = await import(${JSON.stringify(join(root, 'index.ts'))})
    const { readdirSync, readlinkSync, readFileSync } = await import('node:fs')
    const ppid = (p) => Number(readFileSync('/proc/' + p + '/stat', 'utf8').split(') ')[1].split(' ')[1])
    // A rootless caller may not list the init's fds (it is not dumpable): null then.
    const links = (p) => { try { return readdirSync('/proc/' + p + '/fd').map((f) => readlinkSync('/proc/' + p + '/fd/' + f)) } catch { return null } }
    const result = {}
    for (const limits of ${JSON.stringify(cgroupLimits)}) {
      const sb = await spawnIsolated('/bin/sleep', ['5'], { stdio: 'ignore', limits })
      const init = ppid(sb.pid)
      const helper = ppid(init)
      result.leaked = readlinkSync('/proc/self/fd/${fd}')
      // Still inheritable: the fd reaches whatever posix_spawn starts unless it closes it itself.
      result.inheritable = (parseInt(readFileSync('/proc/self/fdinfo/${fd}', 'utf8').match(/flags:\\s+(\\d+)/)[1], 8) & 0o2000000) === 0
      ;(result.helpers ??= []).push(links(helper))
      ;(result.inits ??= []).push(links(init))
      sb.kill('SIGKILL')
      await sb.wait()
      await new Promise((r) => setTimeout(r, 200))
    }
    // The image tool, waiting to open a FIFO that no one writes yet (an abort ends it there). Its
    // fds are listed once it sleeps in that openat, past its main's first step: right after the
    // exec it still holds what it inherited, which it closes first thing.
    const OPENAT = ({ x64: '257', arm64: '56' })[process.arch]
    const { unpackRootfs } = await import(${JSON.stringify(join(root, 'index.ts'))})
    const ac = new AbortController()
    const unpack = unpackRootfs(${JSON.stringify(join(dir, 'fifo'))}, ${JSON.stringify(join(dir, 'out'))}, { signal: ac.signal }).catch((e) => e.code)
    const comm = (p) => { try { return readFileSync('/proc/' + p + '/comm', 'utf8').trim() } catch { return '' } }
    const syscall = (p) => { try { return readFileSync('/proc/' + p + '/syscall', 'utf8').split(' ')[0] } catch { return '' } }
    for (let i = 0; i < 500 && !result.tool; i++) {
      await new Promise((r) => setTimeout(r, 10))
      const tool = readdirSync('/proc').filter((p) => /^\\d+$/.test(p)).find((p) => comm(p) === 'isolate-image' && ppid(p) === process.pid)
      if (tool && syscall(tool) === OPENAT) result.tool = links(tool)
    }
    ac.abort()
    result.unpack = await unpack
    process.stdout.write(JSON.stringify(result) + '\\n')
  `
  const child = spawn('/bin/bash', ['-c', `exec ${fd}<"$1"; exec "$0" --import=tsx --input-type=module -e "$2"`, process.execPath, marker, script], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => child.kill('SIGKILL'))
  let out = ''
  child.stdout!.on('data', (d) => (out += d))
  await new Promise((r) => child.once('exit', r))
  const { leaked, inheritable, helpers, inits, tool, unpack } = JSON.parse(out) as { leaked: string; inheritable: boolean; helpers: string[][]; inits: Array<string[] | null>; tool?: string[]; unpack: string }
  t.is(leaked, marker)
  t.true(inheritable, `fd ${fd} of the child Node is not close-on-exec`)
  t.truthy(tool, 'the image tool was found waiting for its FIFO')
  t.deepEqual(tool?.filter((l) => l === marker), [], `the image tool holds ${tool?.join(', ')}`)
  t.is(tool?.length, 3, `only its stdio: ${tool?.join(', ')}`)
  t.is(unpack, 'ABORT_ERR')
  // Cold, then (with a pool, on cgroup v1) warm: neither holds the leaked fd.
  for (const h of helpers) t.false(h.includes(marker), `a helper holds ${h.join(', ')}`)
  if (!isRoot) t.log('not root: the init is not dumpable, so its fds cannot be listed from here; only the helpers are checked')
  for (const i of inits) {
    if (i === null) {
      t.false(isRoot, 'root can list the init\'s fds')
      continue
    }
    t.false(i.includes(marker), `an init holds ${i.join(', ')}`)
    t.deepEqual(i.filter((l) => l.startsWith('socket:')), [], 'no socket of the helper\'s (its control socket to Node) in the init')
  }
})

test('a caller out of descriptors gets EMFILE with a hint, and the sandboxes that started still end', async (t) => {
  // A child Node whose RLIMIT_NOFILE is 40 starts 40 sandboxes at once (fixtures/few-fds.ts).
  const r = spawnSync('/bin/sh', ['-c', `ulimit -n 40 && exec "${process.execPath}" --import=tsx __test__/fixtures/few-fds.ts`], { cwd: root, encoding: 'utf8', timeout: 60_000 })
  t.is(r.status, 0, r.stderr)
  const { started, errors } = JSON.parse(r.stdout) as { started: number; errors: Array<{ code?: string; errno?: string; hint?: string }> }
  t.true(errors.length > 0 && started + errors.length === 40, r.stdout)
  for (const e of errors) {
    t.is(e.code, 'ERR_ISOLATE_NATIVE')
    t.is(e.errno, 'EMFILE')
    t.regex(e.hint ?? '', /ulimit -n/)
  }
})

test('an exec into a long-lived sandbox by a caller out of descriptors gets EMFILE with a hint too, and the sandbox takes the next exec', async (t) => {
  const r = spawnSync('/bin/sh', ['-c', `ulimit -n 64 && exec "${process.execPath}" --import=tsx __test__/fixtures/few-fds.ts exec`], { cwd: root, encoding: 'utf8', timeout: 60_000 })
  t.is(r.status, 0, r.stderr)
  const { errors, after } = JSON.parse(r.stdout) as { errors: Array<{ code?: string; errno?: string; hint?: string }>; after: string }
  t.is(errors.length, 1, r.stdout)
  t.is(errors[0].code, 'ERR_ISOLATE_NATIVE')
  t.is(errors[0].errno, 'EMFILE')
  t.regex(errors[0].hint ?? '', /ulimit -n/)
  t.is(after, 'still here\n')
})

/** Holds the event loop (nothing of a socket is read meanwhile) for `ms`. */
function holdLoop(ms: number): void {
  const until = Date.now() + ms
  while (Date.now() < until);
}

test('a cancel or destroy() that comes after the sandbox ended, its report still unread, gets that end, not a helper error', async (t) => {
  for (let i = 0; i < 10; i++) {
    const sb = await spawnIsolated('/bin/true', [], { stdio: 'ignore' })
    // Past the command's end (on a loaded machine it took longer than 30 ms) and its helper's
    // exit: the exit report waits in the socket, unread.
    const until = Date.now() + 5000
    while (pidAlive(sb.pid) && Date.now() < until);
    holdLoop(30)
    sb.cancel()
    // It was an ERR_ISOLATE_HELPER: the write to the helper's closed socket failed, and Node
    // destroyed the socket before the report was read.
    const r = await sb.wait()
    t.is(r.exitCode, 0)
  }
  const box = await createSandbox({ timeoutMs: 200 })
  holdLoop(600)
  t.is((await box.destroy()).reason, 'timeout')
})

for (const [what, body] of [
  ['a sandbox with stdio pipes (the default)', `const sb = await spawnIsolated('/bin/sleep', ['100']); sb.unref(); pids.push(sb.pid)`],
  ['a sandbox with a terminal', `const sb = await spawnIsolated('/bin/sleep', ['100'], { tty: true }); sb.unref(); pids.push(sb.pid)`],
  ['a long-lived sandbox with an exec running, and one started after unref()', `const box = await createSandbox(); await box.spawn('/bin/sleep', ['100']); box.unref(); const keep = setInterval(() => {}, 1000); await box.spawn('/bin/sleep', ['100']); clearInterval(keep); pids.push(box.pid)`],
] as const) {
  test(`unref() lets Node exit while ${what} runs, its stdio pipes unref'd too; the sandbox ends with Node`, async (t) => {
    const script = `
      const { createSandbox, spawnIsolated } = await import(${JSON.stringify(join(root, 'index.ts'))})
      const pids = []
      ${body}
      console.log(JSON.stringify(pids))
    `
    const r = await nodeScript(script, 20_000)
    t.false(r.timedOut, 'Node exited by itself, not at the 20 s timeout')
    t.is(r.status, 0, r.stderr)
    const pids = JSON.parse(r.stdout.trim().split('\n').pop()!) as number[]
    t.true(await waitUntil(() => pids.every((p) => !pidAlive(p)), 3000), `the sandbox ended with Node: ${pids.filter(pidAlive)}`)
  })
}

test('a polluted Object.prototype (stdin, stdout, persistent, tty) reaches none of the objects the library makes: no fd of the caller taken, no descriptor left', async (t) => {
  // In a Node of its own: the pollution must not reach the other tests.
  const script = `
    const { configurePool, createSandbox, runIsolated, spawnIsolated } = await import(${JSON.stringify(join(root, 'index.ts'))})
    const { openSync, readdirSync, readlinkSync } = await import('node:fs')
    // A size of the caller's own: the pool grows by itself when a start finds it empty (load).
    configurePool({ size: 2 })
    const mine = openSync('/dev/null', 'r')
    await runIsolated('/bin/true')
    await new Promise((r) => setTimeout(r, 500)) // a warm pool
    const fds = () => readdirSync('/proc/self/fd').length
    const before = fds()
    for (const k of ['stdin', 'stdout', 'stderr', 'control']) Object.prototype[k] = mine
    Object.prototype.persistent = true
    Object.prototype.tty = { rows: 1, cols: 1 }
    const seen = []
    for (let i = 0; i < 5; i++) {
      const sb = await spawnIsolated('/bin/sh', ['-c', 'test -t 0 && echo tty || echo no tty'], { stdio: ['ignore', 'pipe', 'ignore'] })
      let out = ''
      sb.stdout.on('data', (d) => (out += d))
      await Promise.all([sb.wait(), new Promise((r) => sb.stdout.on('end', r))])
      seen.push(out.trim())
    }
    const box = await createSandbox()
    const r = await box.exec('/bin/echo', ['hi'], { stdio: 'ignore' })
    await box.destroy()
    for (const k of ['stdin', 'stdout', 'stderr', 'control', 'persistent', 'tty']) delete Object.prototype[k]
    await new Promise((r) => setTimeout(r, 500))
    console.log(JSON.stringify({ seen, exec: r.exitCode, mine: readlinkSync('/proc/self/fd/' + mine), grew: fds() - before }))
  `
  const r = await nodeScript(script, 60_000)
  t.is(r.status, 0, r.stderr)
  const seen = JSON.parse(r.stdout.trim().split('\n').pop()!)
  t.deepEqual(seen.seen, Array(5).fill('no tty'), 'no terminal where none was asked for')
  t.is(seen.exec, 0)
  t.is(seen.mine, '/dev/null', "the caller's descriptor is still its own")
  t.true(seen.grew <= 2, `${seen.grew} more descriptors open after (a pool's helpers may hold a few)`)
})

test('one AbortSignal shared by many sandboxes and execs ends them all, with no MaxListenersExceededWarning (one listener per signal)', async (t) => {
  const script = `
    const { createSandbox, spawnIsolated } = await import(${JSON.stringify(join(root, 'index.ts'))})
    const warnings = []
    process.on('warning', (w) => warnings.push(w.name))
    const ac = new AbortController()
    const box = await createSandbox()
    const started = await Promise.all([
      ...Array.from({ length: 12 }, () => spawnIsolated('/bin/sleep', ['100'], { signal: ac.signal })),
      ...Array.from({ length: 12 }, () => box.spawn('/bin/sleep', ['100'], { signal: ac.signal })),
    ])
    ac.abort()
    const ends = await Promise.all(started.map((s) => s.wait()))
    await box.destroy()
    console.log(JSON.stringify({ reasons: [...new Set(ends.map((e) => e.reason))], warnings }))
  `
  const r = await nodeScript(script, 60_000)
  t.is(r.status, 0, r.stderr)
  const seen = JSON.parse(r.stdout.trim().split('\n').pop()!)
  t.deepEqual(seen.reasons, ['canceled'], 'every one ended by the abort')
  t.deepEqual(seen.warnings, [], 'no warning')
})

test('ref() and unref() on an ended sandbox add nothing to its closed streams (each call on a socket with no handle left a listener)', async (t) => {
  const script = `
    const { spawnIsolated } = await import(${JSON.stringify(join(root, 'index.ts'))})
    const warnings = []
    process.on('warning', (w) => warnings.push(w.name))
    const sb = await spawnIsolated('/bin/true')
    sb.stdout.resume()
    await sb.wait()
    await new Promise((r) => setTimeout(r, 100))
    for (let i = 0; i < 12; i++) sb.unref().ref()
    await new Promise((r) => setTimeout(r, 100))
    console.log(JSON.stringify(warnings))
  `
  const r = await nodeScript(script, 30_000)
  t.is(r.status, 0, r.stderr)
  t.deepEqual(JSON.parse(r.stdout.trim().split('\n').pop()!), [])
})
