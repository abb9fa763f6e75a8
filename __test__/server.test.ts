/**
 * The helper server (crates/core/src/server.rs): one per Node process, it forks every helper,
 * warm or cold, so no helper is exec'd on a sandbox's path. A forked helper must start as an
 * exec'd one would: in Node's working directory and with its umask as they are at that start,
 * holding nothing of the server's or of another sandbox's; the server holds nothing of any
 * sandbox's; a server that dies is replaced without a sandbox failing or a zombie left.
 */
import test from 'ava'
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, realpathSync, rmdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { configurePool, probe, spawnIsolated, type Sandbox } from '../index.js'
import { limitsHold } from '../lib/probe.js'
import { helperServersOf, isRoot, nodeScript, parentOf, pidAlive, removeDir, root, sandboxCgroupsOf, standInCgroup, tempDir, waitUntil, zombieChildren } from './helpers.js'

/** A sandbox whose command waits for a line on stdin, and its helper (the init's parent). */
async function waiting(): Promise<{ sb: Sandbox; helper: number }> {
  const sb = await spawnIsolated('/bin/sh', ['-c', 'read x'], { stdio: ['pipe', 'ignore', 'ignore'] })
  return { sb, helper: parentOf(parentOf(sb.pid)) }
}

async function end(sb: Sandbox): Promise<void> {
  sb.stdin!.end('\n')
  await sb.wait()
}

const fdTargets = (pid: number) => readdirSync(`/proc/${pid}/fd`).map((fd) => {
  try {
    return readlinkSync(`/proc/${pid}/fd/${fd}`)
  } catch {
    return 'gone'
  }
})
const cmdline = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean)

test.serial('every helper is forked by this process\'s one helper server, which holds none of a sandbox\'s descriptors', async (t) => {
  const runs = [await waiting(), await waiting()]
  const servers = helperServersOf(process.pid)
  t.is(servers.length, 1, 'one helper server, a child of this process')
  for (const { helper } of runs) {
    t.is(parentOf(helper), servers[0], 'the helper is the server\'s child')
    t.regex(cmdline(helper).join(' '), /^isolate-helper --(warm|cold) --forked$/, 'its process list entry says what it is')
    t.is(readFileSync(`/proc/${helper}/comm`, 'utf8').trim(), 'isolate-helper')
  }
  t.not(runs[0].helper, runs[1].helper, 'a helper of its own each')
  const held = fdTargets(servers[0])
  t.deepEqual(held.filter((l) => l.startsWith('pipe:')), [], `no pipe of a sandbox's stdio: ${held}`)
  t.is(held.filter((l) => l.startsWith('socket:')).length, 1, `its own socket only: ${held}`)
  t.deepEqual(held.filter((l) => !/^(socket:|pipe:|anon_inode:\[signalfd\]$|\/dev\/null$)/.test(l)), [], `nothing else: ${held}`)
  for (const { sb } of runs) await end(sb)
})

test.serial('a forked helper starts in the working directory and with the umask this process has at that start', async (t) => {
  // Cold starts: a warm helper, forked or exec'd, was made before this test changed them.
  configurePool({ size: 0 })
  const dir = realpathSync(tempDir('isolate-server-cwd-'))
  const before = { cwd: process.cwd(), umask: process.umask(0o027) }
  process.chdir(dir)
  t.teardown(() => {
    process.chdir(before.cwd)
    process.umask(before.umask)
    configurePool({})
    removeDir(dir)
  })
  const { sb, helper } = await waiting()
  t.is(readlinkSync(`/proc/${helper}/cwd`), dir)
  t.is(/^Umask:\s*(\d+)$/m.exec(readFileSync(`/proc/${helper}/status`, 'utf8'))?.[1], '0027')
  await end(sb)
})

test.serial("a helper this process spawned itself (its server just died) and a signal killed leaves no cgroup: the addon removes what it left as it reaps it", async (t) => {
  const host = await probe()
  const options = { limits: { pids: 16 } }
  if (!limitsHold(host, options.limits)) return t.pass(`no cgroup limit holds here (${host.cgroupHost?.reason ?? 'no cgroups'}): nothing to leave`)
  configurePool({ size: 0 })
  t.teardown(() => configurePool({}))
  await end((await waiting()).sb)
  const [server] = helperServersOf(process.pid)
  process.kill(server, 'SIGKILL')
  t.true(await waitUntil(() => !pidAlive(server), 2000))
  const sb = await spawnIsolated('/bin/sleep', ['100'], options)
  const helper = parentOf(parentOf(sb.pid))
  t.is(parentOf(helper), process.pid, 'spawned by this process while there is no server')
  const cgroups = sandboxCgroupsOf(sb.pid)
  t.true(cgroups.length > 0, 'the sandbox has cgroups')
  // The addon's sweep must not take another helper's cgroup of the same pid, nor kill what it holds.
  const other = standInCgroup(dirname(cgroups[0]), helper)
  try {
    const failed = t.throwsAsync(sb.wait())
    process.kill(helper, 'SIGKILL')
    await failed
    t.true(await waitUntil(() => cgroups.every((d) => !existsSync(d)), 5000), `left: ${cgroups.filter(existsSync)}`)
    t.true(await other.untouched(), "another helper's cgroup of the same pid, and its process, are untouched")
  } finally {
    await other.remove()
  }
})

test.serial('a helper server that dies is replaced: the next sandbox starts, and no zombie is left', async (t) => {
  // Cold starts: the pool's helpers forked by the killed server would still serve sandboxes.
  configurePool({ size: 0 })
  t.teardown(() => configurePool({}))
  await end((await waiting()).sb)
  const [server] = helperServersOf(process.pid)
  t.truthy(server)
  process.kill(server, 'SIGKILL')
  t.true(await waitUntil(() => !pidAlive(server), 2000))
  // The first start after it asks the dead server, ends it for good (reaped) and is spawned.
  const { sb, helper } = await waiting()
  t.is(parentOf(helper), process.pid, 'spawned by this process while there is no server')
  await end(sb)
  t.false(existsSync(`/proc/${server}`), 'the dead server was reaped')
  const next = await waiting()
  const servers = helperServersOf(process.pid)
  t.is(servers.length, 1, 'a new server')
  t.not(servers[0], server)
  t.is(parentOf(next.helper), servers[0])
  await end(next.sb)
  t.true(await waitUntil(() => zombieChildren().length === 0, 3000), `no zombie child: ${zombieChildren()}`)
})

test("a helper server that takes the request and does not answer fails that start: no second helper is given the sandbox's descriptors", async (t) => {
  // In a Node process of its own: its server is stopped for 10 s, which would hold this file's starts.
  const r = await nodeScript(`
    const { configurePool, spawnIsolated } = await import(${JSON.stringify(join(root, 'index.ts'))})
    const { helperServersOf, descendantsOf } = await import(${JSON.stringify(join(root, '__test__', 'helpers.ts'))})
    configurePool({ size: 0 })
    await (await spawnIsolated('/bin/true', [], { stdio: 'ignore' })).wait()
    const [server] = helperServersOf(process.pid)
    // Stopped, it takes the request into its socket and never answers (as a server that forked
    // the helper and then stalled or died would not).
    process.kill(server, 'SIGSTOP')
    const started = Date.now()
    const out = {}
    try {
      const sb = await spawnIsolated('/bin/sh', ['-c', 'echo ran'], { stdio: ['ignore', 'pipe', 'ignore'] })
      out.started = true
      await sb.wait()
    } catch (e) {
      Object.assign(out, { code: e.code, errno: e.errno, hint: e.hint, after: Date.now() - started })
    }
    out.serverGone = !descendantsOf(process.pid).includes(server)
    out.helpers = descendantsOf(process.pid).length
    const next = await spawnIsolated('/bin/echo', ['next'], { stdio: ['ignore', 'pipe', 'ignore'] })
    let text = ''
    for await (const d of next.stdout) text += d
    out.next = [text, (await next.wait()).exitCode, helperServersOf(process.pid).filter((p) => p !== server).length]
    console.log(JSON.stringify(out))
  `, 60_000)
  t.is(r.status, 0, r.stderr)
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!)
  t.falsy(out.started, 'the command did not run beside the stopped server')
  t.deepEqual([out.code, out.errno], ['ERR_ISOLATE_NATIVE', 'ETIMEDOUT'])
  t.regex(out.hint, /took more than 10 s to answer/)
  t.true(out.after >= 9_000, `failed after the server's 10 s: ${out.after} ms`)
  t.true(out.serverGone, 'the stopped server was ended and reaped')
  t.is(out.helpers, 0, 'and no helper was spawned in its place')
  t.deepEqual(out.next, ['next\n', 0, 1], 'the next start has a new server')
})

test("starts queued behind a helper server that does not answer spawn their helpers instead: they run, and the process's thread pool is not held for the server's 10 s", async (t) => {
  // libuv's pool has 4 threads: 4 starts at once take them all, so the fs reads after them run
  // only once starts let go of their threads.
  const r = await nodeScript(`
    const { readFile } = await import('node:fs/promises')
    const { configurePool, spawnIsolated } = await import(${JSON.stringify(join(root, 'index.ts'))})
    const { helperServersOf, descendantsOf, zombieChildren, waitUntil } = await import(${JSON.stringify(join(root, '__test__', 'helpers.ts'))})
    configurePool({ size: 0 })
    await (await spawnIsolated('/bin/true', [], { stdio: 'ignore' })).wait()
    const [server] = helperServersOf(process.pid)
    process.kill(server, 'SIGSTOP')
    const started = Date.now()
    const starts = [0, 1, 2, 3].map(async (i) => {
      try {
        const sb = await spawnIsolated('/bin/echo', ['ran ' + i], { stdio: ['ignore', 'pipe', 'ignore'] })
        let text = ''
        for await (const d of sb.stdout) text += d
        return { text, exitCode: (await sb.wait()).exitCode, after: Date.now() - started }
      } catch (e) {
        return { errno: e.errno, after: Date.now() - started }
      }
    })
    const reads = Promise.all([0, 1, 2, 3].map(() => readFile('/proc/self/status'))).then(() => Date.now() - started)
    const out = { starts: await Promise.all(starts), readsAfter: await reads }
    out.serverGone = !descendantsOf(process.pid).includes(server)
    out.noZombie = await waitUntil(() => zombieChildren().length === 0, 3000)
    console.log(JSON.stringify(out))
  `, 60_000)
  t.is(r.status, 0, r.stderr)
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!)
  const failed = out.starts.filter((s: { errno?: string }) => s.errno)
  const ran = out.starts.filter((s: { errno?: string }) => !s.errno)
  t.deepEqual(failed.map((s: { errno: string }) => s.errno), ['ETIMEDOUT'], 'only the start whose request the stopped server took fails')
  t.true(failed[0].after >= 9_000, `it failed after the server's 10 s: ${failed[0].after} ms`)
  t.deepEqual(ran.map((s: { text: string; exitCode: number }) => [s.text.replace(/\d/, 'i'), s.exitCode]), [['ran i\n', 0], ['ran i\n', 0], ['ran i\n', 0]])
  for (const s of ran) t.true(s.after < 6_000, `a queued start ran without the server's 10 s: ${s.after} ms`)
  t.true(out.readsAfter < 6_000, `fs reads were served while the server did not answer: ${out.readsAfter} ms`)
  t.true(out.serverGone, 'the stopped server was ended and reaped')
  t.true(out.noZombie, 'no zombie child')
})

test("a caller that moves to another cgroup or drops root after its first sandbox: later helpers, warm or cold, are made as it is now, not as its helper server was started", async (t) => {
  if (!isRoot) return void t.log('not root: only root can drop to another user or make the cgroup to move into; the check runs in the root suite')
  const host = await probe()
  const v1Memory = (host.cgroup.mode === 'v1' || host.cgroup.mode === 'hybrid') && limitsHold(host, { memoryBytes: 1 })
  // A bind source only root may reach: the helper of a caller that dropped root must not.
  const dir = tempDir()
  t.teardown(() => removeDir(dir))
  mkdirSync(join(dir, 'private', 'pub'), { recursive: true })
  writeFileSync(join(dir, 'private', 'pub', 'file'), 'ROOT-ONLY\n')
  chmodSync(join(dir, 'private'), 0o700)
  // Beneath this process's own memory cgroup (the child's too); removed by the child once empty, else here.
  const movedName = `isolate-test-moved-${process.pid}`
  t.teardown(() => {
    const line = readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.split(':')[1]?.split(',').includes('memory'))
    try {
      if (line) rmdirSync(`/sys/fs/cgroup/memory${line.split(':')[2]}/${movedName}`)
    } catch {}
  })
  const r = await nodeScript(`
    const { runIsolated, spawnIsolated } = await import(${JSON.stringify(join(root, 'index.ts'))})
    const { parentOf } = await import(${JSON.stringify(join(root, '__test__', 'helpers.ts'))})
    const { mkdirSync, readFileSync, rmdirSync, writeFileSync } = await import('node:fs')
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
    const out = {}
    const bind = { mounts: [{ type: 'bind', source: ${JSON.stringify(join(dir, 'private', 'pub'))}, target: '/m' }] }
    const read = async (opts) => { try { return (await runIsolated('/bin/cat', ['/m/file'], opts)).stdout.trim() } catch (e) { return e.step + ' ' + e.errno } }
    const memoryOf = (p) => readFileSync('/proc/' + p + '/cgroup', 'utf8').split('\\n').find((l) => l.split(':')[1].split(',').includes('memory')).split(':')[2]
    const made = async (opts) => {
      const sb = await spawnIsolated('/bin/sleep', ['5'], { stdio: 'ignore', ...opts })
      const helper = parentOf(parentOf(sb.pid))
      const seen = { uid: Number(/^Uid:\\s+\\d+\\s+(\\d+)/m.exec(readFileSync('/proc/' + helper + '/status', 'utf8'))[1]), memory: opts.limits ? memoryOf(sb.pid) : null }
      sb.kill('SIGKILL')
      await sb.wait()
      return seen
    }
    const limits = { memoryBytes: 64 << 20 }
    out.before = await read(bind)
    if (${v1Memory}) {
      await made({ limits })
      // The pool refills (its warm helpers made where this process is now).
      await sleep(1000)
      const own = '/sys/fs/cgroup/memory' + memoryOf(process.pid)
      const moved = own + '/' + ${JSON.stringify(movedName)}
      mkdirSync(moved)
      writeFileSync(moved + '/cgroup.procs', String(process.pid))
      out.movedTo = memoryOf(process.pid)
      out.moved = [await made({ limits }), (await sleep(1000), await made({ limits }))]
      // And back: the helper server and warm helpers made in that cgroup are ended by the next start.
      writeFileSync(own + '/cgroup.procs', String(process.pid))
      out.back = [memoryOf(process.pid), (await made({ limits })).memory]
      for (let i = 0; i < 100; i++) { try { rmdirSync(moved); out.removed = true; break } catch { await sleep(50) } }
    }
    await sleep(1000)
    process.setgroups([])
    process.setgid(65534)
    process.setuid(65534)
    out.after = await read(bind)
    out.dropped = [await made({}), (await sleep(1000), await made({}))]
    console.log(JSON.stringify(out))
  `, 60_000)
  t.is(r.status, 0, `${r.timedOut ? 'timed out; ' : ''}${r.stdout}${r.stderr}`)
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { before: string; after: string; movedTo?: string; moved?: Array<{ memory: string }>; back?: string[]; removed?: boolean; dropped: Array<{ uid: number }> }
  t.is(out.before, 'ROOT-ONLY', 'as root, the bind source is reached')
  if (v1Memory) {
    t.true(out.back![1].startsWith(`${out.back![0]}/isolate-`), `moved back, its next sandbox is beneath its cgroup again: ${out.back}`)
    t.true(out.removed, 'nothing was left in the cgroup it moved out of: the helpers made there ended')
    for (const m of out.moved!) t.true(m.memory.startsWith(`${out.movedTo}/isolate-`), `the sandbox's cgroup is beneath the one the caller moved to (${out.movedTo}), not its old one: ${m.memory}`)
  } else {
    t.log('no v1 memory cgroup this process may create: the move is not tried here (the v2 lane has no root suite of this file)')
  }
  t.regex(out.after, /^bind_mount (ENOENT|EACCES)$/, 'once root is dropped, its helper cannot reach what the caller cannot')
  t.deepEqual(out.dropped.map((d) => d.uid), [65534, 65534], 'the helpers of later sandboxes, warm or cold, run as the caller now is')
})
