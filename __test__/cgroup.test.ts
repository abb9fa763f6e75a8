/**
 * Limits enforced through the sandbox's cgroup: memory (reason 'oom'), pids, cpus, cpu time.
 * Runs on this host's cgroup v1 and, through .ci/run, inside a guest whose only hierarchy is
 * cgroup v2 (ISOLATE_CGROUP_LANE=v2). Where this process may not create cgroups (rootless on v1),
 * each limit must fail closed instead, and that is what is asserted.
 */
import test from 'ava'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmdirSync, rmSync } from 'node:fs'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { tmpdir } from 'node:os'
import { gunzipSync } from 'node:zlib'
import { basename, join } from 'node:path'
import { configurePool, IsolateError, probe, runIsolated, spawnIsolated, type SpawnOptions } from '../index.js'
import { cgroupLimitsHere, limitsHold } from '../lib/probe.js'
import { cli } from './cli-runner.js'
import { cgroupDirOf, descendantsOf, ended, helperServersOf, nodeScript, parentOf, root, pidAlive, pidsInNamespace, poolHeard, poolReady, STAND_IN_N, standInCgroup, startOf, untilQuietMounts, waitUntil, warmHelpersOf } from './helpers.js'

const host = await probe()
/**
 * This process may make a sandbox cgroup (what cpuTimeMs needs), and the other cgroup limits hold
 * too: on v2 a child of this process's cgroup must also be able to have their controllers, which
 * a delegated cgroup holding the caller's own processes cannot give it (the no-internal-process
 * rule): there memoryBytes, pids and cpus fail closed. The same reading `isolate doctor` prints.
 */
const { canCreate, held, refused } = cgroupLimitsHere(host)
const enforced = canCreate && refused.length === 0
/** Every limit of these options holds here; else they fail closed, naming what is missing. */
const holds = (options: SpawnOptions) => limitsHold(host, { ...options.limits })
const why = canCreate ? refused.map((r) => `${r.option}: ${r.message}`).join('; ') : (host.cgroupHost?.reason ?? 'no cgroup detection')
console.log(`cgroup.test: mode ${host.cgroup.mode}, ${enforced ? 'limits enforced' : `limits must fail closed (${why})`}${canCreate && !enforced ? `; these hold: ${held.join(', ') || 'none'}` : ''}`)
if (process.env.ISOLATE_CGROUP_LANE === 'v2' && host.cgroup.mode !== 'v2') throw new Error(`the v2 lane runs on a ${host.cgroup.mode} host`)

/** The sandbox cgroups beneath each of this process's own cgroups, by hierarchy directory (not tests' stand-ins for another helper's). */
function sandboxCgroups(): string[] {
  const found: string[] = []
  for (const line of readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n')) {
    const { dir } = cgroupDirOf(line)
    try {
      for (const name of readdirSync(dir)) if (name.startsWith('isolate-') && !name.endsWith(`-${STAND_IN_N}`)) found.push(join(dir, name))
    } catch {}
  }
  return found
}

const commOf = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim()
  } catch {
    return ''
  }
}

/** The helper a sandbox cgroup is named after (`isolate-<helper pid>-<its start time>-<n>`). */
const helperOf = (dir: string) => /^isolate-(\d+)-\d+-\d+$/.exec(basename(dir))?.[1]

/** The own cgroups the sandbox cgroups are made beneath: v1's memory and pids, or v2's one. */
const ownParents = () =>
  readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n')
    .filter((l) => (host.cgroup.mode === 'v2' ? l.startsWith('0::') : /^\d+:[^:]*\b(memory|pids)\b/.test(l)))
    .map((l) => cgroupDirOf(l).dir)

/**
 * What became of a sandbox cgroup's helper: `ended` (exited, reaped or not), `warm` (a helper of
 * this process's pool: it keeps its cgroup while it waits for a spec, and when it ran a sandbox
 * it removes the cgroup before it exits), `running` (another helper of this process or of its
 * helper server), or
 * `other` (another process's: other test files run their sandboxes at the same time, in the
 * same cgroup, and theirs are theirs to check).
 */
function helperState(dir: string): 'ended' | 'warm' | 'running' | 'other' {
  const pid = helperOf(dir)
  let stat: string
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return 'ended'
  }
  const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  if (Number(ppid) !== process.pid && !helperServersOf(process.pid).includes(Number(ppid))) return 'other'
  if (state === 'Z' || state === 'X') return 'ended'
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('--warm') ? 'warm' : 'running'
  } catch {
    return 'ended'
  }
}

/**
 * The sandbox cgroups left behind: those whose helper has ended and those of this process's
 * helpers that are not waiting in its pool (pool.test.ts checks that the pool's go too). A
 * helper removes its cgroup before it exits, so its state is read first and the directory looked
 * for after: the other order sees a cgroup removed between the two as a leak.
 */
function leftoverCgroups(): string[] {
  return sandboxCgroups().filter((d) => {
    const state = helperState(d)
    return (state === 'ended' || state === 'running') && existsSync(d)
  })
}

/** What a leftover cgroup and its helper look like, for the failure's message. */
function describe(dir: string): string {
  const pid = helperOf(dir)
  const read = (f: string) => {
    try {
      return readFileSync(f, 'utf8').replace(/[\s\0]+/g, ' ').trim()
    } catch (e) {
      return (e as NodeJS.ErrnoException).code ?? String(e)
    }
  }
  const state = read(`/proc/${pid}/status`).match(/State: \S+ \S+/)?.[0] ?? 'gone'
  return `${dir}: helper ${pid} ${state} wchan ${read(`/proc/${pid}/wchan`)} cmdline ${read(`/proc/${pid}/cmdline`)}; procs [${read(join(dir, 'cgroup.procs'))}] events [${read(join(dir, 'cgroup.events'))}]`
}

test.afterEach.always(async (t) => {
  // The helper removes the cgroup right after it reported the end, and exits only then. It does
  // that behind its caller (nice 19): on a loaded host, or in the emulated v2 guest, it may take
  // a while; a cgroup whose helper has ended, though, is left for good.
  await waitUntil(() => leftoverCgroups().every((d) => helperState(d) === 'ended'), 30_000)
  t.deepEqual(leftoverCgroups().map(describe), [], 'no sandbox cgroup is left behind')
})

async function failsClosed(t: import('ava').ExecutionContext, options: SpawnOptions) {
  const e = await t.throwsAsync(spawnIsolated('/bin/true', [], options), { instanceOf: IsolateError })
  t.is(e?.step, 'create_cgroup')
  t.truthy(e?.hint)
}

test.serial('a memory bomb ends with reason oom, its peak near the limit, Node unharmed', async (t) => {
  const limit = 64 << 20
  const options: SpawnOptions = { limits: { memoryBytes: limit }, timeoutMs: 60_000 }
  if (!holds(options)) return failsClosed(t, options)
  const rss = process.memoryUsage().rss
  const r = await runIsolated('/usr/bin/python3', ['-c', 'x = []\nwhile True: x.append(bytearray(1 << 20))'], options)
  t.is(r.reason, 'oom')
  t.is(r.signal, 'SIGKILL')
  t.true(r.usage.peakMemoryBytes > limit * 0.75 && r.usage.peakMemoryBytes <= limit * 1.02, String(r.usage.peakMemoryBytes))
  t.true(process.memoryUsage().rss - rss < 32 << 20)
  const after = await runIsolated('/bin/echo', ['still fine'])
  t.is(after.stdout, 'still fine\n')
})

test.serial('TCP buffers count against the memory limit: loopback connections nobody reads stop near it', async (t) => {
  const limit = 32 << 20
  // Under the v2 lane's emulator every byte of loopback TCP is slow, and a flood held at the limit
  // sometimes neither ends nor is killed there (its sends wait on the cgroup's reclaim): what it
  // had queued by its deadline is the answer then. Unbounded, it passes 48 MiB long before.
  const options: SpawnOptions = { limits: { memoryBytes: limit }, timeoutMs: 120_000 }
  if (!holds(options)) return failsClosed(t, options)
  // Each connection queues what the kernel lets it (its send buffer and its peer's receive
  // buffer, megabytes each): unbounded, 64 of them reach the 256 MiB this stops at. The total
  // so far is printed at every MiB.
  const flood = [
    'import socket, sys',
    'srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(128)',
    'chunk, total, held, said = b"x" * 65536, 0, [], 0',
    'for _ in range(64):',
    '  c = socket.create_connection(srv.getsockname()); held += [c, srv.accept()[0]]; c.setblocking(False)',
    '  while total < 256 << 20:',
    '    try: total += c.send(chunk)',
    '    except OSError: break',
    '    if total >> 20 > said: said = total >> 20; print(total, flush=True)',
    '  if total >= 256 << 20: break',
    'print(total, "done", flush=True)',
  ].join('\n')
  const r = await runIsolated('/usr/bin/python3', ['-c', flood], options)
  if (r.reason === 'oom') return t.pass('killed at the limit')
  const last = r.stdout.trim().split('\n').pop() ?? ''
  const queued = Number(last.split(' ')[0])
  t.true(r.reason === 'timeout' || (r.exitCode === 0 && last.endsWith('done')), `${r.reason} ${r.signal} after ${Math.round(r.durationMs)} ms: ${last} ${r.stderr}`)
  t.true(queued < limit * 1.5, `${queued >> 20} MiB queued in TCP buffers under a ${limit >> 20} MiB limit (${r.reason})`)
})

const signalLimits = { memoryBytes: 64 << 20, pids: 16 }

/**
 * A Node process of its own session and group (as a terminal's foreground job, or a service,
 * is) running one sandbox with signalLimits where they hold, then `more`; its pid, and the
 * sandbox's command's.
 */
async function serviceChild(t: import('ava').ExecutionContext, more: string): Promise<{ child: ChildProcess; pid: number }> {
  const child = spawn(process.execPath, ['--import=tsx', '-e', `
    const api = await import(${JSON.stringify(join(root, 'index.ts'))})
    const options = ${holds({ limits: signalLimits }) ? JSON.stringify({ limits: signalLimits }) : '{}'}
    const sb = await api.spawnIsolated('/bin/sleep', ['100'], options)
    ${more}
    process.stdout.write(sb.pid + '\\n')
    setInterval(() => {}, 1000)
  `], { cwd: root, detached: true, stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => void child.kill('SIGKILL'))
  const pid = await new Promise<number>((resolve, reject) => {
    child.stdout!.on('data', (d) => resolve(Number(String(d).trim())))
    child.on('close', (code) => reject(new Error(`the child exited early with ${code}`)))
  })
  return { child, pid }
}
for (const signal of ['SIGINT', 'SIGHUP'] as const) {
  test.serial(`${signal} to the caller's process group (Ctrl-C, a terminal hanging up) ends the caller only: its helpers end its sandboxes and remove their cgroups`, async (t) => {
    const { child, pid } = await serviceChild(t, '')
    const helper = parentOf(parentOf(pid))
    const servers = helperServersOf(child.pid!)
    const cgroups = sandboxCgroups().filter((d) => helperOf(d) === String(helper))
    t.is(cgroups.length > 0, holds({ limits: signalLimits }), `the sandbox's cgroups: ${cgroups}`)
    const exited = new Promise((r) => child.once('exit', (_code, sig) => r(sig)))
    process.kill(-child.pid!, signal)
    t.is(await exited, signal)
    t.true(await waitUntil(() => [pid, helper, ...servers].every((p) => !pidAlive(p)), 5000), 'the command, its helper and the helper server end')
    t.deepEqual(cgroups.filter(existsSync), [], 'no cgroup is left')
  })
}

test.serial("SIGTERM to every process of the caller's service at once (systemd's stop) leaves no cgroup: the helpers ignore it, and end with their caller", async (t) => {
  const { child, pid } = await serviceChild(t, 'await api.createSandbox(options)')
  // Its pool's warm helpers too, each with a cgroup made ahead where cgroups may be made.
  await new Promise((r) => setTimeout(r, 500))
  const service = [child.pid!, ...descendantsOf(child.pid!)]
  const cgroups = sandboxCgroups().filter((d) => service.includes(Number(helperOf(d))))
  t.is(cgroups.length > 0, holds({ limits: signalLimits }), `the service's cgroups: ${cgroups}`)
  t.true(service.includes(pid), "the sandbox's command is one of the service's processes")
  const exited = new Promise((r) => child.once('exit', (_code, sig) => r(sig)))
  for (const p of service) {
    try {
      process.kill(p, 'SIGTERM')
    } catch {} // gone meanwhile (a zygote's clone, a sweep)
  }
  t.is(await exited, 'SIGTERM')
  t.true(await waitUntil(() => service.every((p) => !pidAlive(p)), 5000), `left running: ${service.filter(pidAlive)}`)
  t.deepEqual(cgroups.filter(existsSync), [], 'no cgroup is left')
})

test.serial("a helper server, as it starts, removes the empty cgroups that helpers no longer alive left (a SIGKILL of a whole service), and nothing else", async (t) => {
  if (!canCreate || process.env.ISOLATE_CGROUP_PARENT) return t.pass(`not here: ${canCreate ? 'sandbox cgroups go beneath ISOLATE_CGROUP_PARENT' : why}`)
  const parents = ownParents()
  t.true(parents.length > 0, 'this process has cgroups of its own to make sandbox cgroups beneath')
  const exitedAt = spawnSync('/bin/sh', ['-c', 'echo $$'], { encoding: 'utf8' }).stdout.trim()
  const left = parents.flatMap((p) => [join(p, `isolate-${exitedAt}-1-0`), join(p, `isolate-${exitedAt}-1-0`, 'inner')])
  // A process of a dead helper's pid that started at another time is another process (a pid is
  // given again once reaped; another pid namespace has its own).
  const leftByOneBefore = parents.map((p) => join(p, `isolate-${process.pid}-${startOf(process.pid) - 1}-999998`))
  const living = parents.map((p) => join(p, `isolate-${process.pid}-${startOf(process.pid)}-999999`))
  for (const d of [...left, ...leftByOneBefore, ...living]) mkdirSync(d)
  t.teardown(() => [...left].reverse().concat(leftByOneBefore, living).forEach((d) => existsSync(d) && rmdirSync(d)))
  const r = await nodeScript(`
    const { runIsolated } = await import(${JSON.stringify(join(root, 'index.ts'))})
    await runIsolated('/bin/true')
  `, 30_000)
  t.is(r.status, 0, r.stderr)
  t.true(await waitUntil(() => left.every((d) => !existsSync(d)), 5000), `left by pid ${exitedAt}, which no process has now: ${left.filter(existsSync)}`)
  t.true(await waitUntil(() => leftByOneBefore.every((d) => !existsSync(d)), 5000), `left by an earlier process of this pid: ${leftByOneBefore.filter(existsSync)}`)
  t.true(living.every(existsSync), 'one named after a living process stays')
})

// A real-time signal too: the server's reaping once stopped at a status nix could not decode.
for (const [how, size, signal] of [['from a warm helper', undefined, 'SIGKILL'], ['cold', 0, 'SIGKILL'], ['cold', 0, 40]] as const) {
  test.serial(`a helper killed with ${signal} leaves no cgroup: the helper server removes what it left (${how})`, async (t) => {
    const options: SpawnOptions = { limits: { memoryBytes: 64 << 20, pids: 16 } }
    if (!holds(options)) return failsClosed(t, options)
    configurePool({ size })
    t.teardown(() => configurePool({}))
    if (size === undefined) await waitUntil(() => poolReady(), 10_000)
    const sb = await spawnIsolated('/bin/sleep', ['100'], options)
    const failed = t.throwsAsync(sb.wait())
    const helper = parentOf(parentOf(sb.pid))
    const cgroups = sandboxCgroups().filter((d) => helperOf(d) === String(helper))
    t.true(cgroups.length > 0, 'the sandbox has cgroups')
    // The sweep must not take another helper's cgroup of the same pid, nor kill what it holds.
    const other = standInCgroup(ownParents()[0], helper)
    try {
      process.kill(helper, signal)
      const e = await failed
      t.is((e as IsolateError | undefined)?.code, 'ERR_ISOLATE_HELPER')
      t.regex((e as IsolateError | undefined)?.hint ?? '', /killed from outside/, 'says what ends a helper without a report')
      t.true(await waitUntil(() => !pidAlive(sb.pid) && cgroups.every((d) => !existsSync(d)), 5000), `left: ${cgroups.filter(existsSync)}`)
      t.true(await other.untouched(), "another helper's cgroup of the same pid, and its process, are untouched")
    } finally {
      await other.remove()
    }
  })
}

test.serial('a fork bomb stops at the pids limit', async (t) => {
  const options: SpawnOptions = { limits: { pids: 16 }, timeoutMs: 60_000 }
  if (!holds(options)) return failsClosed(t, options)
  const bomb = 'import os, time\nforks = 0\nfor _ in range(200):\n  try:\n    if os.fork() == 0:\n      time.sleep(3); os._exit(0)\n    forks += 1\n  except OSError as e:\n    print("refused", e.errno); break\nprint(forks, len([p for p in os.listdir("/proc") if p.isdigit()]))'
  const r = await runIsolated('/usr/bin/python3', ['-c', bomb], options)
  t.regex(r.stdout, /^refused 11$/m, 'fork fails with EAGAIN')
  const [forks, inside] = r.stdout.trim().split('\n').pop()!.split(' ').map(Number)
  t.true(forks < 16 && inside <= 16, `${forks} forks, ${inside} processes inside`)
  t.is(r.usage.pidsLimitHits, 1, 'the one refused fork is counted in the usage')
  const calm = await runIsolated('/bin/sh', ['-c', 'true'], options)
  t.is(calm.usage.pidsLimitHits, 0)
  t.false('pidsLimitHits' in (await runIsolated('/bin/true')).usage, 'not told where no cgroup limit counts refusals')
  const after = await runIsolated('/bin/echo', ['host ok'])
  t.is(after.stdout, 'host ok\n', 'Node and the host still spawn')
})

test.serial('cpus: 0.5 holds a busy loop near half a core', async (t) => {
  const options: SpawnOptions = { limits: { cpus: 0.5 }, timeoutMs: 3000 }
  if (!holds(options)) return failsClosed(t, options)
  const r = await runIsolated('/bin/sh', ['-c', 'while :; do :; done'], options)
  t.is(r.reason, 'timeout')
  const ratio = (r.usage.cpuUserMs + r.usage.cpuSystemMs) / r.usage.wallMs
  t.true(ratio > 0.3 && ratio < 0.65, `cpu/wall = ${ratio.toFixed(2)} (${JSON.stringify(r.usage)})`)
})

test.serial("durationMs counts from the command's execve, not the setup before it (slow under cpus: 0.01, whose quota the setup spends)", async (t) => {
  // A generous timeout: in the v2 lane's emulated guest the sleep's own start takes seconds of
  // this quota.
  const options: SpawnOptions = { limits: { cpus: 0.01 }, timeoutMs: 60_000, stdio: 'ignore' }
  if (!holds(options)) return failsClosed(t, options)
  // The time outside durationMs, beside that of the same run without the quota (Node's own start
  // of it, the host's load): the sleep's own start may wait for the quota too (its time), the
  // setup's wait may not. Most setups here wait 20-190 ms; up to 10 pairs until one did (an old
  // durationMs counted it: its gap matched the run without the quota).
  const outside = async (o: SpawnOptions) => {
    const asked = performance.now()
    const r = await runIsolated('/bin/sleep', ['0.3'], o)
    const total = performance.now() - asked
    t.is(r.reason, 'exited')
    t.true(r.durationMs >= 290 && r.durationMs <= total, `${r.durationMs} of ${total} ms`)
    t.is(r.usage.wallMs, r.durationMs)
    return total - r.durationMs
  }
  const plain: SpawnOptions = { ...options, limits: {} }
  await outside(options)
  const pairs: string[] = []
  let leftOut = false
  for (let i = 0; i < 10 && !leftOut; i++) {
    const [quota, none] = [await outside(options), await outside(plain)]
    pairs.push(`${quota.toFixed(0)} vs ${none.toFixed(0)} ms`)
    leftOut = quota - none > 50
  }
  t.log(`outside durationMs, with the quota vs without: ${pairs.join(', ')}`)
  t.true(leftOut, `no setup under the quota was left out of its durationMs: ${pairs.join(', ')}`)
})

test('isolate doctor says which limits hold here, as the sandboxes of this file find them', async (t) => {
  const r = await cli(['doctor'])
  t.is(r.status, 0, r.stderr)
  const line = /may create:\s+(.*)/.exec(r.stdout)?.[1] ?? ''
  if (enforced) t.is(line, 'yes: memory, pids, cpu and cpu-time limits are enforced')
  else if (canCreate) {
    t.is(line, `yes: ${held.length ? `${held.join(', ')} enforced` : 'but no limit holds'}; ${refused.map((l) => l.option).join(', ')} fail closed`)
    // The same reason, but for the count of processes, which is the doctor's own moment's.
    const counted = (text: string) => text.replace(/holds \d+ process/g, 'holds N process')
    for (const l of refused) t.true(counted(r.stdout).includes(`problem: ${l.option}: ${counted(l.message)}`), r.stdout)
  } else t.regex(line, /^no/)
})

test.serial('cpuTimeMs ends a busy loop with reason cpu-time', async (t) => {
  const options: SpawnOptions = { limits: { cpuTimeMs: 400 }, timeoutMs: 60_000 }
  if (!holds(options)) return failsClosed(t, options)
  const r = await runIsolated('/bin/sh', ['-c', 'while :; do :; done & while :; do :; done'], options)
  t.is(r.reason, 'cpu-time')
  const used = r.usage.cpuUserMs + r.usage.cpuSystemMs
  t.true(used >= 400 && used < 700, `${used} ms of CPU for a 400 ms budget`)
})

test.serial("cpuTimeMs counts CPU time exactly: a program that runs only between timer ticks (which a tick-sampled count misses) is still stopped at it", async (t) => {
  const options: SpawnOptions = { limits: { cpuTimeMs: 1000 }, timeoutMs: 30_000 }
  if (!holds(options)) return failsClosed(t, options)
  const dir = mkdtempSync(join(tmpdir(), 'isolate-ticks-'))
  // The sandbox's root is no host root: it may enter and run what is there, not write it.
  chmodSync(dir, 0o755)
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const cc = spawnSync('gcc', ['-O1', '-o', join(dir, 'between-ticks'), join(root, '__test__', 'fixtures', 'between-ticks.c')], { encoding: 'utf8' })
  if (cc.error || cc.status !== 0) {
    console.log(`cgroup.test: no C compiler here (${cc.error?.message ?? cc.stderr}): the between-ticks test runs on the host`)
    return t.pass()
  }
  // The tick's period, from the kernel's configuration (250 Hz where it cannot be read).
  let hz = 250
  try {
    hz = Number(/^CONFIG_HZ=(\d+)$/m.exec(gunzipSync(readFileSync('/proc/config.gz')).toString('latin1'))?.[1] ?? hz)
  } catch {}
  const runs = await Promise.all(Array.from({ length: 3 }, () =>
    runIsolated('/j/between-ticks', ['1500', String(Math.round(1e6 / hz))], { ...options, mounts: [{ type: 'bind', source: dir, target: '/j' }] }),
  ))
  for (const r of runs) {
    t.is(r.reason, 'cpu-time', `it ran ${r.stdout.trim() || 'past'} ms of CPU (its own count), ${r.usage.cpuUserMs + r.usage.cpuSystemMs} counted`)
    t.true(r.usage.cpuUserMs + r.usage.cpuSystemMs >= 1000)
  }
})

const warmHelpers = () => warmHelpersOf(process.pid)

test.serial('where root may make sandbox cgroups, a sandbox starts from a warm helper with an init made ahead, its limits on', async (t) => {
  const options: SpawnOptions = { limits: { pids: 16 }, stdio: ['pipe', 'pipe', 'pipe'] }
  if (!holds(options)) {
    // Warm helpers without a cgroup may serve the sandboxes that need none, and nothing is left
    // of those refused. Another process's sandboxes in the same cgroup (a root caller's, beside
    // this rootless run) are theirs.
    t.deepEqual(sandboxCgroups().filter((d) => helperState(d) !== 'other'), [], 'no sandbox cgroup of ours where the limit fails closed')
    return failsClosed(t, options)
  }
  if (process.geteuid?.() !== 0) {
    // A rootless caller whose pids limit holds (on v2 its cgroup is the hierarchy's root, written
    // by it): cold starts, cloned straight into their cgroups.
    const r = await runIsolated('/bin/sh', ['-c', 'echo done'], { limits: { pids: 16 } })
    t.is(r.stdout, 'done\n')
    t.deepEqual(warmHelpers().helpers, [], 'no warm helpers for a rootless caller')
    return
  }
  const start = async () => {
    await runIsolated('/bin/true', [], { limits: { pids: 16 } })
    await waitUntil(() => warmHelpers().inits.length >= 2, 20_000, 50)
    const ahead = warmHelpers().inits
    const sb = await spawnIsolated('/bin/sh', ['-c', 'read x; echo done'], options)
    const init = parentOf(sb.pid)
    if (!ahead.includes(init)) {
      sb.stdin!.end('\n')
      await sb.wait()
    }
    return { ahead, sb, init }
  }
  const { ahead, sb, init } = await untilQuietMounts(start, (r) => r.ahead.includes(r.init))
  t.true(ahead.length >= 2, `warm helpers, each with an init made ahead (${ahead})`)
  t.true(ahead.includes(init), `the sandbox's init ${init} is one made ahead (${ahead})`)
  // A v2 child is born in its cgroup: the warm helper clones its init ahead itself. On v1 a zygote
  // waits inside the cgroup to clone a fresh one, should the one made ahead not fit.
  const { zygotes } = warmHelpers()
  if (host.cgroup.mode === 'v2') t.deepEqual(zygotes, [], 'no zygote on cgroup v2')
  else t.true(zygotes.length > 0, 'the other ready warm helper keeps its zygote on cgroup v1')
  const line = readFileSync(`/proc/${init}/cgroup`, 'utf8').trim().split('\n').find((l) => l.startsWith('0::') || l.split(':')[1].split(',').includes('pids'))!
  const [, controllers, path] = line.split(':')
  const dir = controllers === '' ? join('/sys/fs/cgroup', path) : join('/sys/fs/cgroup', 'pids', path)
  t.is(readFileSync(join(dir, 'pids.max'), 'utf8').trim(), '16', `the limit is on the warm helper's cgroup ${dir}`)
  let out = ''
  sb.stdout!.on('data', (d) => (out += d))
  sb.stdin!.end('\n')
  t.is((await sb.wait()).exitCode, 0)
  await ended(sb.stdout)
  t.is(out, 'done\n')
})

test.serial("a sandbox's cgroup joins no v1 freezer (its processes end with its init's pid namespace): a daemon it left ends with it, from a warm helper and cold", async (t) => {
  const options: SpawnOptions = { limits: { pids: 16 }, stdio: ['pipe', 'ignore', 'ignore'] }
  if (!holds(options)) return failsClosed(t, options)
  const ownLines = readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n')
  const freezerHere = ownLines.some((l) => l.split(':')[1].split(',').includes('freezer'))
  if (!freezerHere) t.log(`no v1 freezer hierarchy here (${host.cgroup.mode}): only the daemon's end and the cgroup's removal are asserted`)
  for (const way of ['warm', 'cold'] as const) {
    if (way === 'cold') configurePool({ size: 0 })
    else if (process.geteuid?.() === 0) {
      await waitUntil(() => poolReady(), 20_000, 50)
      await poolHeard()
    }
    try {
      const sb = await spawnIsolated('/bin/sh', ['-c', '(setsid sleep 100 &) ; read x; exit 3'], options)
      const helper = parentOf(parentOf(sb.pid))
      const warm = readFileSync(`/proc/${helper}/cmdline`, 'utf8').split('\0').includes('--warm')
      if (way === 'cold' || process.geteuid?.() === 0) t.is(warm, way === 'warm', `helper ${helper} started ${way}`)
      const ns = readlinkSync(`/proc/${sb.pid}/ns/pid`)
      const sleeper = () => pidsInNamespace(ns).find((p) => commOf(p) === 'sleep' && parentOf(p) === parentOf(sb.pid))
      t.true(await waitUntil(() => sleeper() !== undefined, 5000), 'the daemon runs, a child of the init (its parent ended)')
      const daemon = sleeper()!
      const lines = readFileSync(`/proc/${daemon}/cgroup`, 'utf8').trim().split('\n').map((l) => l.split(':'))
      const own = lines.filter(([, , path]) => /\/isolate-\d+-\d+-\d+$/.test(path))
      t.true(own.length > 0, `the daemon is in the sandbox's cgroup: ${JSON.stringify(lines)}`)
      if (freezerHere) t.false(own.some(([, c]) => c.split(',').includes('freezer')), `${way}: no freezer cgroup of its own (${JSON.stringify(own)})`)
      const dirs = own.map(([, c, path]) => (c === '' ? join('/sys/fs/cgroup', path) : join('/sys/fs/cgroup', c.split(',').find((x) => !x.startsWith('name='))!, path)))
      t.true(dirs.every((d) => existsSync(d)), `its cgroup: ${dirs}`)
      sb.stdin!.end('\n')
      const r = await sb.wait()
      t.is(r.exitCode, 3)
      t.false(pidAlive(daemon), `${way}: the daemon ${daemon} ended with the sandbox`)
      t.true(await waitUntil(() => dirs.every((d) => !existsSync(d)), 10_000), `${way}: its cgroup is removed`)
    } finally {
      if (way === 'cold') configurePool({})
    }
  }
})

test.serial('a warm helper whose init made ahead does not fit the spec (other namespaces) has a fresh one cloned inside its cgroup, limits on', async (t) => {
  const options: SpawnOptions = { limits: { pids: 16 }, network: 'host', stdio: ['pipe', 'ignore', 'ignore'] }
  if (!holds(options)) return failsClosed(t, options)
  if (process.geteuid?.() !== 0) {
    t.log('a rootless caller who may create cgroups has no pool: its starts are cold')
    t.is((await runIsolated('/bin/true', [], options)).exitCode, 0)
    return
  }
  t.true(await waitUntil(() => poolReady(), 20_000, 50), 'warm helpers with inits made ahead (in the default namespaces)')
  await poolHeard()
  const ahead = warmHelpers().inits
  const sb = await spawnIsolated('/bin/sh', ['-c', 'read x'], options)
  try {
    const init = parentOf(sb.pid)
    const helper = parentOf(init)
    t.true(readFileSync(`/proc/${helper}/cmdline`, 'utf8').split('\0').includes('--warm'), `helper ${helper} is a warm one`)
    t.false(ahead.includes(init), `the init ${init} is a fresh one, not one made ahead (${ahead})`)
    t.is(readlinkSync(`/proc/${sb.pid}/ns/net`), readlinkSync('/proc/self/ns/net'), "the sandbox has the host's network, as asked")
    const line = readFileSync(`/proc/${sb.pid}/cgroup`, 'utf8').trim().split('\n').find((l) => l.startsWith('0::') || l.split(':')[1].split(',').includes('pids'))!
    const [, controllers, path] = line.split(':')
    t.regex(path, new RegExp(`/isolate-${helper}-\\d+-\\d+$`), "in its warm helper's cgroup")
    const dir = controllers === '' ? join('/sys/fs/cgroup', path) : join('/sys/fs/cgroup', 'pids', path)
    t.is(readFileSync(join(dir, 'pids.max'), 'utf8').trim(), '16', 'its limit on')
  } finally {
    sb.stdin!.end('\n')
    t.is((await sb.wait()).exitCode, 0)
  }
})
