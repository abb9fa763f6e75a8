/** OverlayFS: copy-on-write roots whose lower layers are never modified, kept or thrown away. */
import test from 'ava'
import { createHash } from 'node:crypto'
import { spawn } from 'node:child_process'
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createSandbox, IsolateError, spawnIsolated } from '../index.js'
import { alpineTarball, buildMiniRootfs, isRoot, removeDir, sh, tempDir, unpackAlpine } from './helpers.js'

/** Every entry's path, type, mode, owner, size, inode, mtime and content hash (or link target). */
function manifest(dir: string): string[] {
  const out: string[] = []
  const walk = (rel: string) => {
    const p = join(dir, rel)
    const st = lstatSync(p, { bigint: true })
    let extra = ''
    if (st.isSymbolicLink()) extra = readlinkSync(p)
    else if (st.isFile()) extra = createHash('sha256').update(readFileSync(p)).digest('hex')
    out.push(`${rel} ${st.mode} ${st.uid}:${st.gid} ${st.size} ino=${st.ino} mtime=${st.mtimeNs} ${extra}`)
    if (st.isDirectory()) for (const name of readdirSync(p).sort()) walk(join(rel, name))
  }
  walk('.')
  return out
}

const haveAlpine = existsSync(alpineTarball)
if (!haveAlpine) console.log(`overlay.test: ${alpineTarball} is absent; the Alpine overlay tests are skipped for that reason and run on the test's own rootfs instead`)
const rootfs = () => (haveAlpine ? unpackAlpine() : buildMiniRootfs())
const etcFile = haveAlpine ? '/etc/motd' : '/marker'
const appendFile = haveAlpine ? '/etc/os-release' : '/marker2'

test('overlay: true over a directory rootfs: writes and deletes inside, the tree unchanged byte and inode for inode', async (t) => {
  const dir = rootfs()
  t.teardown(() => removeDir(dir))
  if (!haveAlpine) for (const f of ['marker', 'marker2']) writeFileSync(join(dir, f), 'm\n')
  const before = manifest(dir)
  const r = await sh(`echo new > /etc/written 2>&1 || mkdir -p /etc && echo new > /etc/written; cat /etc/written; rm ${etcFile} && echo deleted; ls ${etcFile} 2>&1; echo more >> ${appendFile} && echo appended`, { rootfs: dir, overlay: true, env: { PATH: '/usr/bin:/bin' } })
  t.regex(r.stdout, /^new$/m, r.stderr)
  t.regex(r.stdout, /^deleted$/m)
  t.regex(r.stdout, /No such file/)
  t.regex(r.stdout, /^appended$/m)
  t.deepEqual(manifest(dir), before)
  const again = await sh(`ls /etc/written 2>&1; cat ${etcFile} >/dev/null && echo present`, { rootfs: dir, overlay: true })
  t.regex(again.stdout, /No such file/, 'a throw-away layer is gone with its sandbox')
  t.regex(again.stdout, /present/)
})

test('overlay with a kept upper: a second sandbox starts from the first one\'s changes', async (t) => {
  const dir = rootfs()
  const upper = tempDir('isolate-upper-')
  t.teardown(() => (removeDir(dir), removeDir(upper)))
  const before = manifest(dir)
  const first = await sh('mkdir -p /data && echo kept > /data/note && echo ok', { rootfs: dir, overlay: { upper } })
  t.is(first.stdout, 'ok\n', first.stderr)
  const second = await sh('cat /data/note', { rootfs: dir, overlay: { upper } })
  t.is(second.stdout, 'kept\n', second.stderr)
  t.deepEqual(manifest(dir), before)
  const fresh = await sh('cat /data/note 2>&1', { rootfs: dir, overlay: true })
  t.regex(fresh.stdout, /No such file/)
})

test("a kept upper where an earlier sandbox put a file on a mount point's way: the next start is refused at create_mountpoint, and the hint points at the kept layer", async (t) => {
  const dir = rootfs()
  const upper = tempDir('isolate-upper-')
  const work = tempDir('isolate-work-')
  t.teardown(() => (removeDir(dir), removeDir(upper), removeDir(work)))
  const options = { rootfs: dir, overlay: { upper }, mounts: [{ type: 'bind' as const, source: work, target: '/job/in', readonly: false }] }
  // The mount point's parent can be renamed (only a mount point itself cannot): a file takes its name.
  const first = await sh('mv /job /job.old && touch /job && echo ok', options)
  t.is(first.stdout, 'ok\n', first.stderr)
  const e = await t.throwsAsync(sh('true', options), { instanceOf: IsolateError })
  t.deepEqual([e?.step, e?.errno, e?.path], ['create_mountpoint', 'ENOTDIR', '/job/in'])
  t.true(e?.hint?.startsWith(`overlay.upper (${upper}) keeps what earlier sandboxes wrote to the root`), e?.hint)
  t.regex(e?.hint ?? '', /a file or a symlink at \/job\/in or above it/)
  // Without the kept layer the same start is told only what a mount point must be.
  const plain = await t.throwsAsync(sh('true', { rootfs: dir, overlay: true, mounts: [{ type: 'bind', source: work, target: '/bin/sh/x' }] }), { instanceOf: IsolateError })
  t.deepEqual([plain?.step, plain?.errno], ['create_mountpoint', 'ENOTDIR'])
  t.false(plain?.hint?.includes('overlay.upper') ?? true, plain?.hint)
})

test('a kept upper serves one sandbox at a time: a second one while the first runs is refused, the next one after its end starts at once', async (t) => {
  const dir = rootfs()
  const upper = tempDir('isolate-upper-')
  t.teardown(() => (removeDir(dir), removeDir(upper)))
  const options = { rootfs: dir, overlay: { upper } }
  const first = await createSandbox(options)
  t.teardown(() => void first.destroy())
  await first.exec('/bin/sh', ['-c', 'echo one > /note'])
  const e = await t.throwsAsync(spawnIsolated('/bin/true', [], options), { instanceOf: IsolateError })
  t.deepEqual([e?.code, e?.step, e?.errno, e?.path], ['ERR_ISOLATE_SETUP', 'mount_overlay', 'EAGAIN', upper])
  t.regex(e?.message ?? '', /kept upper directory of another sandbox that is running/)
  t.regex(e?.hint ?? '', /one sandbox at a time per overlay\.upper/)
  t.is((await first.exec('/bin/cat', ['/note'])).stdout, 'one\n', 'the running one is untouched')
  await first.destroy()
  // A session resumed right after the end (the end is reported once the overlay and its lock are gone).
  for (let i = 0; i < 3; i++) {
    const next = await sh('cat /note; echo again >> /note', options)
    t.is(next.exitCode, 0, next.stderr)
  }
  t.is((await sh('cat /note', options)).stdout, 'one\nagain\nagain\nagain\n')
})

test('a kept upper must exist: a missing one (a typo) is refused, nothing is made on the host', async (t) => {
  const dir = rootfs()
  const base = tempDir('isolate-upper-')
  t.teardown(() => (removeDir(dir), removeDir(base)))
  const missing = join(base, 'no', 'such')
  const e = await t.throwsAsync(sh('true', { rootfs: dir, overlay: { upper: missing } }), { instanceOf: IsolateError })
  t.is(e?.errno, 'ENOENT')
  t.is(e?.path, missing)
  t.regex(e?.hint ?? '', /overlay\.upper/)
  t.false(existsSync(join(base, 'no')), 'no host directory was made')
  writeFileSync(join(base, 'file'), '')
  const notDir = await t.throwsAsync(sh('true', { rootfs: dir, overlay: { upper: join(base, 'file') } }), { instanceOf: IsolateError })
  t.is(notDir?.errno, 'ENOTDIR')
})

test('a kept upper is the caller\'s alone, and a part of it swapped for a symlink is refused, never followed', async (t) => {
  const upper = tempDir('isolate-upper-')
  const victim = tempDir('isolate-victim-')
  t.teardown(() => (removeDir(upper), removeDir(victim)))
  const first = await sh('echo ok', { overlay: { upper } })
  t.is(first.stdout, 'ok\n', first.stderr)
  t.is(statSync(join(upper, 'etc')).mode & 0o777, 0o700, 'a layer is its owner\'s alone: what copy-up keeps (set-id bits) is out of other users\' reach')
  // What the sandbox's own id may do to its layer between two runs: swap a part for a symlink.
  const owned = (p: string) => `${lstatSync(p).uid}:${lstatSync(p).mode & 0o7777}`
  const before = owned(victim)
  removeDir(join(upper, 'etc', 'upper'))
  symlinkSync(victim, join(upper, 'etc', 'upper'))
  const e = await t.throwsAsync(sh('echo ok', { overlay: { upper } }), { instanceOf: IsolateError })
  t.is(e?.errno, 'ELOOP', e?.message)
  t.is(owned(victim), before, 'the directory the symlink named keeps its owner and mode')
  // A path to it through a symlink: whoever may write where the symlink lies could aim it.
  const link = `${upper}-link`
  symlinkSync(upper, link)
  t.teardown(() => removeDir(link))
  const linked = await t.throwsAsync(sh('echo ok', { overlay: { upper: link } }), { instanceOf: IsolateError })
  t.is(linked?.errno, 'ELOOP')
  t.regex(linked?.hint ?? '', /no symlink/)
  // A directory others may write: they could make that swap themselves.
  chmodSync(upper, 0o777)
  const open = await t.throwsAsync(sh('echo ok', { overlay: { upper } }), { instanceOf: IsolateError })
  t.regex(open?.hint ?? '', /no one else may write/)
})

test('the overlay\'s upper and work directories appear nowhere inside', async (t) => {
  const dir = rootfs()
  const upper = tempDir('isolate-upper-')
  t.teardown(() => (removeDir(dir), removeDir(upper)))
  for (const overlay of [true, { upper }]) {
    const r = await sh('cat /proc/self/mountinfo; ls -a /; ls -a /tmp', { rootfs: dir, overlay })
    t.false(r.stdout.includes(upper), 'the kept upper\'s host path')
    t.false(r.stdout.includes('isolate-overlay'), 'the throw-away layer\'s area')
    t.false(/upperdir=\/(?!proc\/self\/fd\/)/.test(r.stdout), 'upperdir only as a descriptor')
  }
})

;(isRoot ? test.serial : test.skip)("a kept upper that another user renames away and replaces with a directory of theirs between the helper's check and the mount is refused (ESTALE), never mounted", async (t) => {
  // Who may write the directory above overlay.upper can rename it: a directory of theirs with
  // every layer, writable by the sandbox, would be its root, and get everything it writes.
  const parent = tempDir('isolate-upper-parent-')
  const [up, theirs, aside] = ['up', 'theirs', 'aside'].map((n) => join(parent, n))
  mkdirSync(up, { mode: 0o700 })
  for (const layer of ['root', 'usr', 'etc', 'opt']) {
    for (const d of [join(theirs, layer), join(theirs, layer, 'upper'), join(theirs, layer, 'work')]) {
      mkdirSync(d, { recursive: true })
      chmodSync(d, 0o777)
    }
  }
  writeFileSync(join(theirs, 'root', 'upper', 'marker'), 'theirs\n')
  chownSync(theirs, 65534, 65534)
  const swap = [[up, aside], [theirs, up], [up, theirs], [aside, up]].map(([a, b]) => `fs.renameSync(${JSON.stringify(a)}, ${JSON.stringify(b)})`).join(';')
  const flipper = spawn(process.execPath, ['-e', `const fs = require('fs'); for (;;) { ${swap} }`], { stdio: 'ignore' })
  t.teardown(async () => {
    flipper.kill('SIGKILL')
    await new Promise((r) => (flipper.exitCode !== null || flipper.signalCode !== null ? r(null) : flipper.once('exit', r)))
    removeDir(parent)
  })
  let refused = 0
  let round = 0
  // Until two starts met the swap after the helper's check (most meet it before, or not at all).
  for (; round < 200 && refused < 2; round++) {
    const r = await sh('cat /marker 2>/dev/null || echo ours', { overlay: { upper: up } }).then((r) => r, (e: unknown) => e as IsolateError)
    if (r instanceof IsolateError) {
      // The helper's own look met theirs (another owner), or no directory (mid-swap); or the
      // init's open, after the helper's check, met another directory than the one checked.
      t.is(r.step, 'mount_overlay', r.message)
      if (r.errno === 'ESTALE') refused++
    } else {
      t.is(r.stdout, 'ours\n', 'never their directory as the root')
    }
  }
  t.log(`${refused} of ${round} starts met the swap between the helper's check and the mount, and were refused`)
  t.true(refused > 0, 'the swap never came between the check and the mount')
})

test('overlay over the host rootfs: /usr is writable inside, the host\'s /usr untouched', async (t) => {
  if (!isRoot) {
    // Unprivileged, the host's root-owned files cannot be idmapped to the sandbox's root (that
    // needs privilege over the host's mounts), so only what the sandbox owns is writable: the
    // top of each layer. Documented in README (Overlay); asserted here as it is.
    const r = await sh('echo x > /usr/top && cat /usr/top; { echo y > /usr/lib/deeper; } 2>&1; echo rc=$?', { overlay: true })
    t.regex(r.stdout, /^x$/m, r.stderr)
    t.regex(r.stdout, /Permission denied/)
    t.false(existsSync('/usr/top'))
    return
  }
  const r = await sh('echo x > /usr/lib/isolate-overlay-test && cat /usr/lib/isolate-overlay-test; rm /usr/bin/env && echo removed; ls /usr/bin/env 2>&1', { overlay: true })
  t.regex(r.stdout, /^x$/m, r.stderr)
  t.regex(r.stdout, /^removed$/m)
  t.false(existsSync('/usr/lib/isolate-overlay-test'))
  t.true(existsSync('/usr/bin/env'))
})

test("on the host's root, a kept upper keeps the root's own new entries too, beside the system directories' changes (they were lost with the sandbox)", async (t) => {
  const upper = tempDir('isolate-upper-')
  t.teardown(() => removeDir(upper))
  const first = await sh('mkdir -p /work && echo w > /work/f && echo r > /f && echo u > /usr/isolate-kept && rm /sbin && echo ok', { overlay: { upper } })
  t.is(first.stdout, 'ok\n', first.stderr)
  // The root's frame (the host's top-level symlinks, the mount points) is made again each time.
  const second = await sh('cat /work/f /f /usr/isolate-kept; readlink /sbin', { overlay: { upper } })
  t.is(second.stdout, 'w\nr\nu\nusr/sbin\n', second.stderr)
  t.false(existsSync('/usr/isolate-kept'), "the host's own /usr is untouched")
  t.false(existsSync('/work/f'), "nothing of it on the host's /")
  const third = await sh('test -e /work/f || echo fresh; ls -d /sbin', { overlay: true })
  t.is(third.stdout, 'fresh\n/sbin\n', 'a throw-away upper starts from the host as it is')
})

test("a kept upper on the host's root decides nothing of the next sandbox's masks or Landlock rules: what an earlier one planted at the placeholders' names, or a symlink where a rule points", async (t) => {
  const upper = tempDir('isolate-upper-')
  t.teardown(() => removeDir(upper))
  const plant = await sh('printf "root:planted\\n" > /.isolate-mask && chmod 666 /.isolate-mask && mkdir /.isolate-mask-dir && ln -s / /work && echo planted', { overlay: { upper } })
  t.is(plant.stdout, 'planted\n', plant.stderr)
  // The placeholders are made where no sandbox reaches: the masks stay empty and sealed.
  const next = await sh('cat /etc/shadow 2>&1; stat -c %a /etc/shadow', { overlay: { upper } })
  t.notRegex(next.stdout, /planted/)
  t.regex(next.stdout, /Permission denied/)
  t.regex(next.stdout, /^0$/m, next.stderr)
  // A symlink in a kept layer is the earlier sandbox's, not the host's: never followed for a rule.
  const ruled = await t.throwsAsync(sh('echo x > /etc/hosts', { overlay: { upper }, landlock: { read: ['/usr', '/etc'], write: ['/work'], exec: ['/usr'] } }), { instanceOf: IsolateError })
  t.like(ruled, { step: 'apply_landlock', errno: 'ELOOP', path: '/work' })
  // A setup that fails half way (a mount target through a file) leaves nothing that stops the next.
  const failed = await t.throwsAsync(sh('true', { overlay: { upper }, mounts: [{ type: 'tmpfs', target: '/etc/hostname/x' }] }), { instanceOf: IsolateError })
  t.is(failed?.errno, 'ENOTDIR')
  t.is((await sh('echo fine', { overlay: { upper } })).stdout, 'fine\n')
})

test("overlay sizeBytes is one bound on everything the sandbox writes to its root: an overlaid system directory and the host root's own entries together", async (t) => {
  const script = 'for p in /usr/big /big /new/big; do mkdir -p "${p%/big}"; head -c 3000000 /dev/zero > "$p"; echo "$p rc=$? size=$(stat -c %s "$p")"; rm -f "$p"; done 2>&1'
  const r = await sh(script, { overlay: { sizeBytes: 1 << 20 } })
  for (const p of ['/usr/big', '/big', '/new/big']) {
    const [, rc, size] = new RegExp(`^${p} rc=(\\d+) size=(\\d+)$`, 'm').exec(r.stdout) ?? []
    t.not(rc, '0', `${p}: the write of 3 MB past a 1 MiB bound failed (${r.stdout})`)
    t.true(Number(size) <= 1 << 20, `${p}: at most the bound was written (${size})`)
  }
  t.regex(r.stdout, /No space left on device/)
  t.false(existsSync('/usr/big'))
  // 700 kB in the root's own entries leaves less than 700 kB for /usr.
  const together = await sh('head -c 700000 /dev/zero > /a && echo a-ok; head -c 700000 /dev/zero > /usr/b 2>&1; echo b=$?', { overlay: { sizeBytes: 1 << 20 } })
  t.regex(together.stdout, /^a-ok$/m, together.stderr)
  t.regex(together.stdout, /^b=1$/m)
})

test('binds keep working over an overlay root, and mounts accept an overlay of a host directory', async (t) => {
  const dir = rootfs()
  const data = tempDir('isolate-data-')
  t.teardown(() => (removeDir(dir), removeDir(data)))
  mkdirSync(join(data, 'sub'))
  writeFileSync(join(data, 'sub', 'f'), 'host\n')
  chmodSync(data, 0o755)
  const r = await sh('cat /bound/sub/f; echo changed > /view/sub/f && cat /view/sub/f; echo new > /view/new && echo made', {
    rootfs: dir,
    overlay: true,
    mounts: [{ type: 'bind', source: data, target: '/bound' }, { type: 'overlay', source: data, target: '/view' }],
  })
  t.is(r.stdout, 'host\nchanged\nmade\n', r.stderr)
  t.is(readFileSync(join(data, 'sub', 'f'), 'utf8'), 'host\n', 'the overlay mount\'s changes stay inside')
  t.false(existsSync(join(data, 'new')))
})

test('a missing source of an overlay mount fails at mount_overlay, naming the mount', async (t) => {
  const data = tempDir('isolate-data-')
  t.teardown(() => removeDir(data))
  const missing = join(data, 'gone')
  const e = await t.throwsAsync(sh('true', { mounts: [{ type: 'tmpfs', target: '/scratch' }, { type: 'overlay', source: missing, target: '/view' }] }), { instanceOf: IsolateError })
  t.like(e, { step: 'mount_overlay', path: missing, errno: 'ENOENT' })
  t.regex(e?.hint ?? '', /mounts\[1\]\.source/)
})
