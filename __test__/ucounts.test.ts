/**
 * What the kernel counts per user (inotify instances and watches, user namespaces, queued signals,
 * message-queue bytes) it charges to a user namespace's owner as well, in the namespace above. A
 * root caller's sandbox namespace is owned by an id of its own (plan::namespace_owner, from a block
 * of ids no sandbox maps), so a sandbox that uses up such a count uses up its own: not host root's,
 * not another sandbox's.
 */
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { configurePool, createSandbox, probe, runIsolated, spawnIsolated, type Sandbox, type SpawnOptions } from '../index.js'
import { NAMESPACE_OWNER_IDS } from '../lib/probe.js'
import { isRoot, parentOf, poolHeard, poolReady, root, waitUntil, warmHelpersOf } from './helpers.js'

const host = await probe()
const maxInstances = Number(readFileSync('/proc/sys/fs/inotify/max_user_instances', 'utf8'))

/**
 * Open inotify instances until the kernel refuses one; print how many, the errno, and whether the
 * descriptor limit rather than the per-user count could have stopped it; hold them until stdin ends.
 */
const takeAll = [
  'import ctypes, os, resource, sys',
  'soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)',
  'resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))',
  'libc = ctypes.CDLL(None, use_errno=True)',
  'n = 0',
  'while libc.inotify_init1(0) >= 0:',
  '    n += 1',
  'print(n, ctypes.get_errno(), int(len(os.listdir("/proc/self/fd")) >= hard - 1), flush=True)',
  'sys.stdin.read()',
].join('\n')

/** How many inotify instances this process's user could open now (each closed again). */
function hostInstances(): number {
  const r = spawnSync('python3', ['-c', takeAll], { input: '', encoding: 'utf8' })
  return Number(r.stdout.split(' ')[0])
}

/** The host uid that owns the user namespace of `pid` (ioctl NS_GET_OWNER_UID). */
function namespaceOwner(pid: number): number {
  const code = `import fcntl, os, struct; b = bytearray(4); fcntl.ioctl(os.open('/proc/${pid}/ns/user', os.O_RDONLY), 0xb704, b); print(struct.unpack('I', b)[0])`
  const r = spawnSync('python3', ['-c', code], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`NS_GET_OWNER_UID of ${pid}: ${r.stderr}`)
  return Number(r.stdout)
}

/** The sandbox's first line of output, as numbers (what the scripts here print, then wait). */
function firstLine(sb: Sandbox): Promise<number[]> {
  return new Promise((resolve) => {
    let out = ''
    const done = () => resolve(out.trim().split(' ').map(Number))
    sb.stdout!.on('data', (d: Buffer) => (out += d).includes('\n') && done())
    sb.stdout!.on('end', done)
  })
}

/** A sandbox holding every inotify instance it could open, how many that was, and whether its descriptors ran out first. */
async function holding(options: SpawnOptions = {}): Promise<{ sb: Sandbox; took: number; errno: number; outOfFds: boolean }> {
  const sb = await spawnIsolated('/usr/bin/python3', ['-c', takeAll], { ...options, stdio: ['pipe', 'pipe', 'inherit'] })
  const [took, errno, outOfFds] = await firstLine(sb)
  return { sb, took, errno, outOfFds: outOfFds === 1 }
}

async function release(sb: Sandbox) {
  sb.stdin!.end()
  return sb.wait()
}

const EMFILE = 24
const ways = ['cold', 'from an init made ahead', 'from a warm helper, a fresh init (network host does not fit the one made ahead)'] as const

/** Whether the sandbox could use up the per-user count: its descriptor limit is above it. */
function usedUp(t: import('ava').ExecutionContext, r: { took: number; outOfFds: boolean }): boolean {
  if (r.outOfFds) t.log(`the sandbox ran out of descriptors (${r.took} instances) before the per-user count (${maxInstances}): the count itself is not tested here`)
  return !r.outOfFds
}

for (const way of ways) {
  test.serial(`a root caller's sandbox that opens every inotify instance it may leaves root's count whole: its user namespace has an owner of its own (${way})`, async (t) => {
    const options: SpawnOptions = way.includes('network host') ? { network: 'host' } : {}
    if (way === 'cold') configurePool({ size: 0 })
    const start = async () => {
      if (way !== 'cold') {
        const ready = await waitUntil(() => poolReady(), 20_000, 50)
        await poolHeard()
        if (!ready) t.log('the pool was not ready in 20 s: the sandbox may start cold')
      }
      const madeAhead = new Set(warmHelpersOf(process.pid).inits)
      const before = hostInstances()
      const held = await holding(options)
      return { before, held, took: madeAhead.has(parentOf(held.sb.pid)) }
    }
    let { before, held, took } = await start()
    // An init made ahead is, rightly, not used once the host unmounted something its copy of the
    // mount table holds (pool.test does, beside this file): then the pool makes another, and the
    // next try takes that one.
    for (let i = 1; way === 'from an init made ahead' && isRoot && !took && i < 5; i++) {
      t.log(`try ${i}: the sandbox got a fresh init, not one made ahead; trying again`)
      await release(held.sb)
      ;({ before, held, took } = await start())
    }
    const { sb } = held
    try {
      if (way === 'from an init made ahead' && isRoot) t.true(took, 'the sandbox took an init made ahead')
      if (way === 'cold') t.false(took)
      t.is(held.errno, EMFILE, 'the sandbox went on until the kernel refused one')
      const owner = namespaceOwner(sb.pid)
      if (!isRoot) {
        // An ordinary user's namespace can only be its own: the count is shared with the caller.
        t.log(`an ordinary user's sandbox namespace is owned by the caller (${process.getuid!()}): what the kernel counts per user, the sandbox shares with it`)
        t.is(owner, process.getuid!())
        t.is(host.namespaceOwners, null)
        return
      }
      const owners = host.namespaceOwners!
      t.true(owner >= owners && owner < owners + NAMESPACE_OWNER_IDS, `owner ${owner} is one of the owner block's ids (${owners}-${owners + NAMESPACE_OWNER_IDS - 1})`)
      // One id per pid: no two helpers alive at once share an owner, wherever their pids run.
      const helper = parentOf(parentOf(sb.pid))
      t.is(owner, owners + helper, `the owner is the block's id of the helper's pid (${helper})`)
      const mapped = host.sandboxHostIds!.uid
      t.false(owner >= mapped && owner < mapped + 65536, `owner ${owner} is no id the sandboxes map (${mapped}-${mapped + 65535})`)
      if (usedUp(t, held)) t.is(held.took, maxInstances, `the sandbox opened as many as one user may (${maxInstances})`)
      // Within a few of it: other test files running beside this one may open some meanwhile
      // (taken by the sandbox, root would have none left).
      const during = hostInstances()
      t.true(during >= before - 8 && during > 0, `host root may still open about as many as before (${before}: now ${during}) while the sandbox holds ${held.took}`)
    } finally {
      t.is((await release(sb)).exitCode, 0)
      if (way === 'cold') configurePool({})
    }
  })
}

test.serial("two sandboxes at once: each may open as many inotify instances as one user may, neither takes the other's (root's sandboxes)", async (t) => {
  if (!isRoot) {
    t.log("an ordinary user's sandboxes all count as the caller: the kernel offers no other owner to one who may map only its own id")
    const a = await holding()
    t.is(namespaceOwner(a.sb.pid), process.getuid!())
    await release(a.sb)
    return
  }
  const a = await holding()
  const b = await holding()
  try {
    if (usedUp(t, a) && usedUp(t, b)) {
      t.is(a.took, maxInstances)
      t.is(b.took, maxInstances)
    }
    t.not(namespaceOwner(a.sb.pid), namespaceOwner(b.sb.pid), 'each has an owner of its own')
  } finally {
    await release(a.sb)
    await release(b.sb)
  }
})

// Root only: an ordinary user's namespaces are always its own.
const rootOnly = isRoot ? test.serial : test.serial.skip

rootOnly('root without the capabilities a namespace it does not own takes (a container\'s root) still runs sandboxes, in namespaces of its own as before', async (t) => {
  // A Node process whose bounding set (and so, after its exec, its capabilities) lacks
  // CAP_SYS_ADMIN and CAP_SYS_PTRACE, as Docker's default set does.
  const script = `
    const { probe, runIsolated } = await import(${JSON.stringify(join(root, 'index.ts'))})
    const r = await runIsolated('/bin/sh', ['-c', 'cat /proc/self/uid_map; grep CapEff /proc/self/status'])
    console.log(JSON.stringify({ owners: (await probe()).namespaceOwners, code: r.exitCode, out: r.stdout, err: r.stderr }))
  `
  const r = spawnSync('setpriv', ['--bounding-set=-sys_admin,-sys_ptrace', '--inh-caps=-sys_admin,-sys_ptrace', process.execPath, '--import=tsx', '-e', script], { cwd: root, encoding: 'utf8', timeout: 60_000 })
  t.is(r.status, 0, r.stderr)
  const seen = JSON.parse(r.stdout.trim().split('\n').pop()!)
  t.is(seen.owners, null, 'probe() says the namespaces are root\'s here')
  t.is(seen.code, 0, seen.err)
  t.regex(seen.out, new RegExp(`^\\s*0\\s+${host.sandboxHostIds!.uid}\\s+65536$`, 'm'), 'the sandbox maps its ids as ever')
  t.regex(seen.out, /CapEff:\s*0+$/m)
})

rootOnly('without a user namespace, the uid just past the owner block runs and the block\'s last one is refused: the block ends where probe() and the doctor say', async (t) => {
  const owners = host.namespaceOwners
  t.not(owners, null, 'a root caller with every capability has namespace owners here')
  const past = owners! + NAMESPACE_OWNER_IDS
  const r = await runIsolated('/bin/sh', ['-c', 'grep ^Uid: /proc/self/status'], { namespaces: { user: false }, user: { uid: past, gid: past } })
  t.is(r.exitCode, 0, r.stderr)
  t.regex(r.stdout, new RegExp(`^Uid:\\s+${past}\\s+${past}\\s`))
  const refused = await t.throwsAsync(runIsolated('/bin/true', [], { namespaces: { user: false }, user: { uid: past - 1, gid: past } }))
  t.regex(refused.message, /own the user namespaces/)
})

/**
 * Put descriptors in flight (sent on unix sockets, never received) until the kernel refuses more;
 * print how many and the errno, and hold them until stdin ends. The kernel counts them per host
 * user against the sender's RLIMIT_NOFILE, which this raises to its hard limit.
 */
const putInFlight = [
  'import os, resource, socket, sys',
  'soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)',
  'resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))',
  'fd = os.open("/dev/null", os.O_RDONLY)',
  'pairs, n, err = [], 0, 0',
  'while not err:',
  '    a, b = socket.socketpair()',
  '    pairs.append((a, b))',
  '    a.setblocking(False)',
  '    try:',
  '        while True:',
  '            socket.send_fds(a, [b"x"], [fd] * 253)',
  '            n += 253',
  '    except BlockingIOError:',
  '        pass',
  '    except OSError as e:',
  '        err = e.errno',
  'print(n, err, flush=True)',
  'sys.stdin.read()',
].join('\n')

/** One descriptor sent on a fresh socket pair: 0, or the errno that refused it. */
const sendOne = 'import os, socket\na, b = socket.socketpair()\ntry:\n    socket.send_fds(a, [b"x"], [os.open("/dev/null", os.O_RDONLY)]); print(0)\nexcept OSError as e:\n    print(e.errno)'

const ETOOMANYREFS = 109

// The two tests below fill the count of the host id every root caller's sandbox runs as, for as
// long as each takes (about a second): sandboxes of other test files running meanwhile cannot
// pass descriptors then (none of this suite's do; their terminals are taken, not sent).

rootOnly("a sandbox that fills its host user's count of descriptors in flight keeps no other sandbox of root's from its terminal: the helper takes it from the init (pidfd_getfd)", async (t) => {
  const victim = await createSandbox()
  const hog = await spawnIsolated('/usr/bin/python3', ['-c', putInFlight], { stdio: ['pipe', 'pipe', 'inherit'] })
  try {
    const [n, errno] = await firstLine(hog)
    t.is(errno, ETOOMANYREFS, `the hog went on until the kernel refused more in flight (${n} sent)`)
    // Every sandbox of root's is the same host user: another one's own send is refused now.
    const control = await runIsolated('/usr/bin/python3', ['-c', sendOne])
    t.is(control.stdout.trim(), String(ETOOMANYREFS), "another sandbox's own SCM_RIGHTS send is refused while the hog holds the count")
    const one = await runIsolated('/bin/sh', ['-c', 'test -t 0 && echo on a terminal'], { tty: true })
    t.is(one.exitCode, 0, one.stderr)
    t.regex(one.stdout, /on a terminal/, 'a new sandbox still gets its terminal')
    const exec = await victim.exec('/bin/sh', ['-c', 'test -t 0 && echo on a terminal'], { tty: true })
    t.is(exec.exitCode, 0, exec.stderr)
    t.regex(exec.stdout, /on a terminal/, "an exec of a long-lived sandbox still gets its terminal")
  } finally {
    hog.stdin!.end()
    await hog.wait()
    await victim.destroy()
  }
})

rootOnly("where the helper may not take a terminal either (root without CAP_SYS_PTRACE), a tty start or exec beside a sandbox that fills the count fails at open_pty with ETOOMANYREFS and a hint, the sandbox living on", async (t) => {
  const script = `
    const api = await import(${JSON.stringify(join(root, 'index.ts'))})
    const hog = await api.spawnIsolated('/usr/bin/python3', ['-c', ${JSON.stringify(putInFlight)}], { stdio: ['pipe', 'pipe', 'inherit'] })
    await new Promise((resolve) => { let out = ''; hog.stdout.on('data', (d) => (out += d).includes('\\n') && resolve()); hog.stdout.on('end', resolve) })
    const box = await api.createSandbox()
    const seen = {}
    const failure = (e) => ({ code: e.code, step: e.step, errno: e.errno, hint: e.hint })
    seen.exec = await box.exec('/bin/true', [], { tty: true }).then(() => 'ran', failure)
    seen.one = await api.runIsolated('/bin/true', [], { tty: true }).then(() => 'ran', failure)
    seen.after = (await box.exec('/bin/echo', ['alive'])).stdout
    hog.stdin.end()
    await hog.wait()
    await box.destroy()
    console.log(JSON.stringify(seen))
  `
  const r = spawnSync('setpriv', ['--bounding-set=-sys_ptrace', '--inh-caps=-sys_ptrace', process.execPath, '--import=tsx', '-e', script], { cwd: root, encoding: 'utf8', timeout: 60_000 })
  t.is(r.status, 0, r.stderr)
  const seen = JSON.parse(r.stdout.trim().split('\n').pop()!)
  for (const what of ['exec', 'one']) {
    t.like(seen[what], { code: 'ERR_ISOLATE_SETUP', step: 'open_pty', errno: 'ETOOMANYREFS' }, what)
    t.regex(seen[what].hint ?? '', /per host user/, what)
  }
  t.is(seen.after, 'alive\n', 'the long-lived sandbox lives on')
})
