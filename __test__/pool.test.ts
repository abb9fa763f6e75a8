/**
 * The warm-helper pool (cgroup v1 hosts where this process may create cgroups): sandboxes taken
 * from it are as fresh as cold ones (a file, a process, a network setting or a cgroup of one is
 * never seen by the next; each warm helper serves one sandbox; an init made ahead sees the host's
 * mounts as they are when the sandbox starts, and runs at the default scheduling policy), and a
 * Node process that exits leaves no pooled helper, zygote, init or cgroup behind. Elsewhere the
 * pool must stay off.
 */
import test, { type ExecutionContext } from 'ava'
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { configurePool, IsolateError, probe, runIsolated, spawnIsolated } from '../index.js'
import { limitsHold } from '../lib/probe.js'
import { aheadOf, commonest, HelperPool, madeAtRelease, poolEligible, rootOf } from '../lib/pool.js'
import type { Addon } from '../lib/native.js'
import { normalize, type Spec } from '../lib/options.js'
import { ended, helperServersOf, mountsOf, openFds, parentOf, pidAlive, poolBuiltFor, poolHeard, poolReady, root, rootBuiltAhead, schedPolicy, startFromPool, untilQuietMounts, waitingForSpec, waitUntil, warmHelpersOf, zombieChildren } from './helpers.js'

const host = await probe()
/** Warm helpers with cgroups of their own: root where it may create cgroups. */
const eligible = host.cgroupHost?.canCreate === true && ['v1', 'hybrid', 'v2'].includes(host.cgroupHost.mode) && process.geteuid?.() === 0
/** A pool at all (lib/pool.ts helperPool): root, or a caller who may not create cgroups (its warm helpers have none). */
const pooled = poolEligible(process.geteuid?.() === 0, host.cgroupHost?.canCreate === true)
console.log(`pool.test: ${eligible ? `root, cgroups ${host.cgroupHost?.mode} that this process may create: the pool is on` : pooled ? `uid ${process.geteuid?.()}, may create cgroups: ${host.cgroupHost?.canCreate}: a pool of warm helpers without cgroups` : `no pool here (uid ${process.geteuid?.()}, cgroups ${host.cgroupHost?.mode}, may create: ${host.cgroupHost?.canCreate}): asserting every sandbox starts cold`}`)

// Without the pool (rootless on v1: no cgroups), or where these limits fail closed (cgroup v2 where
// the caller's cgroup is not the root), the sandboxes go without them.
const LIMITS = eligible && limitsHold(host, { memoryBytes: 1, pids: 1 }) ? { memoryBytes: 128 << 20, pids: 64 } : {}
/** Tests of what only a pool shows (its warm helpers' cgroups and zygotes, limits through them). */
const poolTest = eligible ? test.serial : test.skip
// A fixed size, so that these tests can count warm helpers (the default grows when it runs dry).
configurePool({ size: 2 })
if (!eligible) console.log('pool.test: the tests of warm helpers\' limits, zygotes and cgroups cannot run without a pool here; the cold path is asserted instead')

test('what is built ahead: the root of a spec leaves out the command, environment and limits; the commonest recent root when it came twice and in more than half the sandboxes with its namespaces, else those namespaces only', (t) => {
  const root = (file: string, options: Parameters<typeof normalize>[2]) => rootOf(normalize(file, [], options).spec)
  t.is(root('/bin/true', { limits: LIMITS }), root('/bin/sh', { env: { A: '1' }, cwd: '/tmp', hostname: 'h', seccomp: 'none' }))
  t.not(root('/bin/true', {}), root('/bin/true', { mounts: [{ type: 'tmpfs', target: '/tmp', sizeBytes: 1 << 20 }] }))
  // A bind or a tmpfs the init made ahead can mount at its release is not part of the root.
  const work = (dir: string) => root('/bin/true', { mounts: [{ type: 'bind', source: dir, target: '/work' }, { type: 'tmpfs', target: '/scratch' }] })
  t.is(work('/srv/job1'), root('/bin/true', {}))
  t.is(work('/srv/job1'), work('/srv/job2'))
  t.deepEqual(
    madeAtRelease(normalize('/bin/true', [], { mounts: [{ type: 'bind', source: '/a', target: '/data' }, { type: 'tmpfs', target: '/tmp' }, { type: 'bind', source: '/a', target: '/etc/x' }, { type: 'overlay', source: '/a', target: '/data/o' }, { type: 'tmpfs', target: '/w' }, { type: 'bind', source: '/a', target: '/w/in' }] }).spec),
    [false, false, false, false, true, true],
    "as the helper's plan::made_at_release: not at /tmp, under /etc, nor below or above a later mount made with the root",
  )
  // A spec the helper cannot read (options that only fail later) is grouped, never thrown on: the refill that groups it must not end the pool.
  const unreadable = { ...normalize('/bin/true', [], { mounts: [{ type: 'tmpfs', target: '/w' }] }).spec, limits: { memoryBytes: -1 } } as unknown as Spec
  t.notThrows(() => rootOf(unreadable))
  t.throws(() => madeAtRelease(unreadable), { code: 'InvalidArg' })
  t.not(root('/bin/true', {}), root('/bin/true', { network: 'host' }))
  t.not(root('/bin/true', {}), root('/bin/true', { user: { uid: 1000, gid: 1000 } }))
  t.is(commonest(['a', 'b', 'c']), undefined, 'none came twice')
  t.is(commonest(['a', 'b', 'a', 'c']), 'a')
  t.is(commonest(['a', 'b', 'b', 'a']), 'a', 'of equals, the one that came last')
  t.is(commonest(['b', 'a', 'b', 'a', 'a', 'c', 'b', 'a']), 'a')
  // Roots a-d; namespaces N (default) or H (network 'host').
  const recent = (list: string) => list.split(' ').map((x) => ({ root: x[0], namespaces: x[1] }))
  t.deepEqual(aheadOf(recent('aN aN aN bN')), { spec: 'a', build: true }, 'three in four: its root built ahead')
  t.deepEqual(aheadOf(recent('aN bN aN cN aN')), { spec: 'a', build: true }, 'three in five: a majority')
  t.deepEqual(aheadOf(recent('aN bN aN cN')), { spec: 'c', build: false }, 'two in four: no majority (a miss costs about what a hit saves); the namespaces only')
  t.deepEqual(aheadOf(recent('aH aH bN cN')), { spec: 'a', build: true }, 'its namespaces\' sandboxes all wanted it')
  t.deepEqual(aheadOf(recent('aH bH cH dN')), { spec: 'c', build: false }, 'no root came twice: the commonest namespaces, with the latest root that has them')
  t.is(aheadOf(recent('aN bH')), undefined, 'nothing came twice')
})

test('a warm helper that cannot get ready stops the pool for a while, not for good: it tries again after a backoff that doubles', async (t) => {
  // An addon whose warm helpers never start (a passing EAGAIN, or a host that cannot have them).
  let tries = 0
  const failing = { spawnWarmHelper: async () => { tries++; throw new Error('posix_spawn: EAGAIN') } } as unknown as Addon
  const backoff = 1000
  const pool = new HelperPool(failing, '/nonexistent', true, 1, backoff)
  const turn = () => new Promise((r) => setImmediate(r))
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
  pool.fill()
  await turn()
  t.is(tries, 1)
  pool.fill()
  await turn()
  t.is(tries, 1, 'no second try within the backoff')
  t.is(pool.take(normalize('/bin/true', [], {}).spec), undefined, 'meanwhile sandboxes start cold')
  await sleep(backoff + 100)
  pool.fill()
  await turn()
  t.is(tries, 2, 'tried again once the backoff is over')
  await sleep(backoff + 100)
  pool.fill()
  await turn()
  t.is(tries, 2, 'the second failure waits twice as long')
  await sleep(backoff)
  pool.fill()
  await turn()
  t.is(tries, 3)
})

test('a burst of starts larger than the pool makes no warm helper while it lasts (its starts go cold); the pool refills as it subsides', async (t) => {
  // An addon whose warm helpers are only counted (each stays starting: the promise never settles).
  let started = 0
  const counting = { spawnWarmHelper: () => { started++; return new Promise(() => {}) } } as unknown as Addon
  let underway = 0
  const pool = new HelperPool(counting, '/nonexistent', true, 2, 1000, () => underway)
  const turn = () => new Promise((r) => setImmediate(r))
  underway = 3
  pool.fill()
  await turn()
  t.is(started, 0, 'three starts under way, a pool of two: none made')
  underway = 2
  pool.fill()
  await turn()
  t.is(started, 2, 'as many under way as it holds: it fills')
  underway = 0
  pool.fill()
  await turn()
  t.is(started, 2, 'never more than its size')
})

/** The helper that supervises the sandbox whose command is `pid`, and whether it was a warm one. */
function helperOf(pid: number): { helper: number; warm: boolean; cgroup: string } {
  const init = parentOf(pid)
  const helper = parentOf(init)
  const warm = readFileSync(`/proc/${helper}/cmdline`, 'utf8').split('\0').includes('--warm')
  const cgroup = readFileSync(`/proc/${init}/cgroup`, 'utf8').split('\n').find((l) => l.split(':')[1]?.split(',').includes('memory'))?.split(':')[2] ?? ''
  return { helper, warm, cgroup }
}

/** Start a sandbox that reports its helper, then end it. */
async function oneSandbox(script: string, options = {}) {
  const sb = await spawnIsolated('/bin/sh', ['-c', `${script}; read x`], { limits: LIMITS, stdio: ['pipe', 'pipe', 'pipe'], ...options })
  const who = helperOf(sb.pid)
  let out = ''
  sb.stdout!.on('data', (d) => (out += d))
  sb.stderr!.resume()
  sb.stdin!.end('\n')
  const r = await sb.wait()
  await ended(sb.stdout)
  return { ...who, out, r }
}

test.serial('each sandbox gets a helper of its own; with a pool a warm one, never one used before', async (t) => {
  await runIsolated('/bin/true', [], { limits: LIMITS }) // the first fills the pool
  await new Promise((r) => setTimeout(r, 300))
  const seen: Awaited<ReturnType<typeof oneSandbox>>[] = []
  for (let i = 0; i < 6; i++) {
    seen.push(await oneSandbox('true'))
    // The pool refills at idle priority: under load (other test files) that takes a while.
    if (pooled) await waitUntil(() => poolReady(), 10_000)
    await poolHeard()
  }
  t.is(new Set(seen.map((s) => s.helper)).size, 6, 'six helpers for six sandboxes')
  if (eligible) t.is(new Set(seen.map((s) => s.cgroup)).size, 6, 'six cgroups for six sandboxes')
  for (const s of seen) t.is(s.r.exitCode, 0)
  if (pooled) t.true(seen.every((s) => s.warm), `with a pool, each came from it: ${JSON.stringify(seen.map((s) => s.warm))}`)
  else t.true(seen.every((s) => !s.warm), 'without a pool, each started cold')
  for (const s of seen) t.false(pidAlive(s.helper), 'a used helper is gone')
  // Removed by each helper right after it reported the end, before it exits.
  if (eligible) t.true(await waitUntil(() => seen.every((s) => !existsSync(join('/sys/fs/cgroup/memory', s.cgroup))), 3000), 'their cgroups are gone')
})

;(pooled ? test.serial : test.skip)('an init made ahead serves only a sandbox of the user its id maps were written for; another user gets a fresh init, mapped for it', async (t) => {
  const uid = process.geteuid!()
  // Each with a /tmp of its own size: no root comes twice, so the inits are made ahead in the
  // namespaces only, their maps written for the user of the last sandbox (root inside here).
  let size = 1
  const tmp = () => ({ mounts: [{ type: 'tmpfs' as const, target: '/tmp', sizeBytes: size++ << 20 }] })
  const look = async (options: { user?: { uid: number; gid: number } }) => {
    for (let i = 0; i < 2; i++) await runIsolated('/bin/true', [], { limits: LIMITS, ...tmp() })
    await waitUntil(() => poolReady(), 10_000)
    await poolHeard()
    const before = initsAheadOf(process.pid)
    const sb = await spawnIsolated('/bin/sh', ['-c', 'id -u; id -g; cat /proc/self/uid_map; read x'], { limits: LIMITS, stdio: ['pipe', 'pipe', 'inherit'], ...tmp(), ...options })
    const init = parentOf(sb.pid)
    let out = ''
    sb.stdout!.on('data', (d) => (out += d))
    sb.stdin!.end('\n')
    t.is((await sb.wait()).exitCode, 0)
    await ended(sb.stdout)
    const [u, g, map] = out.split('\n')
    return { took: before.includes(init), u, g, map: map.trim().split(/\s+/) }
  }
  // Other test files mount things meanwhile, and an init made ahead is rightly not used then.
  const plain = await untilQuietMounts(() => look({}), (r) => r.took)
  t.deepEqual([plain.u, plain.g], ['0', '0'])
  t.true(plain.took, 'the default user takes an init made ahead')
  const other = await look({ user: { uid: 1000, gid: 1000 } })
  t.deepEqual([other.u, other.g], ['1000', '1000'], 'the user asked for')
  if (uid === 0) {
    // Root maps a whole range, whatever the user inside: the init made ahead serves it too.
    t.deepEqual(other.map, ['0', plain.map[1], '65536'])
  } else {
    // One id only: the caller's, onto the user inside. The init made ahead mapped root inside.
    t.deepEqual(plain.map, ['0', String(uid), '1'])
    t.deepEqual(other.map, ['1000', String(uid), '1'])
    t.false(other.took, 'a fresh init, mapped for 1000')
  }
})

// Rootless, the init must be ranked before it enters its mapped ids (its root built ahead): its
// /proc files are root's after that, which its helper may not write.
;(pooled ? test.serial : test.skip)("an init made ahead, its root built, is first in the OOM killer's line as a cold one is", async (t) => {
  const adj = await untilQuietMounts(async () => {
    t.true(await poolBuiltFor({ limits: LIMITS }, '/proc/sys'), 'two inits made ahead, their roots built')
    return startFromPool('cat /proc/self/oom_score_adj', { limits: LIMITS })
  }, (r) => r.took)
  t.true(adj.took, 'it took an init made ahead')
  t.is(adj.code, 0)
  t.is(adj.out, '1000\n')
  for (const p of initsAheadOf(process.pid)) t.is(readFileSync(`/proc/${p}/oom_score_adj`, 'utf8'), '1000\n', `init ${p}, made ahead`)
})

poolTest('a spec too large for a warm helper starts cold; the warm helper taken for it goes, nothing is left', async (t) => {
  await runIsolated('/bin/true', [], { limits: LIMITS })
  const ready = () => warmHelpersOf(process.pid).helpers.filter((p) => ![5, -1].includes(schedPolicy(p)))
  t.true(await waitUntil(() => ready().length >= 2, 5000), 'the pool is full')
  await new Promise((r) => setTimeout(r, 50))
  const before = warmHelpersOf(process.pid).helpers
  // Three variables of 100 KiB: more than a warm helper's handoff takes (256 KiB), each below execve's limit.
  const env = { A: 'a'.repeat(100 << 10), B: 'b'.repeat(100 << 10), C: 'c'.repeat(100 << 10) }
  const r = await runIsolated('/bin/sh', ['-c', 'echo ${#A} ${#B} ${#C}'], { limits: LIMITS, env })
  t.is(r.exitCode, 0)
  t.is(r.stdout.trim(), `${100 << 10} ${100 << 10} ${100 << 10}`)
  // A warm helper taken and then not used was ended then: emptying the pool ends the others.
  configurePool({ size: 0 })
  try {
    t.true(await waitUntil(() => before.every((p) => !pidAlive(p)), 3000), 'no helper of the pool before it is left')
  } finally {
    configurePool({ size: 2 })
  }
  // Each is reaped once its socket closed, on a timer of this (possibly busy) event loop.
  await waitUntil(() => zombieChildren().length === 0, 3000)
  t.deepEqual(zombieChildren(), [])
})

test.serial('nothing one pooled sandbox leaves is seen by the next: files, processes, network settings', async (t) => {
  await runIsolated('/bin/true', [], { limits: LIMITS })
  await new Promise((r) => setTimeout(r, 300))
  const first = await oneSandbox('echo left > /tmp/mark; (sleep 1000 &); ip link set lo mtu 1280 && cat /sys/class/net/lo/mtu 2>/dev/null; ip link show lo | grep -o "mtu [0-9]*"', { capabilities: ['NET_ADMIN'] })
  t.regex(first.out, /mtu 1280/, 'the first sandbox did change its loopback')
  const next = await oneSandbox('cat /tmp/mark 2>&1; ps -eo args | grep -c "^sleep 1000"; ip link show lo | grep -o "mtu [0-9]*"')
  t.regex(next.out, /No such file or directory/, 'no file of the first')
  t.regex(next.out, /^0$/m, 'no process of the first')
  t.regex(next.out, /mtu 65536/, 'a loopback as fresh as a cold one')
  t.not(next.helper, first.helper)
  if (eligible) {
    t.true(first.warm && next.warm, 'both came from the pool')
    t.not(next.cgroup, first.cgroup)
  }
})

test.serial("the command's umask is the caller's when it asked, as a cold start's; the setup's own directories keep their modes", async (t) => {
  await runIsolated('/bin/true', [], { limits: LIMITS }) // the pool, if any, fills with today's umask
  await new Promise((r) => setTimeout(r, 300))
  const before = process.umask(0o077)
  try {
    const r = await runIsolated('/bin/sh', ['-c', 'umask; stat -c %a /made/for; touch /tmp/f; stat -c %a /tmp/f'], {
      limits: LIMITS,
      user: { uid: 1000, gid: 1000 },
      mounts: [{ type: 'tmpfs', target: '/made/for/it' }],
    })
    t.is(r.stdout, '0077\n755\n600\n', r.stderr)
  } finally {
    process.umask(before)
  }
  const back = await runIsolated('/bin/sh', ['-c', 'umask'], { limits: LIMITS })
  t.is(back.stdout, `${before.toString(8).padStart(4, '0')}\n`)
})

poolTest('usage and limits hold through a warm helper', async (t) => {
  await runIsolated('/bin/true', [], { limits: LIMITS })
  await new Promise((r) => setTimeout(r, 200))
  const busy = await runIsolated('/bin/sh', ['-c', 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done'], { limits: LIMITS })
  t.is(busy.exitCode, 0)
  t.true(busy.usage.cpuUserMs + busy.usage.cpuSystemMs > 20, `the sandbox's CPU is counted: ${JSON.stringify(busy.usage)}`)
  // The init, python and three children are the five: no helper or zygote is counted.
  const script = 'import os, time\nn = 0\nfor i in range(8):\n  try:\n    if os.fork() == 0:\n      time.sleep(5); os._exit(0)\n    n += 1\n  except OSError:\n    pass\nprint(n)'
  if (!limitsHold(host, { pids: 1 })) return void t.log('limits.pids fails closed here: the count of forks is not checked')
  const forks = await runIsolated('/usr/bin/python3', ['-c', script], { limits: { pids: 5 } })
  t.is(forks.stdout.trim(), '3', `three children, as a cold sandbox allows (${forks.stderr.trim()})`)
})

poolTest('configurePool({ size: 0 }) ends the pooled helpers and their cgroups; sandboxes start cold', async (t) => {
  await runIsolated('/bin/true', [], { limits: LIMITS })
  // The refill works at idle priority: beside other test files it may take a while.
  await waitUntil(() => zygotesOf(process.pid).length > 0 && initsAheadOf(process.pid).length > 0, 5000)
  const zygotes = zygotesOf(process.pid)
  t.true(zygotes.length > 0, 'the pool had warm helpers')
  const ahead = initsAheadOf(process.pid)
  t.true(ahead.length > 0, 'the pool had inits made ahead')
  const cgroups = zygotes.map(cgroupDirsOf).flat()
  configurePool({ size: 0 })
  try {
    t.true(await waitUntil(() => zygotes.every((z) => !pidAlive(z.zygote) && !pidAlive(z.helper)) && !ahead.some(pidAlive), 3000), 'pooled helpers, zygotes and inits gone')
    t.true(await waitUntil(() => cgroups.every((d) => !existsSync(d)), 3000), `their cgroups removed: ${cgroups.filter(existsSync)}`)
    const cold = await oneSandbox('true')
    t.false(cold.warm)
  } finally {
    configurePool({ size: 2 })
  }
})

poolTest("a size set on Object.prototype is not configurePool's: {} gives back the default pool", async (t) => {
  const proto = Object.prototype as Record<string, unknown>
  proto.size = 0
  try {
    configurePool({})
  } finally {
    delete proto.size
  }
  try {
    await runIsolated('/bin/true', [], { limits: LIMITS })
    await new Promise((r) => setTimeout(r, 300))
    t.true((await oneSandbox('true')).warm, 'a warm sandbox: the pool was not turned off')
  } finally {
    configurePool({ size: 2 })
  }
})

test.serial('resizing the pool while sandboxes start neither crashes Node nor leaks an fd or a helper', async (t) => {
  await runIsolated('/bin/true', [], { limits: LIMITS })
  await new Promise((r) => setTimeout(r, 300))
  const fdsBefore = openFds().length
  try {
    for (let i = 0; i < 30; i++) {
      configurePool({ size: i % 4 })
      const [a, b] = await Promise.all([runIsolated('/bin/echo', [String(i)], { limits: LIMITS }), runIsolated('/bin/true', [], { limits: LIMITS })])
      t.is(a.stdout, `${i}\n`)
      t.is(b.exitCode, 0)
    }
  } finally {
    configurePool({ size: 2 })
  }
  await new Promise((r) => setTimeout(r, 300))
  t.true(await waitUntil(() => zombieChildren().length === 0 && openFds().length <= fdsBefore + 2 * 2, 3000), `fds ${fdsBefore} -> ${openFds().length} (two warm helpers hold two each)`)
  t.true(zygotesOf(process.pid).length <= 2, 'no more warm helpers than the pool holds')
})

;(pooled ? test.serial : test.skip)('a Node process that dies leaves no pooled helper, zygote, init made ahead or cgroup behind', async (t) => {
  const child = spawn(process.execPath, ['--import=tsx', '-e', `
    const { runIsolated } = await import(${JSON.stringify(join(root, 'index.ts'))})
    await runIsolated('/bin/true', [], { limits: ${JSON.stringify(LIMITS)} })
    process.stdout.write('ready\\n')
    setInterval(() => {}, 1000)
  `], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] })
  // Whatever fails below, the child goes (its pool with it), or this file's process would wait for it.
  t.teardown(() => void child.kill('SIGKILL'))
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d) => String(d).includes('ready') && resolve())
    child.on('close', (code) => reject(new Error(`the child exited early with ${code}`)))
  })
  t.true(await waitUntil(() => initsAheadOf(child.pid!).length >= 2, 5000), 'its pool filled: warm helpers, each with an init made ahead')
  // One look at the processes: between two, a helper still filling the pool could clone an init
  // whose zygote the first look did not see yet.
  const { helpers, zygotes, inits: ahead } = warmHelpersOf(child.pid!)
  // A zygote (cgroup v1) and the init made ahead are both inside the warm helper's cgroup.
  if (eligible && host.cgroupHost?.mode !== 'v2') t.true(ahead.every((p) => zygotes.some((z) => z.helper === parentOf(p))), 'on cgroup v1 each warm helper with an init made ahead has its zygote')
  else t.deepEqual(zygotes, [], 'no zygote on cgroup v2 or without a cgroup')
  const cgroups = [...new Set(ahead.map((p) => cgroupDirsOf({ zygote: p })).flat())]
  if (eligible) t.true(cgroups.length >= 2, 'cgroups of their own')
  else t.deepEqual(cgroups, [], 'no cgroups where this process may not create them')
  const exited = new Promise((r) => child.once('exit', r))
  child.kill('SIGKILL')
  await exited
  t.true(await waitUntil(() => [...helpers, ...zygotes.map((z) => z.zygote), ...ahead].every((p) => !pidAlive(p)), 3000), 'helpers, zygotes and inits made ahead gone')
  t.true(await waitUntil(() => cgroups.every((d) => !existsSync(d)), 3000), `cgroups removed: ${cgroups.filter(existsSync)}`)
})

const initsAheadOf = (node: number) => warmHelpersOf(node).inits

// Root in a container often may not create cgroups (its cgroupfs is read-only): simulated with
// the cgroup mounts made read-only in a mount namespace of the child's own.
const asRoot = process.geteuid?.() === 0 ? test.serial : test.skip
if (process.geteuid?.() !== 0) console.log('pool.test: the test of warm helpers without a cgroup needs root (a pool is root\'s); skipped')
asRoot('where root may not create cgroups (a read-only cgroupfs, as in a container), warm helpers are made without one and serve the sandboxes that need none', async (t) => {
  const script = `
    const { readFileSync } = await import('node:fs')
    const { probe, runIsolated, spawnIsolated } = await import(${JSON.stringify(join(root, 'index.ts'))})
    const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n')
    const parentOf = (pid) => { const s = readFileSync('/proc/' + pid + '/stat', 'utf8'); return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]) }
    say({ canCreate: (await probe()).cgroupHost?.canCreate ?? null })
    await runIsolated('/bin/true', [])
    say({ started: true })
    await new Promise((r) => process.stdin.once('data', r))
    const runs = []
    for (let i = 0; i < 3; i++) {
      // It waits for its stdin: its helper is looked up while it runs.
      const sb = await spawnIsolated('/bin/sh', ['-c', 'ls -A /tmp; touch /tmp/left-' + i + '; read x'], { stdio: ['pipe', 'pipe', 'pipe'] })
      const helper = parentOf(parentOf(sb.pid))
      const warm = readFileSync('/proc/' + helper + '/cmdline', 'utf8').split('\\0').includes('--warm')
      sb.stderr.resume()
      sb.stdin.end('\\n')
      let out = ''
      sb.stdout.on('data', (d) => (out += d))
      const r = await sb.wait()
      await new Promise((res) => (sb.stdout.readableEnded ? res() : sb.stdout.once('end', res)))
      runs.push({ warm, helper, exitCode: r.exitCode, tmp: out })
      await new Promise((res) => setTimeout(res, 500))
    }
    const limited = await runIsolated('/bin/true', [], { limits: { memoryBytes: 64 << 20 } }).then(() => null, (e) => ({ step: e.step, message: e.message }))
    say({ runs, limited })
  `
  const remount = 'for m in $(awk \'$3 ~ /^cgroup/ {print $2}\' /proc/self/mounts); do mount -o remount,bind,ro "$m" || exit 3; done; exec "$0" "$@"'
  const child = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', remount, process.execPath, '--import=tsx', '--input-type=module', '-e', script], { cwd: root, stdio: ['pipe', 'pipe', 'inherit'] })
  t.teardown(() => void child.kill('SIGKILL'))
  const lines: Array<Record<string, unknown>> = []
  const next = (key: string) => new Promise<Record<string, unknown>>((resolve, reject) => {
    const look = () => {
      const l = lines.find((x) => key in x)
      if (l) resolve(l)
    }
    child.stdout!.on('data', (d) => {
      for (const line of String(d).split('\n').filter(Boolean)) lines.push(JSON.parse(line))
      look()
    })
    child.on('close', (code) => reject(new Error(`the child exited with ${code} before saying ${key}`)))
    look()
  })
  t.is((await next('canCreate')).canCreate, false, 'the child may not create cgroups')
  await next('started')
  t.true(await waitUntil(() => initsAheadOf(child.pid!).length >= 2, 10_000), `warm helpers, each with an init made ahead (${JSON.stringify(warmHelpersOf(child.pid!))})`)
  const pool = warmHelpersOf(child.pid!)
  const ahead = pool.inits
  t.deepEqual(pool.zygotes.flatMap(cgroupDirsOf), [], 'no sandbox cgroup: the zygotes stay in the caller\'s')
  child.stdin!.write('go\n')
  const { runs, limited } = (await next('runs')) as { runs: Array<{ warm: boolean; helper: number; exitCode: number; tmp: string }>; limited: { step: string; message: string } | null }
  t.true(runs.every((r) => r.warm), `each sandbox came from a warm helper: ${JSON.stringify(runs)}`)
  t.is(new Set(runs.map((r) => r.helper)).size, 3, 'a helper of its own each')
  for (const r of runs) {
    t.is(r.exitCode, 0)
    t.is(r.tmp, '', 'nothing the sandbox before left in /tmp')
  }
  t.is(limited?.step, 'create_cgroup', 'limits that need a cgroup still fail, naming the step')
  t.regex(limited?.message ?? "", /^sandbox setup failed at create_cgroup: limits\.memoryBytes needs a cgroup, and /)
  const servers = helperServersOf(child.pid!)
  t.is(servers.length, 1, 'one helper server forks its warm helpers')
  const exited = new Promise((r) => child.once('exit', r))
  child.stdin!.end()
  child.kill('SIGTERM')
  await exited
  t.true(await waitUntil(() => !pool.helpers.some(pidAlive) && !ahead.some(pidAlive) && !pool.zygotes.some((z) => pidAlive(z.zygote)) && !servers.some(pidAlive), 3000), 'its helper server, helpers, zygotes and inits made ahead end with it')
})

/** Scheduling policy (0 SCHED_OTHER, 5 SCHED_IDLE) and nice value, from a /proc/PID/stat text. */
function schedOf(stat: string): { policy: number; nice: number } {
  const f = stat.slice(stat.lastIndexOf(')') + 2).trim().split(' ')
  // Fields 19 (nice) and 41 (policy) of proc(5), counted from 1 with pid and comm as 1 and 2.
  return { nice: Number(f[19 - 3]), policy: Number(f[41 - 3]) }
}

/** A sandbox started while the pool is full; its init, and the inits made ahead before it. */
/**
 * Start default sandboxes until both warm helpers have an init made ahead. A helper whose init
 * could not build the root it was asked to build ahead (say, its bind source went away) has none
 * and is only used up by a sandbox.
 */
async function poolFull(): Promise<boolean> {
  for (let i = 0; i < 6; i++) {
    await runIsolated('/bin/true', [], { limits: LIMITS })
    if (await waitUntil(() => poolReady() && initsAheadOf(process.pid).length === 2, 2000)) {
      await poolHeard()
      return true
    }
  }
  return false
}

async function fromFullPool(script: string, options = {}) {
  await poolFull()
  const ahead = initsAheadOf(process.pid)
  const s = await oneSandbox(script, options)
  return { ...s, ahead }
}

poolTest('an init made ahead gives the sandbox its namespaces; a sandbox that wants others gets them', async (t) => {
  const def = await fromFullPool('echo $PPID; hostname; readlink /proc/self/ns/net')
  t.is(def.ahead.length, 2, 'two inits were ready')
  const [ppid, name, netns] = def.out.trim().split('\n')
  t.is(ppid, '1', 'the command is the child of the init, pid 1 inside')
  t.is(name, 'sandbox')
  t.not(netns, readlinkSync('/proc/self/ns/net'), 'its own network namespace')
  const other = await fromFullPool('hostname', { namespaces: { uts: false } })
  t.is(other.ahead.length, 2, 'two inits were ready again')
  t.true(other.warm, 'still a warm helper (its cgroup made ahead)')
  t.is(other.out.trim(), hostname(), 'the host\'s uts namespace, as asked: not the one made ahead')
})

poolTest('an init made ahead has emptied its bounding set (but for what a long-lived init forks with): a sandbox that keeps a capability gets a fresh init, and keeps it', async (t) => {
  const capBnd = (status: string) => /^CapBnd:\s*([0-9a-f]+)$/m.exec(status)?.[1]
  t.true(await poolBuiltFor({ limits: LIMITS }, '/proc/sys'), 'two inits made ahead')
  // CAP_KILL, CAP_SETGID, CAP_SETUID and CAP_SETPCAP (bits 5, 6, 7, 8) only.
  for (const p of initsAheadOf(process.pid)) t.is(capBnd(readFileSync(`/proc/${p}/status`, 'utf8')), '00000000000001e0', `init ${p}, made ahead: its bounding set`)
  const kept = await startFromPool('cat /proc/self/status', { limits: LIMITS, capabilities: ['NET_BIND_SERVICE'] })
  t.false(kept.took, 'a fresh init')
  t.is(capBnd(kept.out), '0000000000000400', 'CAP_NET_BIND_SERVICE, and only it, in its bounding set')
  const plain = await untilQuietMounts(async () => {
    await poolBuiltFor({ limits: LIMITS }, '/proc/sys')
    return startFromPool('cat /proc/self/status', { limits: LIMITS })
  }, (r) => r.took)
  t.true(plain.took, 'the default options take an init made ahead')
  t.is(capBnd(plain.out), '0000000000000000')
})

poolTest('the init a sandbox gets is one made ahead, or fresh when its options differ (seen from the host)', async (t) => {
  for (const [options, ahead] of [[{}, true], [{ network: 'host' }, false], [{ namespaces: { ipc: false } }, false]] as const) {
    const once = async () => {
      await poolFull()
      const before = new Set(initsAheadOf(process.pid))
      const sb = await spawnIsolated('/bin/sh', ['-c', 'read x'], { limits: LIMITS, stdio: ['pipe', 'ignore', 'ignore'], ...options })
      const init = parentOf(sb.pid)
      sb.stdin!.end('\n')
      return { took: before.has(init), init, code: (await sb.wait()).exitCode, ready: before.size }
    }
    const r = ahead ? await untilQuietMounts(once, (r) => r.took) : await once()
    t.is(r.ready, 2, 'two inits were made ahead')
    t.is(r.code, 0)
    t.is(r.took, ahead, `${JSON.stringify(options)}: init ${r.init} ${ahead ? 'is' : 'is not'} one made ahead`)
  }
})

;(pooled ? test.serial : test.skip)('a spec near the largest a warm helper takes (about 205 KiB) starts from an init made ahead, as a small one does', async (t) => {
  // Five variables of 41 KiB: under the handoff's 256 KiB, over the ~208 KiB a socket's default
  // send buffer takes in one message (the birth handed to the init made ahead failed with EMSGSIZE).
  const env: Record<string, string> = { PATH: '/usr/bin:/bin' }
  for (const k of ['A', 'B', 'C', 'D', 'E']) env[k] = k.repeat(41 << 10)
  const once = async () => {
    await poolFull()
    const before = new Set(initsAheadOf(process.pid))
    const sb = await spawnIsolated('/bin/sh', ['-c', 'read x; echo ${#A} ${#E}'], { limits: LIMITS, env, stdio: ['pipe', 'pipe', 'ignore'] })
    const init = parentOf(sb.pid)
    let out = ''
    sb.stdout!.on('data', (d) => (out += d))
    sb.stdin!.end('\n')
    const code = (await sb.wait()).exitCode
    await ended(sb.stdout)
    return { took: before.has(init), code, out }
  }
  const r = await untilQuietMounts(once, (r) => r.took)
  t.true(r.took, 'its init is one made ahead')
  t.is(r.code, 0)
  t.is(r.out, `${41 << 10} ${41 << 10}\n`)
})

poolTest('work done ahead runs at idle priority; a ready helper, zygote and init wait at the default policy (the helper behind its caller), as every process of the sandbox runs', async (t) => {
  t.true(await poolFull())
  const ready = new Set(warmHelpersOf(process.pid).helpers)
  // Every CPU busy at the default policy: a helper at idle priority then takes long to get
  // ready, long enough to be watched at it. At nice 19, behind this loop, which watches it.
  const spinners = Array.from({ length: availableParallelism() }, () => spawn('nice', ['-n', '19', '/bin/sh', '-c', 'while :; do :; done'], { stdio: 'ignore' }))
  const stopSpinners = () => spinners.forEach((s) => s.kill('SIGKILL'))
  // Where scheduling autogroups apply, the helpers are in the helper server's (its session's),
  // not in this process's with the spinners: idle priority orders a helper only within that
  // group, which otherwise has a whole share beside the spinners' and gets the work done before
  // this loop looks. At the group's lowest weight, the spinners hold it back too.
  const groups = helperServersOf(process.pid).filter((s) => existsSync(`/proc/${s}/autogroup`))
  const groupNice = groups.map((s) => readFileSync(`/proc/${s}/autogroup`, 'utf8').trim().split(' nice ')[1])
  groups.forEach((s) => writeFileSync(`/proc/${s}/autogroup`, '19'))
  let size = 3
  configurePool({ size })
  try {
    // It puts itself at idle priority first thing in its work ahead.
    let making: number | undefined
    const policies = new Set<number>()
    for (const end = Date.now() + 20_000; Date.now() < end; ) {
      making ??= warmHelpersOf(process.pid).helpers.find((h) => !ready.has(h))
      if (making === undefined) continue
      let policy: number
      try {
        policy = schedOf(readFileSync(`/proc/${making}/stat`, 'utf8')).policy
      } catch {
        // Gone before it was ready (its init made ahead no longer fits a host mount table that
        // other test files change): the pool makes another, watched the same way.
        ready.add(making)
        making = undefined
        continue
      }
      policies.add(policy)
      if (policies.has(5) && policy === 0) break
      if (policy === 0 && !policies.has(5) && waitingForSpec(making) && size < 6) {
        // Ready before this loop first looked at it (in the whole suite the other test files'
        // work can hold this process back that long; CI twice saw one only at SCHED_OTHER): one
        // more is made, watched from its start.
        ready.add(making)
        making = undefined
        policies.clear()
        configurePool({ size: ++size })
      }
    }
    stopSpinners()
    t.truthy(making, 'another warm helper was seen being made')
    t.true(policies.has(5), `helper ${making} was seen at SCHED_IDLE while it made its sandbox ahead (seen: ${[...policies]})`)
    t.true(await waitUntil(() => initsAheadOf(process.pid).length === size, 5000), `${size} inits made ahead`)
    // The helper behind its caller (priority.test.ts), what becomes the sandbox at the caller's nice.
    for (const z of zygotesOf(process.pid)) t.deepEqual(schedOf(readFileSync(`/proc/${z.helper}/stat`, 'utf8')), { policy: 0, nice: 19 }, `warm helper ${z.helper} waits at SCHED_OTHER, nice 19`)
    for (const pid of [...zygotesOf(process.pid).map((z) => z.zygote), ...initsAheadOf(process.pid)]) {
      t.deepEqual(schedOf(readFileSync(`/proc/${pid}/stat`, 'utf8')), { policy: 0, nice: 0 }, `pooled process ${pid} waits at SCHED_OTHER, nice 0`)
    }
  } finally {
    stopSpinners()
    groups.forEach((s, i) => writeFileSync(`/proc/${s}/autogroup`, groupNice[i]))
    configurePool({ size: 2 })
  }
  const r = await runIsolated('/bin/sh', ['-c', 'cat /proc/1/stat; echo; cat /proc/self/stat'], { limits: LIMITS })
  const [initStat, selfStat] = r.stdout.split('\n').filter(Boolean)
  for (const [who, stat] of [['init', initStat], ['command', selfStat]]) {
    t.deepEqual(schedOf(stat), { policy: 0, nice: 0 }, `the sandbox's ${who} runs at SCHED_OTHER, nice 0`)
  }
})

poolTest('the default pool grows when sandboxes find it empty, up to 4; a size given stays', async (t) => {
  configurePool({})
  try {
    t.true(await poolFull(), 'two warm helpers, each with an init made ahead')
    // More at once than the pool holds: the ones that find it empty start cold, and it grows.
    await Promise.all(Array.from({ length: 6 }, () => runIsolated('/bin/true', [], { limits: LIMITS })))
    t.true(await waitUntil(() => initsAheadOf(process.pid).length === 4, 10_000), `four inits made ahead (${initsAheadOf(process.pid)})`)
    await Promise.all(Array.from({ length: 8 }, () => runIsolated('/bin/true', [], { limits: LIMITS })))
    await waitUntil(() => initsAheadOf(process.pid).length >= 4, 10_000)
    await new Promise((r) => setTimeout(r, 300))
    t.is(initsAheadOf(process.pid).length, 4, 'never more than four')
  } finally {
    configurePool({ size: 2 })
  }
  t.true(await waitUntil(() => initsAheadOf(process.pid).length === 2, 5000), 'a size given: two again')
  await Promise.all(Array.from({ length: 6 }, () => runIsolated('/bin/true', [], { limits: LIMITS })))
  await new Promise((r) => setTimeout(r, 500))
  t.true(await waitUntil(() => initsAheadOf(process.pid).length === 2, 5000), 'and it stays two')
})

poolTest('the pool refills after a start, while a long sandbox still runs', async (t) => {
  t.true(await poolFull(), 'two inits made ahead')
  const sb = await spawnIsolated('/bin/sh', ['-c', 'read x'], { limits: LIMITS, stdio: ['pipe', 'ignore', 'ignore'] })
  try {
    t.true(helperOf(sb.pid).warm, 'the sandbox took a warm helper')
    t.true(await waitUntil(() => initsAheadOf(process.pid).length === 2, 3000), 'two inits made ahead again, the sandbox still running')
    t.true(pidAlive(sb.pid))
  } finally {
    sb.stdin!.end('\n')
    await sb.wait()
  }
})

/** Start `script` in a sandbox of `options` that waits on stdin; whether its init was one of the inits made ahead, and its output. */
poolTest("an init made ahead has the namespaces of the commonest recent root (network 'host', no user namespace); a sandbox wanting others does not get it", async (t) => {
  const cases = [
    { options: { limits: LIMITS, network: 'host' as const }, ns: 'net', what: "the host's network namespace" },
    { options: { limits: LIMITS, namespaces: { user: false } }, ns: 'user', what: "the host's user namespace" },
  ]
  for (const { options, ns, what } of cases) {
    const hostNs = readlinkSync(`/proc/self/ns/${ns}`)
    const r = await untilQuietMounts(async () => {
      t.true(await poolBuiltFor(options, '/proc/sys'), `${JSON.stringify(options)}: both inits made ahead have that root built`)
      return startFromPool(`readlink /proc/self/ns/${ns}`, options)
    }, (r) => r.took)
    t.true(r.took, `${JSON.stringify(options)}: the sandbox got an init made ahead`)
    t.is(r.out.trim(), hostNs, `${what}, as asked`)
    // Only the inits made ahead in that namespace: a refill under load may still hold an older
    // guess (the default namespaces), which the default options may take.
    const inHostNs = () => initsAheadOf(process.pid).filter((p) => {
      try {
        return readlinkSync(`/proc/${p}/ns/${ns}`) === hostNs
      } catch {
        return false
      }
    })
    const own = await startFromPool(`readlink /proc/self/ns/${ns}`, { limits: LIMITS }, inHostNs)
    t.false(own.took, `the default options do not get an init made ahead in ${what}`)
    t.not(own.out.trim(), hostNs)
  }
})

poolTest("sandboxes whose roots all differ get inits made ahead in their namespaces, without a root: each builds its own", async (t) => {
  const hostNet = readlinkSync('/proc/self/ns/net')
  let n = 0
  // A /tmp of another size each: a root of its own (a mount at a new path each would be made at
  // the release of one root built ahead).
  const options = () => ({ limits: LIMITS, network: 'host' as const, mounts: [{ type: 'tmpfs' as const, target: '/tmp', sizeBytes: (1 << 20) + 4096 * ++n }] })
  const r = await untilQuietMounts(async () => {
    // Eight: the pool's whole memory of recent roots (earlier tests' are forgotten). A refill
    // made before that (slow under load) may still hold an older guess: the next try uses it up.
    for (let i = 0; i < 8; i++) await runIsolated('/bin/true', [], options())
    const ready = await waitUntil(() => {
      const inits = initsAheadOf(process.pid)
      return inits.length === 2 && !inits.some((p) => rootBuiltAhead(p, '/proc/sys'))
    }, 5000)
    const o = options()
    return { ready, ...(await startFromPool(`readlink /proc/self/ns/net; grep ' /tmp ' /proc/self/mountinfo | grep -o 'size=[0-9]*k'`, o)), kib: o.mounts[0].sizeBytes / 1024 }
  }, (r) => r.ready && r.took)
  t.true(r.ready, 'two inits made ahead, no root built: no root came twice')
  t.true(r.took, 'the sandbox got an init made ahead')
  t.is(r.out, `${hostNet}\nsize=${r.kib}k\n`, "the host's network namespace, and its own /tmp")
})

poolTest('an init made ahead has the root of the last sandboxes built; a sandbox with that root takes it, one with other mounts gets a fresh init', async (t) => {
  const check = 'hostname; touch /tmp/x && echo tmp-writable; touch /usr/x 2>/dev/null || echo usr-readonly; cat /etc/shadow >/dev/null 2>&1 || echo shadow-unreadable'
  const same = await untilQuietMounts(async () => {
    t.true(await poolBuiltFor({ limits: LIMITS }, '/proc/sys'), 'both inits made ahead have the default root built')
    const r = await startFromPool(check, { limits: LIMITS })
    // Looked at at once: an init made ahead ends when the host unmounts something (other test
    // files do), and then this try does not count.
    return { ...r, otherBuilt: initsAheadOf(process.pid).some((p) => rootBuiltAhead(p, '/proc/sys')) }
  }, (r) => r.took && r.otherBuilt)
  t.true(same.took, 'the same options took an init made ahead, its root built')
  t.is(same.out, 'sandbox\ntmp-writable\nusr-readonly\nshadow-unreadable\n')
  t.is(same.code, 0)
  t.true(same.otherBuilt, 'the other init made ahead still has its root built')
  const other = await startFromPool('grep " /tmp " /proc/self/mountinfo | grep -c size=1024k', { limits: LIMITS, mounts: [{ type: 'tmpfs', target: '/tmp', sizeBytes: 1 << 20 }] })
  t.false(other.took, 'another /tmp: not an init whose root was built for the default')
  t.is(other.out, '1\n')
})

poolTest("a sandbox has a session keyring of its own, from a root built ahead as from a cold start: never its caller's", async (t) => {
  // The fixture runs in a session keyring its launcher joined (KEYCTL_JOIN_SESSION_KEYRING):
  // a sandbox that kept its caller's would report that keyring's serial.
  const joinKeyring = `import ctypes, os, sys; ctypes.CDLL(None).syscall(250, 1, b'isolate-test-session'); os.execv(sys.argv[1], sys.argv[1:])`
  const child = spawn('python3', ['-c', joinKeyring, process.execPath, '--import=tsx', join(root, '__test__', 'fixtures', 'session-keyring.ts')], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => void child.kill('SIGKILL'))
  let out = ''
  child.stdout!.on('data', (d) => (out += d))
  const code = await new Promise((resolve) => child.on('exit', resolve))
  t.is(code, 0, out)
  const r = JSON.parse(out.trim().split('\n').pop()!) as { caller: string; built: boolean; pooled: { took: boolean; out: string }; cold: string }
  t.regex(r.caller, /^[1-9]\d*$/, `the caller's session keyring: ${r.caller}`)
  t.true(r.built, 'both inits made ahead have their root built')
  t.true(r.pooled.took, 'the sandbox got an init whose root was built ahead')
  t.regex(r.pooled.out, /^[1-9]\d*$/)
  t.not(r.pooled.out, r.caller, "from a root built ahead: not the caller's session keyring")
  t.regex(r.cold, /^[1-9]\d*$/)
  t.not(r.cold, r.caller, "cold: not the caller's session keyring")
})

poolTest('nothing a sandbox leaves is seen by the next one from a root built ahead: files in /tmp and /dev/shm, processes', async (t) => {
  const r = await untilQuietMounts(async () => {
    const built = await poolBuiltFor({ limits: LIMITS }, '/proc/sys')
    const first = await startFromPool('echo left > /tmp/mark; echo left > /dev/shm/mark; (sleep 1000 &)', { limits: LIMITS })
    const next = await startFromPool('cat /tmp/mark /dev/shm/mark 2>&1; ps -eo args | grep -c "^sleep 1000"', { limits: LIMITS })
    return { built, first, next }
  }, (r) => r.built && r.first.took && r.next.took)
  t.true(r.built && r.first.took && r.next.took, 'both took an init made ahead, its root built')
  t.regex(r.next.out, /\/tmp\/mark: No such file/)
  t.regex(r.next.out, /\/dev\/shm\/mark: No such file/)
  t.regex(r.next.out, /^0$/m, 'no process of the first')
})

/**
 * A directory holding `file` (with `text`), and the options that bind it at /tmp: a bind the
 * root is built with (not one made at the release, see plan::made_at_release), so its root built
 * ahead holds the directory. Removed however the test ends.
 */
function bindSource(t: ExecutionContext, text: string) {
  const dir = mkdtempSync(join(tmpdir(), 'isolate-pool-src-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  chmodSync(dir, 0o755)
  const src = join(dir, 'src')
  mkdirSync(src)
  writeFileSync(join(src, 'file'), text)
  return { src, options: { limits: LIMITS, mounts: [{ type: 'bind' as const, source: src, target: '/tmp' }] } }
}

poolTest('a root built ahead is not used once a bind source was replaced: the sandbox sees the new one', async (t) => {
  const { src, options } = bindSource(t, 'old\n')
  const first = await untilQuietMounts(async () => {
    t.true(await poolBuiltFor(options, '/tmp', true), 'both inits made ahead have the directory bound at /tmp')
    return startFromPool('cat /tmp/file', options)
  }, (r) => r.took)
  t.true(first.took)
  t.is(first.out, 'old\n')
  t.true(await waitUntil(() => initsAheadOf(process.pid).length === 2 && initsAheadOf(process.pid).every((p) => rootBuiltAhead(p, '/tmp', true)), 3000), 'two inits ahead with the directory bound again')
  // Replaced, not changed: the bound directory the inits ahead hold is gone from the host.
  rmSync(src, { recursive: true })
  mkdirSync(src)
  writeFileSync(join(src, 'file'), 'new\n')
  const after = await startFromPool('cat /tmp/file', options)
  t.false(after.took, 'no init whose /tmp is the replaced directory')
  t.is(after.out, 'new\n')
})

poolTest('a root built ahead stays in use when a bind source only changed its metadata (where the filesystem keeps birth times)', async (t) => {
  const { src, options } = bindSource(t, 'same\n')
  // Without a birth time the change time stands in, and then any metadata change costs the root.
  const births = spawnSync('stat', ['-c', '%W', src], { encoding: 'utf8' }).stdout.trim() !== '0'
  t.log(`${src}: ${births ? 'has a birth time' : 'no birth time on this filesystem: a metadata change must cost the root built ahead'}`)
  const r = await untilQuietMounts(async () => {
    t.true(await poolBuiltFor(options, '/tmp', true), 'both inits made ahead have the directory bound at /tmp')
    // Its change time moves (an entry added, the same mode set again), its birth time does not.
    writeFileSync(join(src, 'other'), 'x')
    chmodSync(src, 0o755)
    return startFromPool('cat /tmp/file; ls /tmp | wc -l', options)
  }, (r) => r.took === births)
  t.is(r.took, births, births ? 'the root built ahead on the same directory served' : 'the root built ahead was not used')
  t.is(r.out, 'same\n2\n', 'the sandbox sees the directory as it is now')
})

poolTest("sandboxes that each bind their own directory take the root built ahead; each sees only its own, mounted at its release as a cold start mounts it", async (t) => {
  // The jobs' directories on a tmpfs of the host's that is shared: a bind of it that is not made
  // private would carry mounts between the host and the sandbox.
  const { sub: base } = mountPlace(t)
  mountTmpfs(t, base)
  t.is(spawnSync('mount', ['--make-shared', base]).status, 0)
  chmodSync(base, 0o755)
  let n = 0
  const job = (readonly: boolean) => {
    const dir = join(base, `job${++n}`)
    mkdirSync(join(dir, 'scratch'), { recursive: true })
    chmodSync(dir, 0o777)
    writeFileSync(join(dir, 'in.txt'), `job ${n}\n`)
    writeFileSync(join(base, `in${n}.txt`), `file of job ${n}\n`)
    const mounts = [
      { type: 'bind' as const, source: dir, target: '/work', readonly },
      { type: 'bind' as const, source: join(base, `in${n}.txt`), target: '/input.txt' },
      { type: 'tmpfs' as const, target: '/work/scratch', sizeBytes: 1 << 20 },
    ]
    return { dir, n, options: { limits: LIMITS, mounts } }
  }
  // What the sandbox sees of its mounts and of the rest of its root.
  const look = [
    'cat /work/in.txt /input.txt',
    'ls /work | tr "\\n" " "; echo',
    '(echo out > /work/out.txt) 2>/dev/null && echo work-writable || echo work-readonly',
    'awk \'$5 == "/work" || $5 == "/input.txt" || $5 == "/work/scratch" { print $5, $6 }\' /proc/self/mountinfo | sort',
    'grep " /work/scratch " /proc/self/mountinfo | grep -c "size=1024k"',
    'touch /x 2>/dev/null || echo root-readonly',
    'cat /etc/shadow >/dev/null 2>&1 || echo shadow-unreadable',
  ].join('; ')
  const r = await untilQuietMounts(async () => {
    // The root every one of them shares is built ahead, without /work or /input.txt.
    const built = await poolBuiltFor(job(true).options, '/proc/sys')
    const bare = initsAheadOf(process.pid).every((p) => !mountsOf(p).some((m) => ['/work', '/input.txt'].includes(m.at)))
    const ro = job(true)
    const roRun = await startFromPool(look, ro.options)
    const rw = job(false)
    const rwRun = await startFromPool(look, rw.options)
    return { built, bare, ro, roRun, rw, rwRun }
  }, (r) => r.built && r.roRun.took && r.rwRun.took)
  t.true(r.built && r.bare, 'the inits made ahead have the shared root built, without the per-job mounts')
  t.true(r.roRun.took && r.rwRun.took, 'both took an init whose root was built ahead')
  const mounts = (o: string) => `/input.txt ro,nosuid,nodev,relatime\n/work ${o},nosuid,nodev,relatime\n/work/scratch rw,nosuid,nodev,relatime\n`
  t.is(r.roRun.out, `job ${r.ro.n}\nfile of job ${r.ro.n}\nin.txt scratch \nwork-readonly\n${mounts('ro')}1\nroot-readonly\nshadow-unreadable\n`)
  t.is(r.rwRun.out, `job ${r.rw.n}\nfile of job ${r.rw.n}\nin.txt scratch \nwork-writable\n${mounts('rw')}1\nroot-readonly\nshadow-unreadable\n`)
  t.is(readFileSync(join(r.rw.dir, 'out.txt'), 'utf8'), 'out\n', 'a writable bind writes through to the host directory')
  t.false(existsSync(join(r.ro.dir, 'out.txt')))
  // The bind is private: the tmpfs the sandbox's setup mounted inside it did not reach the host.
  t.false(readFileSync('/proc/self/mountinfo', 'utf8').includes(join(r.rw.dir, 'scratch')), 'no tmpfs of a sandbox below a job directory on the host')
  // A missing source fails as a cold start's does, and nothing of the init made ahead is left.
  const missing = join(base, 'missing')
  const e = await t.throwsAsync(runIsolated('/bin/true', [], { limits: LIMITS, mounts: [{ type: 'bind', source: missing, target: '/work' }] }), { instanceOf: IsolateError })
  t.like(e, { step: 'bind_mount', path: missing, errno: 'ENOENT' })
  t.regex(e?.hint ?? '', /mounts\[0\]\.source/)
  // A file bound onto a directory of the root built ahead: refused as a cold start's bind is,
  // naming the source (the kernel's move_mount at the release said only EINVAL, of 'usr/lib').
  const file = join(base, 'in1.txt')
  const onDir = await untilQuietMounts(async () => {
    const built = await poolBuiltFor(job(true).options, '/proc/sys')
    const error = await runIsolated('/bin/true', [], { limits: LIMITS, mounts: [{ type: 'bind', source: file, target: '/usr/lib' }] }).then(() => undefined, (e: unknown) => e)
    return { built, error }
  }, (r) => r.built)
  t.true(onDir.built)
  t.like(onDir.error, { step: 'bind_mount', path: file, errno: 'ENOTDIR', option: 'mounts[0].source' })
  // A source whose tree the helper cannot open (an unbindable mount; a kernel without open_tree):
  // a fresh init builds the whole root the cold way, in its private copy of the host's mounts.
  const unbindable = join(base, 'unbindable')
  mkdirSync(unbindable)
  mountTmpfs(t, unbindable)
  t.is(spawnSync('mount', ['--make-unbindable', unbindable]).status, 0)
  writeFileSync(join(unbindable, 'in.txt'), 'unbindable\n')
  const u = await untilQuietMounts(async () => {
    // Inits made ahead after that mount (those from before it are not used).
    const built = await poolBuiltFor(job(true).options, '/proc/sys')
    return { built, ...(await startFromPool('cat /work/in.txt', { limits: LIMITS, mounts: [{ type: 'bind', source: unbindable, target: '/work' }] })) }
  }, (r) => r.built)
  t.true(u.built)
  t.false(u.took, 'no tree of an unbindable mount: a fresh init')
  t.is(u.out, 'unbindable\n')
})

/**
 * Run fixtures/secret-replaced.ts in a mount namespace of its own (unshare(1), for this test
 * only), whose /etc/security is a tmpfs: /etc/security/opasswd, one of the host secrets every
 * sandbox masks, is then the fixture's to create and replace, and the host's /etc is untouched.
 */
async function secretFixture(t: ExecutionContext, mode: 'replace' | 'appear') {
  const child = spawn('unshare', ['--mount', '--propagation', 'private', '--', '/bin/sh', '-c', 'mount -t tmpfs -o mode=755 tmpfs /etc/security && exec "$0" "$@"', process.execPath, '--import=tsx', join(root, '__test__', 'fixtures', 'secret-replaced.ts'), mode], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => void child.kill('SIGKILL'))
  let out = ''
  child.stdout!.on('data', (d) => (out += d))
  const code = await new Promise((resolve) => child.on('exit', resolve))
  t.is(code, 0, out)
  return JSON.parse(out.trim().split('\n').pop()!) as { built: boolean; before: { took: boolean; out: string }; after: { took: boolean; out: string } }
}

poolTest('a root built ahead is not used once a masked secret was replaced: the new file is masked too', async (t) => {
  const r = await secretFixture(t, 'replace')
  t.true(r.built, 'both inits made ahead had the mask over /etc/security/opasswd')
  t.true(r.before.took, 'before the replacement, an init whose root was built ahead served')
  t.is(r.before.out, 'masked\n', 'the secret is masked in it')
  t.false(r.after.took, 'after the replacement, no init whose mask covers the file that was replaced')
  t.is(r.after.out, 'masked\n', 'the new secret is masked')
})

poolTest('a root built ahead is not used once a secret that was missing appeared: the new file is masked', async (t) => {
  // The host facts a root was planned from are not read again while every path they came from
  // names what it did: a path that named nothing and now names a file is such a change.
  const r = await secretFixture(t, 'appear')
  t.true(r.built, 'both inits made ahead had their roots built')
  t.true(r.before.took, 'before the file appeared, an init whose root was built ahead served')
  t.is(r.before.out, 'absent\nmasked\n')
  t.false(r.after.took, 'after it appeared, no init whose root was planned without it')
  t.is(r.after.out, 'masked\n', 'the new secret is masked')
})

/** A directory (0755) with a subdirectory to mount on; the mount and the directory go however the test ends. */
function mountPlace(t: ExecutionContext): { dir: string; sub: string } {
  const dir = mkdtempSync(join(tmpdir(), 'isolate-pool-mnt-'))
  chmodSync(dir, 0o755)
  const sub = join(dir, 'sub')
  mkdirSync(sub)
  t.teardown(() => {
    spawnSync('umount', ['-R', sub])
    rmSync(dir, { recursive: true, force: true })
  })
  return { dir, sub }
}

function mountTmpfs(t: ExecutionContext, at: string) {
  const r = spawnSync('mount', ['-t', 'tmpfs', 'tmpfs', at])
  t.is(r.status, 0, String(r.stderr))
}

function unmount(t: ExecutionContext, at: string) {
  const r = spawnSync('umount', [at])
  t.is(r.status, 0, String(r.stderr))
}

poolTest('an init made ahead is not used once the host mounted something; the sandbox sees what the host mounted', async (t) => {
  const { dir, sub } = mountPlace(t)
  t.true(await poolFull(), 'inits made ahead, before the mount')
  const before = initsAheadOf(process.pid)
  mountTmpfs(t, sub)
  writeFileSync(join(sub, 'file'), 'on the new tmpfs\n')
  // It waits for its stdin to close: its init is looked up while it runs.
  const sb = await spawnIsolated('/bin/sh', ['-c', 'cat /data/sub/file; grep -c " /data/sub " /proc/self/mountinfo; read x'], {
    limits: LIMITS,
    mounts: [{ type: 'bind', source: dir, target: '/data' }],
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  const init = parentOf(sb.pid)
  sb.stdin!.end()
  const r = { stdout: '', stderr: '' }
  sb.stdout!.on('data', (d) => (r.stdout += d))
  sb.stderr!.on('data', (d) => (r.stderr += d))
  await Promise.all([sb.wait(), ended(sb.stdout), ended(sb.stderr)])
  t.false(before.includes(init), `init ${init} is not one made ahead (${before}), whose copy of the mount table lacks the new mount`)
  t.is(r.stdout, 'on the new tmpfs\n1\n', r.stderr)
})

poolTest('an init made ahead is not used when the host mounted something as the spec arrived (both news in one wakeup of its helper)', async (t) => {
  const { dir, sub } = mountPlace(t)
  t.true(await poolFull(), 'inits made ahead, before the mount')
  const { helpers, inits: before } = warmHelpersOf(process.pid)
  // Stopped (our own processes), the warm helpers find the mount's news and the spec together.
  const resume = () => helpers.forEach((h) => pidAlive(h) && process.kill(h, 'SIGCONT'))
  t.teardown(resume)
  helpers.forEach((h) => process.kill(h, 'SIGSTOP'))
  mountTmpfs(t, sub)
  writeFileSync(join(sub, 'file'), 'on the new tmpfs\n')
  const starting = spawnIsolated('/bin/sh', ['-c', 'cat /data/sub/file; read x'], { limits: LIMITS, mounts: [{ type: 'bind', source: dir, target: '/data' }], stdio: ['pipe', 'pipe', 'inherit'] })
  await new Promise((r) => setTimeout(r, 100))
  resume()
  const sb = await starting
  const init = parentOf(sb.pid)
  let out = ''
  sb.stdout!.on('data', (d) => (out += d))
  sb.stdin!.end('\n')
  await Promise.all([sb.wait(), ended(sb.stdout)])
  t.false(before.includes(init), `init ${init} is not one made ahead (${before})`)
  t.is(out, 'on the new tmpfs\n')
})

poolTest('inits made ahead end at once when the host unmounts something their copy of the mount table holds; with no start, helpers with inits made ahead take their helpers\' places', async (t) => {
  const { sub } = mountPlace(t)
  mountTmpfs(t, sub)
  // Only inits made after the mount: their copies hold it (a helper still being made when the
  // pool went to 0 ends once it is ready).
  configurePool({ size: 0 })
  t.true(await waitUntil(() => warmHelpersOf(process.pid).helpers.length === 0, 10_000), 'no warm helper left from before the mount')
  configurePool({ size: 2 })
  t.true(await poolFull(), 'inits made ahead, after the mount')
  const holding = initsAheadOf(process.pid)
  const theirHelpers = warmHelpersOf(process.pid).helpers
  unmount(t, sub)
  t.true(await waitUntil(() => holding.every((p) => !pidAlive(p)), 3000), `the inits made ahead (${holding}) ended: their copies would keep the unmounted tmpfs alive`)
  // Their helpers told the pool (`stale`); until others are ready they still serve, with fresh inits.
  const replaced = () => theirHelpers.every((p) => !pidAlive(p)) && initsAheadOf(process.pid).length === 2 && poolReady()
  t.true(await waitUntil(replaced, 20_000), `the helpers whose inits went (${theirHelpers}) were replaced by helpers with inits made ahead, with no sandbox started meanwhile`)
  await poolHeard()
  const r = await untilQuietMounts(async () => {
    await waitUntil(() => poolReady() && initsAheadOf(process.pid).length === 2, 20_000)
    await poolHeard()
    return startFromPool('true', { limits: LIMITS })
  }, (r) => r.took)
  t.true(r.took, 'the next sandbox takes an init made ahead')
})

poolTest('a warm helper whose init made ahead and zygote ended while it waited still serves, its sandbox in its cgroup with its limits, and one with both takes its place; a pooled helper that ends is replaced with no start', async (t) => {
  t.true(await poolFull(), 'two warm helpers with inits made ahead')
  const first = warmHelpersOf(process.pid)
  // On cgroup v1 each has a zygote: the path where the helper clones the init itself is tried.
  if (host.cgroupHost?.mode !== 'v2') t.is(first.zygotes.length, 2, 'two zygotes')
  const waiting = [...first.inits, ...first.zygotes.map((z) => z.zygote)]
  // Stopped (our own processes), the helpers find those ends once they go on: one with the spec
  // in the same wakeup, the other while it waits (else the pool, told at once, could replace both
  // before a sandbox came).
  const resume = () => first.helpers.forEach((h) => pidAlive(h) && process.kill(h, 'SIGCONT'))
  t.teardown(resume)
  first.helpers.forEach((h) => process.kill(h, 'SIGSTOP'))
  // As the OOM killer or an operator would end them.
  for (const p of waiting) process.kill(p, 'SIGKILL')
  t.true(await waitUntil(() => waiting.every((p) => !pidAlive(p)), 3000), `they ended (${waiting})`)
  // The init cloned now, by the helper itself, and moved into the cgroup: the limits hold.
  // Bounded (1 GiB) should the memory limit not hold.
  t.truthy(LIMITS.memoryBytes, 'this host holds memory limits')
  const starting = spawnIsolated('/bin/sh', ['-c', 'read x; exec /usr/bin/python3 -c "x = []\nfor _ in range(1024): x.append(bytearray(1 << 20))"'], { limits: LIMITS, stdio: ['pipe', 'ignore', 'ignore'], timeoutMs: 60_000 })
  await new Promise((r) => setTimeout(r, 100))
  resume()
  const sb = await starting
  t.true(await waitUntil(() => waiting.every((p) => !existsSync(`/proc/${p}`)), 3000), `their helpers reaped them (${waiting})`)
  const who = helperOf(sb.pid)
  sb.stdin!.end('\n')
  const r = await sb.wait()
  t.true(first.helpers.includes(who.helper) && who.warm, `one of those helpers (${first.helpers}) served it (${who.helper})`)
  t.regex(who.cgroup, /isolate-/, 'its init was in the sandbox\'s cgroup')
  t.is(r.reason, 'oom', 'its memory limit ended the allocation')
  t.true(await waitUntil(() => first.helpers.every((p) => !pidAlive(p)) && poolReady() && initsAheadOf(process.pid).length === 2, 30_000), `helpers with inits made ahead and zygotes took the places of ${first.helpers} (after a backoff: their zygotes and inits ended soon after they got ready)`)
  await poolHeard()
  const second = warmHelpersOf(process.pid).helpers
  for (const p of second) process.kill(p, 'SIGKILL')
  const replaced = () => {
    const now = warmHelpersOf(process.pid).helpers
    return now.length === 2 && now.every((p) => !second.includes(p)) && poolReady()
  }
  t.true(await waitUntil(replaced, 30_000), `others took the places of the helpers that ended (${second}), with no start`)
  await poolHeard()
})

poolTest('a mount the host makes and removes again (runc and crun do, on every run) leaves the inits made ahead in use', async (t) => {
  const { sub } = mountPlace(t)
  const r = await untilQuietMounts(
    async () => {
      await poolFull()
      const before = initsAheadOf(process.pid)
      mountTmpfs(t, sub)
      // Seen by the warm helpers (the watch flags the change) while the mount is there.
      await new Promise((res) => setTimeout(res, 50))
      unmount(t, sub)
      const sb = await spawnIsolated('/bin/sh', ['-c', 'read x'], { limits: LIMITS, stdio: ['pipe', 'ignore', 'ignore'] })
      const init = parentOf(sb.pid)
      sb.stdin!.end('\n')
      await sb.wait()
      return { took: before.includes(init), alive: before.filter((p) => p !== init && pidAlive(p)).length, before }
    },
    (r) => r.took,
  )
  t.true(r.took, `the sandbox got an init made ahead (${r.before})`)
  t.is(r.alive, r.before.length - 1, 'the other init made ahead still waits')
})

const zygotesOf = (node: number) => warmHelpersOf(node).zygotes

/** Every cgroup directory a process (a zygote, an init made ahead) is in that a sandbox would own (named isolate-...). */
function cgroupDirsOf(z: { zygote: number }): string[] {
  const dirs: string[] = []
  for (const line of readFileSync(`/proc/${z.zygote}/cgroup`, 'utf8').trim().split('\n')) {
    const [, controllers, path] = line.split(':')
    if (!path.includes('isolate-')) continue
    const ctl = controllers === '' ? '' : controllers.split(',').find((c) => !c.startsWith('name=')) ?? controllers
    dirs.push(join('/sys/fs/cgroup', ctl, path))
  }
  return dirs
}
