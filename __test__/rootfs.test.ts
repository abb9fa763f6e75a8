/** A directory rootfs: the Alpine minirootfs fixture, and a tiny tree the test builds itself. */
import test from 'ava'
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import { configurePool, probe, runIsolated, unpackRootfs, type SpawnOptions } from '../index.js'
import { poolEligible } from '../lib/pool.js'
import { alpineTarball, buildMiniRootfs, isRoot, nodeScript, poolBuiltFor, removeDir, root, startFromPool, tempDir, unpackAlpine, untilQuietMounts } from './helpers.js'

const haveAlpine = existsSync(alpineTarball)
if (!haveAlpine) console.log(`rootfs.test: ${alpineTarball} is absent (a clone outside this workplace); the Alpine tests are skipped for that reason`)
const alpineTest = haveAlpine ? test : test.skip

alpineTest('the Alpine minirootfs runs cat /etc/os-release', async (t) => {
  const dir = unpackAlpine()
  t.teardown(() => removeDir(dir))
  const before = readdirSync(dir).sort()
  const r = await runIsolated('/bin/sh', ['-c', 'cat /etc/os-release; ls /; touch /etc/x 2>&1; ls /lib/ld-musl* '], { rootfs: dir, env: { PATH: '/usr/bin:/bin' } })
  t.is(r.exitCode, 0, r.stderr)
  t.regex(r.stdout, /^NAME="Alpine Linux"$/m)
  t.regex(r.stdout, /^VERSION_ID=3\.22\.1$/m)
  t.regex(r.stdout, /Read-only file system/)
  t.regex(r.stdout, /ld-musl-x86_64/)
  t.deepEqual(readdirSync(dir).sort(), before, 'the rootfs on disk is untouched')
  t.false(existsSync(join(dir, 'etc', 'x')))
})

alpineTest('inside Alpine: own hostname, no host files, busybox tools', async (t) => {
  const dir = unpackAlpine()
  t.teardown(() => removeDir(dir))
  const r = await runIsolated('/bin/sh', ['-c', 'hostname; id -u; ps -o pid,comm | tail -n +2 | wc -l; ls /usr/lib/node_modules 2>&1 | head -1'], { rootfs: dir, hostname: 'alpine-box' })
  const lines = r.stdout.trim().split('\n')
  t.is(lines[0], 'alpine-box')
  t.is(lines[1], '0')
  t.regex(lines[3], /No such file/, 'the host\'s /usr is not visible')
})

test('a file bound over a file the root already has (/etc/hosts, /etc/passwd): the bind is what the command reads, the host\'s root and an image\'s alike', async (t) => {
  const dir = tempDir()
  t.teardown(() => removeDir(dir))
  writeFileSync(join(dir, 'hosts'), '10.9.9.9 custom\n')
  writeFileSync(join(dir, 'passwd'), 'judge:x:0:0::/:/bin/sh\n')
  const mounts: SpawnOptions['mounts'] = ['hosts', 'passwd'].map((f) => ({ type: 'bind', source: join(dir, f), target: `/etc/${f}` }))
  const roots: Array<[string, string | undefined]> = [['host', undefined]]
  if (haveAlpine) roots.push(['alpine', unpackAlpine()])
  for (const [name, rootfs] of roots) {
    if (rootfs) t.teardown(() => removeDir(rootfs))
    const r = await runIsolated('/bin/cat', ['/etc/hosts', '/etc/passwd'], { rootfs, mounts })
    t.is(r.stdout, '10.9.9.9 custom\njudge:x:0:0::/:/bin/sh\n', `${name}: ${r.stderr}`)
  }
})

alpineTest("with the host's network, a root of its own reads the host's /etc/resolv.conf, read-only, where it has a file there or room for one; a symlink there or a caller's mount decides instead", async (t) => {
  const host = readFileSync('/etc/resolv.conf', 'utf8')
  const dir = unpackAlpine()
  t.teardown(() => removeDir(dir))
  const etc = join(dir, 'etc')
  const look = async (options: SpawnOptions) => {
    const script = 'cat /etc/resolv.conf 2>&1; echo x 2>&1 >> /etc/resolv.conf; echo rc=$?; grep " /etc/resolv.conf " /proc/self/mountinfo | cut -d" " -f6'
    const r = await runIsolated('/bin/sh', ['-c', script], { rootfs: dir, ...options })
    t.is(r.exitCode, 0, r.stderr)
    return r.stdout
  }
  // The minirootfs has none, and its read-only root no room: nothing to bind on.
  t.regex(await look({ network: 'host' }), /No such file or directory/)
  // An overlay root has room: the file is made in the throw-away upper layer.
  const overlaid = await look({ network: 'host', overlay: {} })
  t.true(overlaid.startsWith(host), overlaid)
  t.regex(overlaid, /(Read-only file system|Permission denied)\nrc=1\nro,/, "a read-only mount (the host's file is no sandbox user's either)")
  t.false(existsSync(join(etc, 'resolv.conf')), "nothing written to the caller's tree")
  // The pool may build a root ahead for a spec it saw: whether the root has room is decided at
  // each start all the same (a file the rootfs's owner adds later is used at once).
  for (let i = 0; i < 4; i++) t.regex(await look({ network: 'host' }), /No such file or directory/)

  writeFileSync(join(etc, 'resolv.conf'), 'nameserver 192.0.2.1\n')
  chmodSync(join(etc, 'resolv.conf'), 0o644)
  for (const round of ['first', 'again', 'third', 'fourth', 'fifth', 'sixth']) {
    const lent = await look({ network: 'host' })
    t.true(lent.startsWith(host), `${round}: ${lent}`)
    t.regex(lent, /(Read-only file system|Permission denied)\nrc=1\nro,/)
  }
  t.regex(await look({}), /^nameserver 192\.0\.2\.1\n/, 'a network of its own keeps the root\'s file')
  t.is(readFileSync(join(etc, 'resolv.conf'), 'utf8'), 'nameserver 192.0.2.1\n')

  const mine = join(dir, 'mine.conf')
  writeFileSync(mine, 'nameserver 192.0.2.7\n')
  chmodSync(mine, 0o644)
  t.regex(await look({ network: 'host', mounts: [{ type: 'bind', source: mine, target: '/etc/resolv.conf' }] }), /^nameserver 192\.0\.2\.7\n/, "the caller's bind wins")

  rmSync(join(etc, 'resolv.conf'))
  symlinkSync('hosts', join(etc, 'resolv.conf'))
  t.true((await look({ network: 'host' })).startsWith(readFileSync(join(etc, 'hosts'), 'utf8')), 'a symlink in the root is its own choice, left as it is')

  // unpackRootfs leaves an empty file to bind on where the archive has none.
  const unpacked = join(tempDir(), 'rootfs')
  t.teardown(() => removeDir(join(unpacked, '..')))
  await unpackRootfs(alpineTarball, unpacked)
  const r = await runIsolated('/bin/cat', ['/etc/resolv.conf'], { rootfs: unpacked, network: 'host' })
  t.is(r.stdout, host, r.stderr)
  t.is((await runIsolated('/bin/cat', ['/etc/resolv.conf'], { rootfs: unpacked })).stdout, '', 'an empty file with a network of its own')
})

;(haveAlpine && isRoot ? test : test.skip)("with the host's network, a caller's overlay of a tree of root's, whose /etc the sandbox may not write, starts without the host's resolv.conf (it failed at create_mountpoint with EACCES)", async (t) => {
  const dir = unpackAlpine()
  t.teardown(() => removeDir(dir))
  chmodSync(dir, 0o755)
  // As nobody: the tree's owner is no id of its sandbox, and an overlay's new file in /etc needs one.
  const r = await nodeScript(`
    const { runIsolated } = await import(${JSON.stringify(join(root, 'index.ts'))})
    process.setgroups([])
    process.setgid(65534)
    process.setuid(65534)
    const out = []
    for (const network of ['none', 'host']) {
      try {
        const r = await runIsolated('/bin/sh', ['-c', 'cat /etc/resolv.conf 2>&1; echo ok'], { rootfs: ${JSON.stringify(dir)}, overlay: {}, network })
        out.push(network + ': ' + r.stdout)
      } catch (e) { out.push(network + ': ' + e.step + ' ' + e.errno) }
    }
    console.log(JSON.stringify(out))
  `, 60_000)
  t.teardown(() => rmSync('/tmp/tsx-65534', { recursive: true, force: true }))
  t.is(r.status, 0, r.stderr)
  t.deepEqual(JSON.parse(r.stdout.trim().split('\n').pop()!), ['none: cat: can\'t open \'/etc/resolv.conf\': No such file or directory\nok\n', 'host: cat: can\'t open \'/etc/resolv.conf\': No such file or directory\nok\n'])
})
if (!isRoot) console.log("rootfs.test: the overlay of a tree of root's by another caller needs root to make that caller; the root suite runs it")

alpineTest("a tree whose top holds entries named as the setup's own scratch (.isolate-mask, .isolate-mask-dir, .isolate-overlay): the sandbox starts, masks hold, the entries are left out, the scratch area is never shown", async (t) => {
  const dir = unpackAlpine()
  const lower = tempDir('isolate-lower-')
  t.teardown(() => (removeDir(dir), removeDir(lower)))
  writeFileSync(join(dir, '.isolate-mask'), 'tree\n')
  mkdirSync(join(dir, '.isolate-mask-dir'))
  mkdirSync(join(dir, '.isolate-overlay'))
  writeFileSync(join(dir, '.isolate-overlay', 'from-the-tree'), 'tree\n')
  // A caller's overlay mount gives the setup its scratch area (the throw-away upper layers) too.
  const options: SpawnOptions = { rootfs: dir, mounts: [{ type: 'overlay', source: lower, target: '/scratch' }] }
  const r = await runIsolated('/bin/sh', ['-c', 'ls -a /; echo ---; grep -c " /proc/timer_list " /proc/self/mountinfo; echo data > /scratch/f && cat /scratch/f'], options)
  t.is(r.exitCode, 0, r.stderr)
  const [top, rest] = r.stdout.split('---\n')
  for (const name of ['.isolate-mask', '.isolate-mask-dir', '.isolate-overlay']) t.false(top.split('\n').includes(name), `${name} in ${top}`)
  t.true(top.split('\n').includes('etc'))
  t.is(rest, '1\ndata\n', 'a mask still covers /proc/timer_list; the overlay mount works')
  t.deepEqual(readdirSync(lower), [], 'its lower layer untouched')
})

test('a minimal rootfs built from host binaries, with a symlinked top-level entry', async (t) => {
  const dir = buildMiniRootfs()
  t.teardown(() => removeDir(dir))
  writeFileSync(join(dir, 'marker'), 'built by the test\n')
  const r = await runIsolated('/bin/sh', ['-c', 'read x < /marker; echo "$x"; echo *'], { rootfs: dir, env: {} })
  t.is(r.exitCode, 0, r.stderr)
  const [marker, listing] = r.stdout.trim().split('\n')
  t.is(marker, 'built by the test')
  t.true(listing.split(' ').includes('bin') && listing.split(' ').includes('proc') && listing.split(' ').includes('tmp'), listing)
  t.false(listing.split(' ').includes('etc'), 'nothing of the host\'s root')
})

/** The host's mount points (but unbindable ones, which no bind copies), as this process sees them. */
function hostMountPoints(): Set<string> {
  const lines = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter(Boolean)
  return new Set(lines.filter((l) => !/ unbindable /.test(l.split(' - ')[0])).map((l) => l.split(' ')[4]))
}

test.serial('a bind of the host\'s /tmp or / shows the host\'s tree, never the sandbox\'s root in the making, cold and warm alike', async (t) => {
  // The sandbox builds its root on a tmpfs over /tmp in its own mount namespace, and a bind
  // brings the mounts below its source: the host's /tmp, or /, holds that tmpfs.
  const dir = tempDir('isolate-bind-tmp-')
  t.teardown(() => removeDir(dir))
  const name = basename(dir)
  writeFileSync(join(dir, 'marker'), 'from the host\n')
  // The sandbox's root is an unprivileged host uid: let it in, and write.
  chmodSync(dir, 0o777)
  const script = [
    `cat /in/${name}/marker /host/tmp/${name}/marker`,
    `echo "$MODE" > /in/${name}/written-$MODE`,
    'for p in /in/proc/self /in/dev/null /in/etc/passwd /host/tmp/proc/self /host/tmp/dev/null; do test -e $p && echo "sandbox root at $p"; done',
    'echo ---',
    'cut -d" " -f5 /proc/self/mountinfo',
  ].join('; ')
  const options = (mode: string, more: SpawnOptions = {}): SpawnOptions => ({
    env: { MODE: mode },
    mounts: [
      { type: 'bind', source: '/tmp', target: '/in', readonly: false },
      { type: 'bind', source: '/', target: '/host' },
    ],
    ...more,
  })
  const check = (mode: string, r: { code: number | null; out: string }, before: Set<string>) => {
    const after = hostMountPoints()
    const [seen, mounts] = r.out.split('---\n')
    t.is(r.code, 0, `${mode}: ${r.out}`)
    t.is(seen, 'from the host\nfrom the host\n', `${mode}: /in and /host/tmp are the host's /tmp, with nothing of the sandbox's root there`)
    t.is(readFileSync(join(dir, `written-${mode}`), 'utf8'), `${mode}\n`, `${mode}: a read-write bind of /tmp writes into the host's /tmp`)
    // Under /host exactly the host's mount points (the host may have changed during the run):
    // the sandbox's own /proc, /dev, masks and binds are not there a second time.
    const inside = new Set(mounts.split('\n').filter((m) => m === '/host' || m.startsWith('/host/')).map((m) => m.slice('/host'.length) || '/'))
    const underIn = mounts.split('\n').filter((m) => m.startsWith('/in/')).map((m) => `/tmp${m.slice('/in'.length)}`)
    // Other test files may mount and unmount in their own temp dirs (isolate-*) meanwhile: one
    // that came and went during this run is in neither snapshot.
    const others = (m: string) => /^\/tmp\/isolate-[^/]+\//.test(m) && !m.startsWith(`${dir}/`)
    t.deepEqual([...inside].filter((m) => !before.has(m) && !after.has(m) && !others(m)), [], `${mode}: mounts under /host that the host does not have`)
    t.deepEqual([...before].filter((m) => after.has(m) && !inside.has(m)), [], `${mode}: host mounts missing under /host`)
    t.deepEqual(underIn.filter((m) => !before.has(m) && !after.has(m) && !others(m)), [], `${mode}: mounts under /in that the host's /tmp does not have`)
  }

  configurePool({ size: 0 })
  t.teardown(() => configurePool({}))
  for (const [mode, more] of [['cold', {}], ['cold-overlay', { overlay: true }]] as const) {
    const before = hostMountPoints()
    const r = await startFromPool(script, options(mode, more))
    t.false(r.took)
    check(mode, r, before)
  }

  const host = await probe()
  if (!poolEligible(isRoot, host.cgroupHost?.canCreate === true)) {
    t.log('no pool here (lib/pool.ts poolEligible): the warm start, whose binds are trees the helper takes on the host, is not run')
    return
  }
  configurePool({})
  const warmStart = async () => {
    const built = await poolBuiltFor(options('warm'), '/proc/sys')
    const before = hostMountPoints()
    return { built, before, r: await startFromPool(script, options('warm')) }
  }
  // Root's start takes the init made ahead, unless the host unmounted something meanwhile (other files do).
  const { built, before, r } = await untilQuietMounts(warmStart, (w) => !isRoot || w.r.took)
  t.true(built, 'the pool built the root ahead for these options')
  // An ordinary user's helper cannot take a mount tree on the host (open_tree's clone needs
  // CAP_SYS_ADMIN there), so its init made ahead is dismissed and the root built on the start's path.
  if (isRoot) t.true(r.took, 'the warm start took an init whose root was built ahead, the binds attached at its release')
  else t.false(r.took, 'an ordinary user: a fresh init, as the helper could not open the binds on the host')
  check('warm', r, before)
})
