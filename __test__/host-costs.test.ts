/**
 * What a sandbox may cost its host past its limits, and what bounds it.
 *
 * Its place in the kernel's OOM killer's line: first (oom_score_adj 1000), so that a host
 * out of memory ends a sandbox, and with it what it holds apart from any process (its tmpfs files,
 * a memfd), before Node or another service. Where this process holds CAP_SYS_RESOURCE (root, as
 * usual; here in the cgroup v2 lane's root boot) the sandbox cannot lower it; elsewhere it may
 * lower it as far as its caller itself may (the floor it inherits, which /proc does not show),
 * and no further.
 *
 * A host that pipes core dumps to a program (systemd-coredump, apport) starts it on the host, as
 * root, for a crash whatever its RLIMIT_CORE but 1 byte: a sandbox has that one, unless it asks
 * for core dumps. `isolate doctor` says where dumps are piped.
 */
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { configurePool, createSandbox, probe, runIsolated } from '../index.js'
import { cgroupDirOf, isRoot, nodeScript, root, waitUntil } from './helpers.js'
import { cli } from './cli-runner.js'

const host = await probe()
const ownAdj = Number(readFileSync('/proc/self/oom_score_adj', 'utf8'))
// The command, a child it forks, and what the kernel makes of it (oom_score: with an adjustment
// of 1000, (2000 + its share of memory in thousandths) * 2/3, so about 1333 and up).
const look = 'cat /proc/self/oom_score_adj; sh -c "cat /proc/self/oom_score_adj"; cat /proc/self/oom_score'

function ranked(t: import('ava').ExecutionContext, out: string, what: string) {
  const [command, child, score] = out.trim().split('\n').map(Number)
  t.deepEqual([command, child], [1000, 1000], `${what}: ${out}`)
  t.true(score >= 1000, `${what}: oom_score ${score}`)
}

test.serial('the command and its children are the OOM killer\'s first choice: cold, from the pool, and in an exec of a long-lived sandbox', async (t) => {
  configurePool({ size: 0 })
  try {
    const cold = await runIsolated('/bin/sh', ['-c', look])
    t.is(cold.exitCode, 0, cold.stderr)
    ranked(t, cold.stdout, 'cold')
    const box = await createSandbox({})
    try {
      const e = await box.exec('/bin/sh', ['-c', `${look}; cat /proc/1/oom_score_adj`])
      t.is(e.exitCode, 0, e.stderr)
      const lines = e.stdout.trim().split('\n')
      ranked(t, lines.slice(0, 3).join('\n'), 'an exec')
      t.is(lines[3], '1000', "the sandbox's init")
    } finally {
      await box.destroy()
    }
  } finally {
    configurePool({})
  }
  // The pool's inits made ahead (and its zygotes' births) are ranked as they are made; the pool
  // tests check that a start takes one.
  for (let i = 0; i < 4; i++) {
    const warm = await runIsolated('/bin/sh', ['-c', look])
    t.is(warm.exitCode, 0, warm.stderr)
    ranked(t, warm.stdout, `start ${i + 1} with the pool on`)
  }
  t.is(Number(readFileSync('/proc/self/oom_score_adj', 'utf8')), ownAdj, 'the caller keeps its own')
})

test('the sandbox cannot step back in the line: not below its place where the caller holds CAP_SYS_RESOURCE, never below its caller', async (t) => {
  const lower = (to: number) => `echo ${to} > /proc/self/oom_score_adj 2>/dev/null && echo lowered || echo refused; cat /proc/self/oom_score_adj`
  // What this process's own children may do: the sandbox may never do more.
  const callerMay = execFileSync('/bin/sh', ['-c', lower(-1000)], { encoding: 'utf8' }).split('\n')[0]
  // runIsolated, which reads the output to its end (a spawned sandbox's wait() may come first).
  const r = await runIsolated('/bin/sh', ['-c', `${lower(999)}; ${lower(ownAdj)}; ${lower(-1000)}`])
  t.is(r.exitCode, 0, r.stderr)
  const out = r.stdout
  const [to999, after999, toOwn, afterOwn, toLeast, afterLeast] = out.trim().split('\n')
  if (host.oomFloorHeld) {
    t.deepEqual([to999, after999, toOwn, afterOwn, toLeast, afterLeast], ['refused', '1000', 'refused', '1000', 'refused', '1000'], out)
    return
  }
  console.log(`host-costs.test: this process lacks CAP_SYS_RESOURCE (uid ${process.geteuid?.()}): a sandbox may lower its place as far as this process itself may, which is checked here; the floor at 1000 is checked where the caller holds it (the cgroup v2 lane's root boot)`)
  t.deepEqual([to999, after999, toOwn, afterOwn], ['lowered', '999', 'lowered', String(ownAdj)], out)
  if (callerMay === 'refused') t.deepEqual([toLeast, afterLeast], ['refused', String(ownAdj)], out)
  else console.log('host-costs.test: this process\'s own children may set -1000 (its floor is that low): so may its sandboxes')
})

/** This process's memory cgroup directory (v1's memory hierarchy, else the v2 one), if it may make one beneath it. */
function ownMemoryCgroup(): { dir: string; v2: boolean } | undefined {
  const lines = readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n')
  const v1 = lines.find((l) => l.split(':')[1]?.split(',').includes('memory'))
  if (v1) return { dir: cgroupDirOf(v1).dir, v2: false }
  const v2 = lines.find((l) => l.startsWith('0::'))
  if (!v2) return undefined
  const { dir } = cgroupDirOf(v2)
  return existsSync(join(dir, 'cgroup.subtree_control')) && readFileSync(join(dir, 'cgroup.subtree_control'), 'utf8').includes('memory') ? { dir, v2: true } : undefined
}

test.serial("a caller out of memory loses the sandbox that filled its /tmp, not its own life: the OOM killer takes the sandbox's processes, and its end frees the files", async (t) => {
  const own = isRoot ? ownMemoryCgroup() : undefined
  if (!own) {
    console.log(`host-costs.test: no memory cgroup this process may make here (uid ${process.geteuid?.()}): the OOM killer's choice is seen in the root suite, in a memory cgroup made for it beneath this process's own`)
    return t.pass()
  }
  // A host of 320 MiB, in a cgroup of its own beneath this process's: a Node that holds 160 MiB
  // and a sandbox with no memoryBytes (so no cgroup of its own, nor from the pool) that writes
  // 400 MB to its /tmp. Files there belong to no process: before, the OOM killer took the
  // biggest process, Node, and the files stayed until the sandbox ended.
  const dir = join(own.dir, `isolate-test-oom-${process.pid}`)
  mkdirSync(dir)
  t.teardown(async () => {
    await waitUntil(() => {
      try {
        rmdirSync(dir)
        return true
      } catch {
        return false
      }
    }, 10_000)
  })
  writeFileSync(join(dir, own.v2 ? 'memory.max' : 'memory.limit_in_bytes'), String(320 << 20))
  // No swap for it either (tmpfs pages would go there instead): v1's bound of memory and swap
  // together (after the memory bound, which it may not be below), v2's of swap alone.
  const swap = join(dir, own.v2 ? 'memory.swap.max' : 'memory.memsw.limit_in_bytes')
  if (existsSync(swap)) writeFileSync(swap, own.v2 ? '0' : String(320 << 20))
  const usage = join(dir, own.v2 ? 'memory.current' : 'memory.usage_in_bytes')
  const r = await nodeScript(`
    const { writeFileSync, readFileSync } = await import('node:fs')
    writeFileSync(${JSON.stringify(join(dir, 'cgroup.procs'))}, String(process.pid))
    const { configurePool, runIsolated } = await import(${JSON.stringify(join(root, 'index.ts'))})
    configurePool({ size: 0 })
    const held = Buffer.alloc(160 << 20, 1)
    const r = await runIsolated('/bin/sh', ['-c', 'exec head -c 400000000 /dev/zero > /tmp/fill'], { timeoutMs: 120_000 })
    // Torn down just after the end is reported (the helper holds the mount namespace till then).
    const inUse = () => Number(readFileSync(${JSON.stringify(usage)}, 'utf8'))
    for (let i = 0; i < 100 && inUse() >= 280 << 20; i++) await new Promise((r) => setTimeout(r, 50))
    const after = inUse()
    console.log(JSON.stringify({ reason: r.reason, signal: r.signal, exitCode: r.exitCode, stderr: r.stderr, held: held.length, after }))
  `, 180_000)
  t.is(r.status, 0, `the caller lived: ${r.timedOut ? 'timed out; ' : ''}${r.stdout}${r.stderr}`)
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { reason: string; signal: string | null; after: number; held: number }
  // The command, or the init (whose end takes the command): a process of the sandbox's either way.
  t.deepEqual([out.reason, out.signal], ['signaled', 'SIGKILL'], `the sandbox was the one killed: ${r.stdout}`)
  t.is(out.held, 160 << 20)
  // What the sandbox wrote went with it: the cgroup holds Node (and its 160 MiB) again.
  t.true(out.after < 280 << 20, `${out.after >> 20} MiB in use once the sandbox ended`)
})

test.serial("a sandbox's crash starts no core dump program on the host (its RLIMIT_CORE is 1 byte, the one limit the kernel keeps for a pipe), one given coreDumps does; isolate doctor says where dumps are piped", async (t) => {
  // Lowered (as a daemon guarding its secrets does, or code that wants the host's program to
  // run) or raised, it stays 1 byte: the change is answered as done, and not made.
  const limit = 'import resource\nfor new in [(0, 0), (0, 1), (2, 2)]:\n  resource.setrlimit(resource.RLIMIT_CORE, new)\n  print(*resource.getrlimit(resource.RLIMIT_CORE))'
  const r = await runIsolated('/usr/bin/python3', ['-c', limit])
  t.is(r.stdout, '1 1\n1 1\n1 1\n', r.stderr)
  // A change that asks for the old limit back too (prlimit(2) with both) is refused instead: the
  // filter cannot fill the old one in.
  const both = await runIsolated('/usr/bin/python3', ['-c', 'import resource\ntry:\n  resource.prlimit(0, resource.RLIMIT_CORE, (0, 0))\nexcept PermissionError:\n  print("refused")\nprint(*resource.getrlimit(resource.RLIMIT_CORE))'])
  t.is(both.stdout, 'refused\n1 1\n', both.stderr)
  const shell = await runIsolated('/bin/sh', ['-c', 'ulimit -S -c 0 && ulimit -c && grep "core file" /proc/self/limits'])
  t.regex(shell.stdout, /^0\nMax core file size +1 +1 +bytes *\n$/, 'in blocks, as shells show it; still 1 byte after `ulimit -S -c 0`')
  // Given core dumps, it is the sandbox's own to change: cold, and from the pool (whose helpers
  // have the filter for sandboxes without them at hand).
  for (const size of [0, undefined]) {
    configurePool(size === undefined ? {} : { size })
    const own = await runIsolated('/usr/bin/python3', ['-c', limit], { limits: { coreDumps: true } })
    t.is(own.stdout.split('\n')[0], '0 0', `pool size ${size ?? 'default'}: ${own.stdout}${own.stderr}`)
  }
  const pattern = readFileSync('/proc/sys/kernel/core_pattern', 'utf8')
  const row = async () => /^core dumps:\s+(.*)$/m.exec((await cli(['doctor'])).stdout)?.[1] ?? ''
  const here = await row()
  if (pattern.startsWith('|')) t.true(here.startsWith(`piped to ${pattern.slice(1).trim().split(/\s+/)[0]}:`), here)
  else t.true(here.startsWith('none from sandboxes unless limits.coreDumps'), here)
  // The lane's guest is a machine of the test's own: there, a pipe is tried.
  if (process.env.ISOLATE_CGROUP_LANE !== 'v2' || !isRoot) {
    console.log(`host-costs.test: this host's kernel.core_pattern (${pattern.trim()}) is not the test's to change: a pipe is tried in the cgroup v2 lane's guest, as root`)
    return
  }
  const mark = `isolate-core-${process.pid}-`
  const marks = () => readdirSync('/tmp').filter((f) => f.startsWith(mark))
  writeFileSync('/proc/sys/kernel/core_pattern', `|/usr/bin/touch /tmp/${mark}%p`)
  t.teardown(() => {
    writeFileSync('/proc/sys/kernel/core_pattern', pattern)
    for (const f of marks()) rmSync(join('/tmp', f))
  })
  t.regex(await row(), /^piped to \/usr\/bin\/touch: not for a crash in a sandbox/)
  // Lowering it first, as code that wants the host's program to run would.
  const crash = 'ulimit -S -c 0; kill -SEGV $$'
  t.is((await runIsolated('/bin/sh', ['-c', crash])).signal, 'SIGSEGV')
  // The kernel starts the program before the crashing process dies (and touch takes
  // milliseconds): the control below shows it within this wait. Before, with a limit of 0, it ran.
  await new Promise((r) => setTimeout(r, 2000))
  t.deepEqual(marks(), [], "no program of the host's for a sandbox's crash")
  t.is((await runIsolated('/bin/sh', ['-c', 'kill -SEGV $$'], { limits: { coreDumps: true } })).signal, 'SIGSEGV')
  t.true(await waitUntil(() => marks().length === 1, 2000), 'with coreDumps, the program ran for the crash')
})
