/**
 * Where a sandbox's work stands in the CPU's queue: the helper works at nice 19 (where it can give
 * the sandbox its caller's priority back: CAP_SYS_NICE) in the helper server's session, away from
 * its caller's terminal (and, where autogroups apply, in a scheduling group beside its caller's),
 * and every process of the sandbox runs at its caller's nice and policy, whether it came from the
 * pool or started cold.
 * This process runs at nice 7 here, so a sandbox that inherited the helper's nice, or a fixed 0,
 * is told apart from one given its caller's.
 */
import test from 'ava'
import { existsSync, readFileSync } from 'node:fs'
import { getPriority, setPriority } from 'node:os'
import { configurePool, probe, spawnIsolated } from '../index.js'
import { limitsHold } from '../lib/probe.js'
import { poolEligible } from '../lib/pool.js'
import { descendantsOf, isRoot, parentOf, poolHeard, sandboxCgroupsOf, sessionOf, underTerminal, waitingForSpec, waitUntil, warmHelpersOf } from './helpers.js'

const CALLER = 7
setPriority(CALLER)
const host = await probe()
// As lib/pool.ts: root, or a caller who may not create cgroups (its warm helpers have none).
const pooled = poolEligible(isRoot, host.cgroupHost?.canCreate === true)
const cgroups = limitsHold(host, { memoryBytes: 1 })
const stepsBack = isRoot // root has CAP_SYS_NICE; the rootless lane's user has not
console.log(`priority.test: this process at nice ${getPriority()}; ${stepsBack ? 'root: helpers step back to nice 19' : 'no CAP_SYS_NICE: helpers run at the caller\'s nice'}; ${pooled ? 'warm helpers from the pool' : `no pool here (uid ${process.geteuid?.()}, may create cgroups: ${host.cgroupHost?.canCreate}): every sandbox starts cold, the pooled test is skipped`}`)

/** Scheduling policy (0 SCHED_OTHER, 5 SCHED_IDLE) and nice, from a /proc/PID/stat text. */
function schedOf(stat: string): { policy: number; nice: number } {
  const f = stat.slice(stat.lastIndexOf(')') + 2).trim().split(' ')
  // Fields 19 (nice) and 41 (policy) of proc(5), counted from 1 with pid and comm as 1 and 2.
  return { nice: Number(f[19 - 3]), policy: Number(f[41 - 3]) }
}
const schedOfPid = (pid: number) => schedOf(readFileSync(`/proc/${pid}/stat`, 'utf8'))
/** Whether a process runs at another policy than SCHED_IDLE (5) by now; false once it is gone. */
const leftIdle = (pid: number) => {
  try {
    return schedOfPid(pid).policy !== 5
  } catch {
    return false
  }
}

/** One sandbox: what its command and its init say of themselves, and its helper seen from here. */
async function observe(limits = {}) {
  const sb = await spawnIsolated('/bin/sh', ['-c', 'cat /proc/self/stat; echo; cat /proc/1/stat; echo; read x'], { stdio: ['pipe', 'pipe', 'inherit'], limits })
  let out = ''
  sb.stdout!.on('data', (d) => (out += d))
  await waitUntil(() => out.split('\n').filter(Boolean).length === 2, 5000, 5)
  const helper = parentOf(parentOf(sb.pid))
  const fromPool = readFileSync(`/proc/${helper}/cmdline`, 'utf8').split('\0').includes('--warm')
  const helperSched = schedOfPid(helper)
  sb.stdin!.end('\n')
  await sb.wait()
  const [command, init] = out.split('\n').filter(Boolean).map(schedOf)
  return { command, init, helper: helperSched, fromPool }
}

const expectedHelper = { policy: 0, nice: stepsBack ? 19 : CALLER }
const asCaller = { policy: 0, nice: CALLER }

test.serial('a sandbox started cold runs at its caller\'s nice; its helper behind it', async (t) => {
  configurePool({ size: 0 })
  const r = await observe()
  t.false(r.fromPool)
  t.deepEqual(r.command, asCaller, 'the command, as it sees itself')
  t.deepEqual(r.init, asCaller, 'the init (pid 1 inside)')
  t.deepEqual(r.helper, expectedHelper, 'the helper, from the host')
})

// Only where there is a pool (the reason is printed above when there is none).
;(pooled ? test.serial : test.skip)('a sandbox from the pool runs at its caller\'s nice; a ready helper waits behind it, its zygote and init at the caller\'s', async (t) => {
  configurePool({ size: 1 })
  t.teardown(() => configurePool({}))
  // The init made ahead exists early in its helper's warm phase (then come its maps, its
  // loopback, its root), all of it at idle priority: ready is when the helper has left it.
  t.true(await waitUntil(() => warmHelpersOf(process.pid).inits.length === 1 && warmHelpersOf(process.pid).helpers.every((p) => leftIdle(p) && waitingForSpec(p)), 10_000), 'a warm helper with an init made ahead, done with its warm phase')
  // And this process has read its `warm` line (on a loaded machine, a moment after the helper wrote it).
  await poolHeard()
  const ready = warmHelpersOf(process.pid)
  t.deepEqual(schedOfPid(ready.helpers[0]), expectedHelper, 'the ready helper')
  for (const pid of [...ready.zygotes.map((z) => z.zygote), ...ready.inits]) t.deepEqual(schedOfPid(pid), asCaller, `zygote or init made ahead ${pid}`)
  const r = await observe(cgroups ? { memoryBytes: 64 << 20 } : {})
  t.true(r.fromPool, 'a warm helper served it')
  t.deepEqual(r.command, asCaller, 'the command, as it sees itself')
  t.deepEqual(r.init, asCaller, 'the init (pid 1 inside)')
  t.deepEqual(r.helper, expectedHelper, 'its helper, from the host')
})

/** The scheduling autogroup of `pid` (sched(7)), without its nice. */
const autogroupOf = (pid: number) => readFileSync(`/proc/${pid}/autogroup`, 'utf8').split(' ')[0]
const autogroups = existsSync('/proc/sys/kernel/sched_autogroup_enabled') && readFileSync('/proc/sys/kernel/sched_autogroup_enabled', 'utf8').trim() === '1'
if (!autogroups) console.log('priority.test: scheduling autogroups are off on this host: the test of the helpers\' session checks their session and terminal only')

test.serial("helpers and inits work in the helper server's session, away from their caller's terminal (and, where autogroups apply, in one scheduling group beside the caller's); the command has a session of its own", async (t) => {
  // A caller with a terminal, as a CLI run from a shell: it leads that terminal's session.
  const caller = await underTerminal(cgroups ? { memoryBytes: 64 << 20, pids: 16 } : undefined)
  t.teardown(caller.kill)
  const own = sessionOf(caller.node)
  t.is(own.sid, caller.node, 'the caller leads its session')
  t.not(own.tty, 0, 'the caller has a controlling terminal')
  // Not the command, nor what the test's loader started (tsx's esbuild).
  const comm = (p: number) => readFileSync(`/proc/${p}/comm`, 'utf8').trim()
  const ours = descendantsOf(caller.node).filter((p) => p !== caller.command && comm(p).startsWith('isolate-'))
  const names = ours.map(comm)
  // The helper server and what it forked; with a pool, warm helpers and what they made ahead.
  const server = ours[names.indexOf('isolate-server')]
  t.true(server !== undefined && names.includes('isolate-helper') && names.includes('isolate-init'), names.join(' '))
  for (const [i, pid] of ours.entries()) {
    // Ctrl-C and a hang-up signal the caller's process group, and the terminal's session leader.
    t.deepEqual(sessionOf(pid), { pgrp: server, sid: server, tty: 0 }, `${names[i]} ${pid}: in the helper server's session and group, no terminal`)
    if (autogroups) t.is(autogroupOf(pid), autogroupOf(server), `${names[i]} ${pid} is in the helper server's scheduling autogroup`)
  }
  if (autogroups) t.not(autogroupOf(server), autogroupOf(caller.node), "the helper server's autogroup is not its caller's")
  const command = sessionOf(caller.command)
  t.deepEqual(command, { pgrp: caller.command, sid: caller.command, tty: 0 }, 'the command leads a session of its own, with no terminal')
  if (autogroups) t.false([caller.node, server].map(autogroupOf).includes(autogroupOf(caller.command)), 'so it has an autogroup of its own')
  const cgroupDirs = sandboxCgroupsOf(caller.command)
  t.is(cgroupDirs.length > 0, cgroups, `the sandbox's cgroups: ${cgroupDirs}`)
  t.is(await caller.hangUp(), 'signal 1', 'the terminal hanging up ended its caller (SIGHUP)')
  t.true(await waitUntil(() => [caller.command, ...ours].every((p) => !existsSync(`/proc/${p}`)), 5000), 'the sandbox and every helper end with it')
  t.deepEqual(cgroupDirs.filter(existsSync), [], 'no cgroup is left')
})

;(pooled ? test.serial : test.skip)("a sandbox from the pool runs at its caller's nice as it is at the start, not as it was when its warm helper was made", async (t) => {
  configurePool({ size: 1 })
  t.teardown(() => {
    try {
      // Lowering it back takes CAP_SYS_NICE (the rootless lane's user stays at the higher one:
      // this test comes last).
      setPriority(CALLER)
    } catch {}
    configurePool({})
  })
  t.true(await waitUntil(() => warmHelpersOf(process.pid).helpers.length === 1 && warmHelpersOf(process.pid).helpers.every((p) => leftIdle(p) && waitingForSpec(p)), 10_000), 'a warm helper, made at nice 7, waiting')
  await poolHeard()
  // Raising a nice needs no privilege: the rootless lane's user may do it too.
  setPriority(CALLER + 3)
  const r = await observe(cgroups ? { memoryBytes: 64 << 20 } : {})
  t.true(r.fromPool, 'a warm helper served it')
  t.deepEqual(r.command, { policy: 0, nice: CALLER + 3 }, 'the command, as it sees itself')
  t.deepEqual(r.init, { policy: 0, nice: CALLER + 3 }, 'the init (pid 1 inside)')
})
