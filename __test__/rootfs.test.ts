/** A directory rootfs: the Alpine minirootfs fixture, and a tiny tree the test builds itself. */
import test from 'ava'
import { existsSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { runIsolated } from '../index.js'
import { alpineTarball, buildMiniRootfs, removeDir, unpackAlpine } from './helpers.js'

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
