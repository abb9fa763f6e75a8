/**
 * ISOLATE_CGROUP_PARENT: the cgroup v2 parent of the sandbox cgroups, in place of the caller's own
 * cgroup, which holds the caller and so (the no-internal-process rule) cannot give its children
 * memory, pids or cpu. Only the caller's own cgroup or one above it, only on cgroup v2; anything
 * else fails closed, naming the variable. Each case runs in a Node process of its own: the
 * variable is read by the helpers that process starts.
 *
 * Where the limits hold beneath such a parent is tested in the cgroup v2 lane's delegated boot
 * (scripts/cgroup2-delegated.sh: the suite runs in a leaf of a delegated cgroup that holds no
 * process, which it names in ISOLATE_TEST_CGROUP_PARENT) and its root boot (the parent '/'; a
 * service's cgroup; a container's, in a cgroup namespace, by the README's recipe).
 */
import test from 'ava'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { probe } from '../index.js'
import { cli } from './cli-runner.js'
import { root } from './helpers.js'

const host = await probe()
const mode = host.cgroup.mode
/** This process's cgroup v2 path, as /proc/self/cgroup writes it. */
const own = /^0::(.*)$/m.exec(readFileSync('/proc/self/cgroup', 'utf8'))?.[1] ?? '/'
/** A cgroup above this process's that holds no process, delegated to it (the lane says which), or the root where this process is in it. */
const usableParent = process.env.ISOLATE_TEST_CGROUP_PARENT ?? (mode === 'v2' && own === '/' ? '/' : undefined)

/**
 * Run `body` (module code with `api`, this package's index, imported) in a Node process whose
 * ISOLATE_CGROUP_PARENT is `parent`; what it printed last, as JSON. `launch`: a shell script that
 * starts it (its `$0` is `arg`; it ends by running its arguments, Node's command line).
 */
function inNode(parent: string, body: string, launch?: { script: string; arg: string }): Promise<Record<string, any>> {
  const code = `const api = await import(${JSON.stringify(join(root, 'index.ts'))})\n${body}`
  const argv = ['--import=tsx', '--input-type=module', '-e', code]
  const env = { ...process.env, ISOLATE_CGROUP_PARENT: parent }
  const child = launch
    ? spawn('/bin/sh', ['-c', launch.script, launch.arg, process.execPath, ...argv], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(process.execPath, argv, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (d: Buffer) => (out += d))
  child.stderr.on('data', (d: Buffer) => (err += d))
  // Ended, with all it started (a sandbox dies with its helper's lifeline), should it hang.
  const timer = setTimeout(() => child.kill('SIGKILL'), 150_000)
  return new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      const last = out.trim().split('\n').pop() ?? ''
      if (code !== 0 || !last.startsWith('{')) reject(new Error(`the Node process with ISOLATE_CGROUP_PARENT=${parent} exited ${code}: ${out}${err}`))
      else resolve(JSON.parse(last))
    })
  })
}

const refusedBody = `
const p = await api.probe()
const free = await api.runIsolated('/bin/echo', ['ran'])
let err = null
try {
  await api.runIsolated('/bin/true', [], { limits: { pids: 16 } })
} catch (e) {
  err = { name: e.name, step: e.step, message: e.message, hint: e.hint }
}
console.log(JSON.stringify({ parentRefused: p.cgroupHost.parentRefused, canCreate: p.cgroupHost.canCreate, free: free.stdout, err }))
`

// On cgroup v1 or hybrid hosts the limits are v1's: any parent is refused. On v2, one beside
// this process's cgroup (or below the root it is in).
const notAbove = mode === 'v2' ? (own === '/' ? `/isolate-not-above-${process.pid}` : `${dirname(own)}/isolate-not-above-${process.pid}`) : '/'

test(`a parent that is not this process's cgroup or one above it (${notAbove}), or any on cgroup v1, is refused: limits fail closed naming ISOLATE_CGROUP_PARENT, sandboxes without limits still run`, async (t) => {
  const seen = await inNode(notAbove, refusedBody)
  t.true(seen.parentRefused, 'probe() says the parent was refused')
  t.false(seen.canCreate)
  t.is(seen.free, 'ran\n', 'a sandbox without limits needs no cgroup')
  t.is(seen.err?.name, 'IsolateError', JSON.stringify(seen.err))
  t.is(seen.err.step, 'create_cgroup')
  t.true(seen.err.message.includes(`ISOLATE_CGROUP_PARENT=${notAbove}`), seen.err.message)
  t.regex(seen.err.message, mode === 'v2' ? /nor one above it/ : /cgroup v1/)
  t.regex(seen.err.hint, /ISOLATE_CGROUP_PARENT/)
})

test('a parent that is no cgroup path is refused as such', async (t) => {
  const seen = await inNode('relative/path', refusedBody)
  t.true(seen.parentRefused)
  t.regex(seen.err.message, /ISOLATE_CGROUP_PARENT=relative\/path is not a cgroup path/)
})

test('probe() names a delegated parent above this process\'s cgroup beneath which every limit would hold, where some fail closed, and isolate doctor says to set it', async (t) => {
  // The delegated lane's parent (not the root: the hierarchy's root is never named).
  const expected = usableParent !== undefined && usableParent !== '/' ? usableParent : null
  t.is(host.cgroupHost?.parentWouldHold ?? null, expected)
  const doctor = await cli(['doctor'])
  t.is(doctor.stdout.includes(`set ISOLATE_CGROUP_PARENT=${expected}`), expected !== null, doctor.stdout)
  // That one fix alone: the general hints, weighing the caller's own cgroup, contradicted it.
  const cgroupFixes = doctor.stdout.split('\n').filter((l) => /^\s+fix: /.test(l) && /cgroup/.test(l))
  if (expected !== null) t.is(cgroupFixes.length, 1, cgroupFixes.join('\n'))
})

const where = usableParent === undefined ? test.skip : test
if (usableParent === undefined) {
  console.log(`cgroup-parent.test: limits beneath a parent are not tried here: this ${mode} host has no cgroup v2 parent above this process (${own}) that holds no process; the cgroup v2 lane's boots try them`)
}

where(`beneath a parent above this process's cgroup that holds no process (${usableParent}), memory and pids limits hold, in a sandbox cgroup made there and removed after its end`, async (t) => {
  const parent = usableParent!
  const seen = await inNode(
    parent,
    `
const { readFileSync } = await import('node:fs')
const p = await api.probe()
const mem = await api.runIsolated('/usr/bin/python3', ['-c', 'x = []\\nwhile True: x.append(bytearray(1 << 20))'], { limits: { memoryBytes: 64 << 20 } })
const pids = await api.runIsolated('/bin/sh', ['-c', 'n=0; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 3 & n=$((n+1)); done; wait; echo started $n'], { limits: { pids: 6 } })
const sb = await api.spawnIsolated('/bin/sleep', ['30'], { limits: { memoryBytes: 64 << 20 } })
const cgroup = readFileSync('/proc/' + sb.pid + '/cgroup', 'utf8')
sb.kill('SIGKILL')
await sb.wait()
console.log(JSON.stringify({ unified: p.cgroupHost.unified, refused: p.cgroupHost.refused, mem: mem.reason, pids: pids.stderr, pidsOut: pids.stdout, cgroup }))
`,
  )
  t.true(seen.unified.fromEnv)
  t.is(seen.unified.ownPath, parent)
  t.deepEqual(seen.refused, [], 'no limit fails closed beneath the parent')
  t.is(seen.mem, 'oom', 'the memory limit ended the allocation')
  t.regex(seen.pids, /fork|Resource temporarily unavailable|Cannot/i, `the pids limit refused a process: ${seen.pidsOut}`)
  t.regex(seen.cgroup, new RegExp(`^0::${parent === '/' ? '' : parent}/isolate-`, 'm'), 'the command ran in a sandbox cgroup beneath the parent')
  const made = /^0::(.*)$/m.exec(seen.cgroup)![1]
  t.false(existsSync(join('/sys/fs/cgroup', made)), `the sandbox cgroup ${made} was removed`)
})

// Root at the hierarchy's root of a cgroup v2 host (the v2 lane's root boot): a root service as
// systemd runs one with Delegate=yes and DelegateSubgroup=main, its processes in <service>/main.
const rootAtV2Root = mode === 'v2' && own === '/' && process.getuid!() === 0

/**
 * Node code that starts sandboxes with memory, pids and cpu limits, from the warm pool and cold,
 * then a memory bomb; prints its own cgroup, the probe's view, each sandbox's cgroup with its
 * memory.max, and the bomb's reason.
 */
const limitsBeneath = `
const { readFileSync } = await import('node:fs')
const own = readFileSync('/proc/self/cgroup', 'utf8').trim()
const p = await api.probe()
const limits = { memoryBytes: 64 << 20, pids: 16, cpus: 0.5 }
const cgroupOf = async (options) => {
  const sb = await api.spawnIsolated('/bin/sleep', ['30'], { limits, ...options })
  const cg = readFileSync('/proc/' + sb.pid + '/cgroup', 'utf8').trim()
  const max = readFileSync('/sys/fs/cgroup' + cg.slice(3) + '/memory.max', 'utf8').trim()
  sb.kill('SIGKILL')
  await sb.wait()
  return { cg, max }
}
const runs = []
// The pool's helpers are ready a moment after the first start.
for (let i = 0; i < 3; i++) {
  runs.push(await cgroupOf({}))
  await new Promise((r) => setTimeout(r, 2000))
}
api.configurePool({ size: 0 })
runs.push(await cgroupOf({}))
const mem = await api.runIsolated('/usr/bin/python3', ['-c', 'x = []\\nwhile True: x.append(bytearray(1 << 20))'], { limits })
console.log(JSON.stringify({ own, unified: p.cgroupHost.unified, refused: p.cgroupHost.refused, runs, mem: mem.reason }))
`
if (!rootAtV2Root) console.log(`cgroup-parent.test: a root service in a leaf of its own cgroup is tried where root is at a cgroup v2 hierarchy's root (the v2 lane's root boot), not on this ${mode} host as uid ${process.getuid!()} in ${own}`)

;(rootAtV2Root ? test : test.skip)('a root service in a leaf of its cgroup (systemd DelegateSubgroup=) naming that cgroup: its sandboxes, from the warm pool and cold, have every limit there, and leave nothing in it', async (t) => {
  // Not named isolate-*: the other test files here count those beneath the root as sandbox cgroups.
  const service = `/service-of-cgroup-parent-test-${process.pid}`
  const dir = join('/sys/fs/cgroup', service)
  mkdirSync(join(dir, 'main'), { recursive: true })
  try {
    // The shell moves itself into the leaf, then becomes Node there.
    const seen = await inNode(service, limitsBeneath, { script: 'echo $$ > "$0/cgroup.procs" && exec "$@"', arg: join(dir, 'main') })
    t.is(seen.own, `0::${service}/main`, 'the service\'s Node process runs in its leaf')
    t.true(seen.unified.fromEnv)
    t.deepEqual(seen.refused, [], 'no limit fails closed beneath the service\'s cgroup')
    for (const r of seen.runs) {
      t.regex(r.cg, new RegExp(`^0::${service}/isolate-`), 'each sandbox cgroup is made beneath the service\'s cgroup')
      t.is(r.max, String(64 << 20), 'with its memory limit')
    }
    t.is(seen.mem, 'oom')
    t.deepEqual(readdirSync(dir).filter((n) => n.startsWith('isolate-')), [], 'the Node process gone, no sandbox cgroup is left in the service\'s cgroup')
  } finally {
    for (const d of [join(dir, 'main'), dir]) {
      try {
        rmdirSync(d)
      } catch (e) {
        t.log(`could not remove ${d}: ${(e as Error).message}`)
      }
    }
  }
})

const hasUnshare = spawnSync('unshare', ['--version']).status === 0
if (rootAtV2Root && !hasUnshare) console.log('cgroup-parent.test: unshare(1) (util-linux) is missing: the container of the README recipe cannot be made here')

;(rootAtV2Root && hasUnshare ? test : test.skip)("the README's container recipe: in a cgroup namespace of its own, where the limits fail closed with the recipe as their hint, the entrypoint moves itself into /main and sets ISOLATE_CGROUP_PARENT=/: every limit holds, nothing is left", async (t) => {
  // The container, as a runtime makes it: its cgroup, a cgroup namespace rooted there, and in a
  // mount namespace of its own the cgroupfs mounted as that namespace sees it. (unshare(1) plays
  // the runtime here; the library under test makes no use of it.)
  const container = `/container-of-cgroup-parent-test-${process.pid}`
  const dir = join('/sys/fs/cgroup', container)
  mkdirSync(dir)
  const mountCgroupfs = 'umount -l /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup'
  const runtime = (entrypoint: string) => `echo $$ > "$0/cgroup.procs" && exec unshare --cgroup --mount --propagation private /bin/sh -c '${mountCgroupfs} && ${entrypoint}' entrypoint "$@"`
  try {
    // Without the recipe: the limits fail closed, and their hint is the recipe.
    const before = await inNode('', 'const p = await api.probe()\nconsole.log(JSON.stringify({ own: p.cgroupHost.unified.ownPath, refused: p.cgroupHost.refused }))', { script: runtime('exec "$@"'), arg: dir })
    t.is(before.own, '/', 'Node runs at the root of the container\'s cgroup namespace')
    t.deepEqual(before.refused.map((r: { option: string }) => r.option), ['limits.memoryBytes', 'limits.pids', 'limits.cpus'])
    for (const r of before.refused) t.true(r.hint.includes('echo $$ > /sys/fs/cgroup/main/cgroup.procs') && r.hint.includes('ISOLATE_CGROUP_PARENT=/'), r.hint)
    // The README's entrypoint, as written there.
    const entrypoint = 'mkdir /sys/fs/cgroup/main && echo $$ > /sys/fs/cgroup/main/cgroup.procs && exec "$@"'
    const seen = await inNode('/', limitsBeneath, { script: runtime(entrypoint), arg: dir })
    t.is(seen.own, '0::/main', 'the entrypoint\'s Node runs in /main of its cgroup namespace')
    t.true(seen.unified.fromEnv)
    t.deepEqual(seen.refused, [], 'no limit fails closed beneath the container\'s cgroup')
    for (const r of seen.runs) {
      t.regex(r.cg, /^0::\/isolate-/, 'each sandbox cgroup is made beneath the container\'s root, as the container sees it')
      t.is(r.max, String(64 << 20), 'with its memory limit')
    }
    t.is(seen.mem, 'oom')
    t.deepEqual(readdirSync(dir).filter((n) => n.startsWith('isolate-')), [], 'the Node process gone, no sandbox cgroup is left in the container\'s cgroup')
  } finally {
    // Whatever a failed run left in the container's cgroup goes first (its processes killed).
    const left = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => join(dir, e.name))
    for (const d of [...left, dir]) {
      try {
        if (d !== dir) writeFileSync(join(d, 'cgroup.kill'), '1')
        for (let i = 0; i < 100 && existsSync(d); i++) {
          try {
            rmdirSync(d)
          } catch {
            await new Promise((r) => setTimeout(r, 20))
          }
        }
        if (existsSync(d)) rmdirSync(d)
      } catch (e) {
        t.log(`could not remove ${d}: ${(e as Error).message}`)
      }
    }
  }
})
