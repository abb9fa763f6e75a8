/**
 * Root filesystems from tarballs and OCI/Docker images: `unpackRootfs`, `importImage` and
 * `isolate rootfs unpack|import`. Every archive except the Alpine fixture is built here, at run
 * time: hostile tarballs by a small tar writer below, images by hand (blobs, index, manifests).
 * Runs as root and, in CI, again as an unprivileged user (ISOLATE_TEST_ROOTLESS=1).
 */
import test, { type ExecutionContext } from 'ava'
import { execFile, execFileSync, spawn, spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, renameSync, rmdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { gunzipSync, gzipSync } from 'node:zlib'
import { IsolateError, importImage, runIsolated, unpackRootfs, type ImportResult, type UnpackProgress } from '../index.js'
import { alpineTarball, isRoot, nodeScript, removeDir, startFixture, tempDir, waitUntil, zombieChildren } from './helpers.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const haveAlpine = existsSync(alpineTarball)
if (!haveAlpine) console.log(`image.test: ${alpineTarball} is absent (a clone outside this workplace); the tests that unpack the Alpine fixture are skipped for that reason`)
const alpineTest = haveAlpine ? test : test.skip
const alpineSerial = haveAlpine ? test.serial : test.skip

/** A command's stdout, without blocking the event loop (xz takes seconds; other tests' I/O goes on). */
async function output(cmd: string, args: string[]): Promise<Buffer> {
  const { stdout } = await promisify(execFile)(cmd, args, { encoding: 'buffer', maxBuffer: 1 << 30 })
  return stdout
}

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0
}
const tools = { xz: have('xz'), zstd: have('zstd'), unshare: have('unshare'), python3: have('python3') }
for (const [name, ok] of Object.entries(tools)) {
  if (!ok) console.log(`image.test: the '${name}' command is missing (apt-get install -y ${name === 'unshare' ? 'util-linux' : name}); the tests that need it are skipped for that reason`)
}

/** A tree removed even where the archive made directories read-only (rootless cannot write into them). */
function removeTree(dir: string): void {
  spawnSync('chmod', ['-R', 'u+rwX', dir])
  removeDir(dir)
}

function workspace(t: ExecutionContext, prefix = 'isolate-image-'): string {
  const dir = tempDir(prefix)
  t.teardown(() => removeTree(dir))
  return dir
}

// ---------------------------------------------------------------------------------------------
// A tar writer (ustar, with PAX records for long names), enough to build any entry by hand.

interface TarEntry {
  name: string
  type?: 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo'
  mode?: number
  uid?: number
  gid?: number
  mtime?: number
  data?: string | Buffer
  linkname?: string
  devmajor?: number
  devminor?: number
}

const TYPEFLAG = { file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' } as const

function octal(n: number, width: number): string {
  return `${n.toString(8).padStart(width - 1, '0')}\0`
}

function header(fields: { name: string; mode: number; uid: number; gid: number; size: number; mtime: number; type: string; linkname: string; devmajor: number; devminor: number }): Buffer {
  const h = Buffer.alloc(512)
  const put = (s: string | Buffer, off: number, len: number) => (typeof s === 'string' ? Buffer.from(s) : s).copy(h, off, 0, len)
  put(fields.name, 0, 100)
  put(octal(fields.mode, 8), 100, 8)
  put(octal(fields.uid, 8), 108, 8)
  put(octal(fields.gid, 8), 116, 8)
  put(octal(fields.size, 12), 124, 12)
  put(octal(fields.mtime, 12), 136, 12)
  put('        ', 148, 8)
  put(fields.type, 156, 1)
  put(fields.linkname, 157, 100)
  put('ustar\0', 257, 6)
  put('00', 263, 2)
  put(octal(fields.devmajor, 8), 329, 8)
  put(octal(fields.devminor, 8), 337, 8)
  let sum = 0
  for (const b of h) sum += b
  put(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8)
  return h
}

function pad(data: Buffer): Buffer {
  const rest = data.length % 512
  return rest === 0 ? data : Buffer.concat([data, Buffer.alloc(512 - rest)])
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`
  let len = body.length + 1
  while (`${len}${body}`.length !== len) len = `${len}${body}`.length
  return `${len}${body}`
}

function tar(entries: TarEntry[]): Buffer {
  const out: Buffer[] = []
  for (const e of entries) {
    const type = e.type ?? 'file'
    const data = type === 'file' ? Buffer.from(e.data ?? '') : Buffer.alloc(0)
    const linkname = e.linkname ?? ''
    const pax = (Buffer.byteLength(e.name) > 100 ? paxRecord('path', e.name) : '') + (Buffer.byteLength(linkname) > 100 ? paxRecord('linkpath', linkname) : '')
    const common = { uid: e.uid ?? 0, gid: e.gid ?? 0, mtime: e.mtime ?? 1_700_000_000, devmajor: e.devmajor ?? 0, devminor: e.devminor ?? 0 }
    if (pax) {
      const body = Buffer.from(pax)
      out.push(header({ ...common, name: 'PaxHeader', mode: 0o644, size: body.length, type: 'x', linkname: '' }), pad(body))
    }
    const mode = e.mode ?? (type === 'dir' ? 0o755 : type === 'symlink' ? 0o777 : 0o644)
    out.push(header({ ...common, name: e.name.slice(0, 100), mode, size: data.length, type: TYPEFLAG[type], linkname: linkname.slice(0, 100) }), pad(data))
  }
  out.push(Buffer.alloc(1024))
  return Buffer.concat(out)
}

// ---------------------------------------------------------------------------------------------
// What a tree holds, read without following any symlink.

interface Node {
  type: 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket'
  mode: number
  uid: number
  gid: number
  size: number
  mtime: number
  ino: number
  nlink: number
  target?: string
  rdev?: number
}

function manifest(dir: string): Map<string, Node> {
  const out = new Map<string, Node>()
  const walk = (rel: string) => {
    const st = lstatSync(join(dir, rel))
    const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isCharacterDevice() ? 'char' : st.isBlockDevice() ? 'block' : st.isFIFO() ? 'fifo' : 'socket'
    const node: Node = { type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, size: type === 'file' ? st.size : 0, mtime: Math.floor(st.mtimeMs / 1000), ino: st.ino, nlink: st.nlink }
    if (type === 'symlink') node.target = readlinkSync(join(dir, rel))
    if (type === 'char' || type === 'block') node.rdev = st.rdev
    out.set(rel, node)
    if (type === 'dir') for (const name of readdirSync(join(dir, rel)).sort()) walk(rel ? `${rel}/${name}` : name)
  }
  walk('')
  return out
}

/** The manifest without inode numbers (comparable across two unpacks). */
function comparable(m: Map<string, Node>): Record<string, Omit<Node, 'ino'>> {
  return Object.fromEntries([...m].map(([k, { ino: _, ...rest }]) => [k, rest]))
}

function perms(n: Node): string {
  const t = { file: '-', dir: 'd', symlink: 'l', char: 'c', block: 'b', fifo: 'p', socket: 's' }[n.type]
  const m = n.mode
  const bit = (mask: number, c: string) => (m & mask ? c : '-')
  const x = (exec: number, special: number, on: string, off: string) => (m & special ? (m & exec ? on : off) : bit(exec, 'x'))
  return t + bit(0o400, 'r') + bit(0o200, 'w') + x(0o100, 0o4000, 's', 'S') + bit(0o40, 'r') + bit(0o20, 'w') + x(0o10, 0o2000, 's', 'S') + bit(0o4, 'r') + bit(0o2, 'w') + x(0o1, 0o1000, 't', 'T')
}

interface Listed {
  perms: string
  uid: number
  gid: number
  size: number
  mtime: number
  name: string
  symlink?: string
  hardlink?: string
}

/** `tar -tv` in a form that can be compared: what GNU tar itself says the archive holds. */
function tarListing(args: string[]): Listed[] {
  const text = execFileSync('tar', ['--numeric-owner', '--full-time', '-tv', ...args], { encoding: 'utf8', env: { ...process.env, TZ: 'UTC' } })
  return text
    .trimEnd()
    .split('\n')
    .map((line) => {
      const m = /^(\S{10})\s+(\d+)\/(\d+)\s+(\d+)\s+(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s(.*)$/.exec(line)
      if (!m) throw new Error(`unexpected tar -tv line: ${line}`)
      let name = m[6]
      let symlink: string | undefined
      let hardlink: string | undefined
      if (m[1][0] === 'l') [name, symlink] = name.split(' -> ')
      if (m[1][0] === 'h') [name, hardlink] = name.split(' link to ')
      const clean = (p: string) => p.replace(/^\.\//, '').replace(/\/$/, '').replace(/^\.$/, '')
      return { perms: m[1], uid: Number(m[2]), gid: Number(m[3]), size: Number(m[4]), mtime: Date.parse(`${m[5].replace(' ', 'T')}Z`) / 1000, name: clean(name), symlink, hardlink: hardlink && clean(hardlink) }
    })
}

/** What an unpack makes of a regular file's mode string, as root or not: no setuid/setgid. */
function withoutSetid(p: string): string {
  if (p[0] !== '-') return p
  const fix = (c: string) => (c === 's' ? 'x' : c === 'S' ? '-' : c)
  return p.slice(0, 3) + fix(p[3]) + p.slice(4, 6) + fix(p[6]) + p.slice(7)
}

/**
 * Every entry of the listing is in the tree as listed, and the tree holds nothing else but an
 * empty etc/resolv.conf where the listing has an etc directory and none (the mount point for the
 * host's, with the host's network).
 */
function checkAgainstListing(t: ExecutionContext, dir: string, listing: Listed[]): void {
  const m = manifest(dir)
  const me = { uid: process.getuid!(), gid: process.getgid!() }
  for (const e of listing) {
    const n = m.get(e.name)
    if (!n) {
      t.fail(`${e.name} is missing`)
      continue
    }
    const what = `${e.name}: ${JSON.stringify(n)} vs ${JSON.stringify(e)}`
    if (e.hardlink !== undefined) {
      t.is(n.ino, m.get(e.hardlink)?.ino ?? -1, `${what}: a hard link shares its target's inode`)
      continue
    }
    t.is(perms(n), withoutSetid(e.perms), what)
    t.deepEqual([n.uid, n.gid], isRoot ? [e.uid, e.gid] : [me.uid, me.gid], `${what}: owner`)
    if (n.type === 'file') t.is(n.size, e.size, `${what}: size`)
    if (n.type === 'symlink') t.is(n.target, e.symlink, `${what}: symlink target`)
    else t.is(n.mtime, e.mtime, `${what}: mtime`)
  }
  const listed = new Set(listing.map((e) => e.name))
  const added = listed.has('etc') && !listed.has('etc/resolv.conf') ? ['etc/resolv.conf'] : []
  t.deepEqual([...m.keys()].filter((k) => !listed.has(k)), added, 'nothing beyond what the archive lists')
  for (const name of added) t.like(m.get(name), { type: 'file', size: 0 }, `${name}: an empty file`)
}

// ---------------------------------------------------------------------------------------------
// Tarballs

alpineTest('the Alpine minirootfs unpacks exactly as tar lists it, with progress', async (t) => {
  const dir = join(workspace(t), 'rootfs')
  const seen: UnpackProgress[] = []
  const r = await unpackRootfs(alpineTarball, dir, { onProgress: (p) => seen.push(p) })
  t.is(r.format, 'gzip')
  t.is(r.dir, dir)
  t.is(r.ownership, isRoot ? 'archive' : 'caller')
  const listing = tarListing(['-zf', alpineTarball])
  t.is(r.entries, listing.length)
  t.is(r.files + r.directories + r.symlinks + r.hardlinks, listing.length)
  checkAgainstListing(t, dir, listing)
  t.regex(r.confinement, /^(landlock \(ABI \d+\)|none: .+)$/)
  t.log(`confinement: ${r.confinement}`)
  t.true(seen.length >= 1)
  const last = seen[seen.length - 1]
  t.is(last.totalBytes, statSync(alpineTarball).size)
  t.is(last.bytes, last.totalBytes)
  t.is(last.entries, listing.length)
  t.true(seen.every((p, i) => p.phase === 'unpack' && (i === 0 || p.bytes >= seen[i - 1].bytes)))
})

alpineSerial("a property set on Object.prototype is never an unpack option (onProgress, specialFiles)", async (t) => {
  const dir = join(workspace(t), 'rootfs')
  const proto = Object.prototype as Record<string, unknown>
  let calls = 0
  proto.onProgress = () => calls++
  proto.specialFiles = 'not an option value'
  try {
    const r = await unpackRootfs(alpineTarball, dir)
    t.true(r.entries > 0)
    t.is(calls, 0, "the prototype's onProgress was called")
  } finally {
    delete proto.onProgress
    delete proto.specialFiles
  }
})

alpineTest('.tar, .tar.xz and .tar.zst unpack to the same tree, told apart by content not name', async (t) => {
  const ws = workspace(t)
  const plain = join(ws, 'alpine.tar')
  writeFileSync(plain, gunzipSync(readFileSync(alpineTarball)))
  const reference = join(ws, 'from-gz')
  await unpackRootfs(alpineTarball, reference)
  const want = comparable(manifest(reference))
  const variants: [string, string, string[] | null][] = [
    ['tar', plain, null],
    ['xz', join(ws, 'alpine-xz.tar.gz'), tools.xz ? ['xz', '-c', plain] : null],
    ['zstd', join(ws, 'alpine-zstd.tgz'), tools.zstd ? ['zstd', '-q', '-c', plain] : null],
  ]
  for (const [format, file, make] of variants) {
    if (make) writeFileSync(file, await output(make[0], make.slice(1)))
    else if (file !== plain) {
      t.log(`${format}: skipped, the ${format} command is missing`)
      continue
    }
    const dir = join(ws, `from-${format}`)
    const r = await unpackRootfs(file, dir)
    t.is(r.format, format as 'tar' | 'xz' | 'zstd', file)
    t.deepEqual(comparable(manifest(dir)), want, `${format} gives the same tree as gzip`)
  }
})

test('modes, owners, set-id bits, hard links, long names, mtimes and read-only directories', async (t) => {
  const ws = workspace(t)
  const archive = join(ws, 'features.tar')
  const long = `long/${'n'.repeat(120)}/${'f'.repeat(90)}`
  writeFileSync(
    archive,
    tar([
      { name: './', type: 'dir', mode: 0o755, mtime: 1_600_000_000 },
      { name: './d/', type: 'dir', mode: 0o750, uid: 1000, gid: 1000, mtime: 1_600_000_001 },
      { name: './d/f', data: 'hello\n', mode: 0o640, uid: 1000, gid: 1000, mtime: 1_600_000_002 },
      { name: './d/h', type: 'hardlink', linkname: './d/f' },
      { name: 'top', type: 'hardlink', linkname: 'd/f' },
      { name: 'abs', type: 'symlink', linkname: '/etc/passwd', mtime: 1_600_000_003 },
      { name: 'up', type: 'symlink', linkname: '../../outside' },
      { name: 'suid-root', data: '#!/bin/sh\n', mode: 0o4755 },
      { name: 'sgid-root', data: '#!/bin/sh\n', mode: 0o2755 },
      { name: 'suid-user', data: '#!/bin/sh\n', mode: 0o4755, uid: 1000 },
      { name: 'sticky/', type: 'dir', mode: 0o1777 },
      { name: 'sgid-dir/', type: 'dir', mode: 0o2775 },
      { name: 'ro/', type: 'dir', mode: 0o555, mtime: 1_600_000_004 },
      { name: 'ro/inside', data: 'x' },
      { name: 'implicit/sub/file', data: 'made without its parents' },
      { name: long, data: 'a long name' },
      { name: 'empty', data: '' },
      { name: 'dup', data: 'one' },
      { name: 'dup', data: 'two' },
      { name: '.wh.plain', data: 'an ordinary file in a plain tarball' },
    ]),
  )
  const dir = join(ws, 'rootfs')
  const r = await unpackRootfs(archive, dir)
  const m = manifest(dir)
  const me = [process.getuid!(), process.getgid!()]
  const f = m.get('d/f')!
  t.is(readFileSync(join(dir, 'd/f'), 'utf8'), 'hello\n')
  t.deepEqual([f.mode, f.mtime, f.nlink], [0o640, 1_600_000_002, 3])
  t.is(m.get('d/h')!.ino, f.ino)
  t.is(m.get('top')!.ino, f.ino)
  t.deepEqual([m.get('d')!.mode, m.get('d')!.mtime], [0o750, 1_600_000_001], 'a directory keeps its mtime although files were written into it')
  t.deepEqual([m.get('')!.mode, m.get('')!.mtime], [0o755, 1_600_000_000], './ applies to DIR itself')
  t.deepEqual([m.get('abs')!.target, m.get('abs')!.mtime], ['/etc/passwd', 1_600_000_003], 'a symlink to an absolute path is created, not followed')
  t.is(m.get('up')!.target, '../../outside')
  t.deepEqual([m.get('ro')!.mode, m.get('ro')!.mtime], [0o555, 1_600_000_004])
  t.is(readFileSync(join(dir, 'ro/inside'), 'utf8'), 'x', 'a read-only directory is filled before its mode is set')
  t.is(m.get('sticky')!.mode, 0o1777)
  t.is(m.get('sgid-dir')!.mode, 0o2775, 'a directory keeps its setgid bit: it grants no privilege')
  t.deepEqual([m.get('implicit')!.mode, m.get('implicit/sub')!.mode], [0o755, 0o755], 'directories made for an entry end 0755')
  t.is(readFileSync(join(dir, long), 'utf8'), 'a long name')
  t.is(m.get('empty')!.size, 0)
  t.is(readFileSync(join(dir, 'dup'), 'utf8'), 'two', 'a later entry replaces an earlier one')
  t.true(m.has('.wh.plain'), 'whiteouts mean nothing in a plain tarball')
  t.deepEqual([m.get('suid-root')!.mode, m.get('sgid-root')!.mode, m.get('suid-user')!.mode], [0o755, 0o755, 0o755], 'set-id bits are dropped from every file')
  t.is(r.setidDropped, 3)
  if (isRoot) t.deepEqual([f.uid, f.gid, m.get('suid-root')!.uid, m.get('sgid-root')!.gid], [1000, 1000, 0, 0])
  else for (const [name, n] of m) t.deepEqual([n.uid, n.gid], me, `${name} belongs to the caller`)
  t.deepEqual([r.hardlinks, r.symlinks, r.skipped], [2, 2, 0])
})

/** Each trick: the entries, the entry name the error must carry, and how the message names it. */
test('as root, a setuid-root file in an archive or image is not setuid-root on the host', async (t) => {
  // DIR is on the host: a 0:0 mode 4755 file kept as such would give root to any local user who
  // can reach DIR. Inside a sandbox the bits would grant nothing anyway (no_new_privs, nosuid).
  const ws = workspace(t)
  const entries: TarEntry[] = [
    { name: 'bin/', type: 'dir', mode: 0o755 },
    // A real program, not a script: the kernel ignores set-id bits on scripts.
    { name: 'bin/suid', data: readFileSync('/usr/bin/id'), mode: 0o4755, uid: 0, gid: 0 },
    { name: 'bin/sgid', data: '#!/bin/sh\nid -g\n', mode: 0o2755, uid: 0, gid: 0 },
    { name: 'bin/both', data: '#!/bin/sh\n', mode: 0o6711, uid: 0, gid: 0 },
    { name: 'bin/link', type: 'hardlink', linkname: 'bin/suid' },
  ]
  writeFileSync(join(ws, 'setid.tar'), tar(entries))
  ociLayout(join(ws, 'image'), [{ layers: [layer(entries)] }])
  const unpacked = await unpackRootfs(join(ws, 'setid.tar'), join(ws, 'rootfs'))
  const merged = await importImage(join(ws, 'image'), join(ws, 'merged'))
  const layered = await importImage(join(ws, 'image'), join(ws, 'layered'), { layout: 'layers' })
  for (const [dir, r] of [[join(ws, 'rootfs'), unpacked], [join(ws, 'merged'), merged], [join(ws, 'layered', 'layers', '0'), layered]] as const) {
    const m = manifest(dir)
    t.deepEqual(['suid', 'sgid', 'both', 'link'].map((f) => m.get(`bin/${f}`)!.mode), [0o755, 0o755, 0o711, 0o755], `${dir}: only the set-id bits are gone`)
    if (isRoot) t.deepEqual(['suid', 'sgid', 'both'].map((f) => [m.get(`bin/${f}`)!.uid, m.get(`bin/${f}`)!.gid]), [[0, 0], [0, 0], [0, 0]], `${dir}: the archive's owner is kept`)
    t.is(r.setidDropped, 3)
  }
  if (isRoot) {
    // What a local user who reaches DIR gets from running it on the host: not root.
    chmodSync(ws, 0o755)
    const ran = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', join(ws, 'rootfs', 'bin', 'suid'), '-u'], { encoding: 'utf8' })
    t.is(ran.stdout, '65534\n', ran.stderr)
  }
})

function hostileCases(ws: string): { name: string; entries: TarEntry[]; path: string; message: RegExp }[] {
  const sentinel = join(ws, 'sentinel')
  const victim = join(ws, 'victim')
  return [
    { name: 'dotdot', entries: [{ name: '../sentinel/pwned', data: 'x' }], path: '../sentinel/pwned', message: /'\.\.' component \(path traversal trick\)/ },
    { name: 'dotdot-inside', entries: [{ name: 'a/', type: 'dir' }, { name: 'a/../../sentinel/pwned', data: 'x' }], path: 'a/../../sentinel/pwned', message: /path traversal/ },
    { name: 'absolute', entries: [{ name: `${sentinel}/pwned`, data: 'x' }], path: `${sentinel}/pwned`, message: /absolute path \(absolute-path trick\)/ },
    {
      name: 'symlink-then-file',
      entries: [{ name: 'a', type: 'symlink', linkname: sentinel }, { name: 'a/passwd', data: 'root::0:0::/:/bin/sh\n' }],
      path: 'a/passwd',
      message: /written through the symlink 'a' \(symlink-then-file trick\)/,
    },
    { name: 'relative-symlink', entries: [{ name: 'b', type: 'symlink', linkname: '../sentinel' }, { name: 'b/pwned', data: 'x' }], path: 'b/pwned', message: /through the symlink 'b'/ },
    { name: 'symlink-then-dir', entries: [{ name: 'c', type: 'symlink', linkname: sentinel }, { name: 'c/sub/', type: 'dir' }], path: 'c/sub/', message: /through the symlink 'c'/ },
    {
      name: 'nested-symlink',
      entries: [{ name: 'd/', type: 'dir' }, { name: 'd/l', type: 'symlink', linkname: '../../sentinel' }, { name: 'd/l/deeper/pwned', data: 'x' }],
      path: 'd/l/deeper/pwned',
      message: /through the symlink 'd\/l'/,
    },
    {
      name: 'hardlink-through-symlink',
      entries: [{ name: 'e', type: 'symlink', linkname: ws }, { name: 'h', type: 'hardlink', linkname: 'e/victim' }],
      path: 'h',
      message: /through the symlink 'e' \(symlink trick\)/,
    },
    {
      name: 'hardlink-placed-through-symlink',
      entries: [{ name: 'f', data: 'x' }, { name: 's', type: 'symlink', linkname: sentinel }, { name: 's/h', type: 'hardlink', linkname: 'f' }],
      path: 's/h',
      message: /written through the symlink 's'/,
    },
    { name: 'hardlink-absolute', entries: [{ name: 'h', type: 'hardlink', linkname: victim }], path: 'h', message: /absolute path .* \(hardlink-outside trick\)/ },
    { name: 'hardlink-dotdot', entries: [{ name: 'h', type: 'hardlink', linkname: '../victim' }], path: 'h', message: /leaves the target directory with '\.\.' \(hardlink-outside trick\)/ },
    { name: 'char-device', entries: [{ name: 'dev/', type: 'dir' }, { name: 'dev/mem', type: 'char', devmajor: 1, devminor: 1, mode: 0o666 }], path: 'dev/mem', message: /a character device \(device-node trick\)/ },
    { name: 'block-device', entries: [{ name: 'sda', type: 'block', devmajor: 8, devminor: 0, mode: 0o666 }], path: 'sda', message: /a block device \(device-node trick\)/ },
    { name: 'fifo', entries: [{ name: 'fifo', type: 'fifo' }], path: 'fifo', message: /a fifo/ },
  ]
}

test('a hostile tarball is refused, naming the entry and the trick, and writes nothing outside', async (t) => {
  const names = hostileCases('/nowhere').map((c) => c.name)
  t.is(names.length, 14)
  await Promise.all(
    names.map(async (name) => {
      const ws = workspace(t)
      mkdirSync(join(ws, 'sentinel'))
      writeFileSync(join(ws, 'victim'), 'the victim\n')
      // Each case's entries name this workspace's own sentinel and victim.
      const c = hostileCases(ws).find((h) => h.name === name)!
      writeFileSync(join(ws, 'hostile.tar'), tar(c.entries))
      const e = await t.throwsAsync(unpackRootfs(join(ws, 'hostile.tar'), join(ws, 'rootfs')), { instanceOf: IsolateError }, name)
      t.is(e?.code, 'ERR_ISOLATE_SETUP', name)
      t.is(e?.step, 'check_entry', `${name}: ${e?.message}`)
      t.is(e?.path, c.path, name)
      t.regex(e?.message ?? '', c.message, name)
      t.deepEqual(readdirSync(join(ws, 'sentinel')), [], `${name}: the sentinel beside DIR stays empty`)
      t.deepEqual(readdirSync(ws).sort(), ['hostile.tar', 'sentinel', 'victim'], `${name}: nothing new beside DIR, and DIR, made by the call, is gone again`)
      t.is(statSync(join(ws, 'victim')).nlink, 1, `${name}: no hard link to a file outside`)
      t.is(readFileSync(join(ws, 'victim'), 'utf8'), 'the victim\n')
    }),
  )
})

test('a failed unpack removes the directory it made, and leaves one that was there', async (t) => {
  const ws = workspace(t)
  writeFileSync(join(ws, 'not.tar'), 'not an archive at all\n'.repeat(64))
  const e = await t.throwsAsync(unpackRootfs(join(ws, 'not.tar'), join(ws, 'new')), { instanceOf: IsolateError })
  t.is(e?.code, 'ERR_ISOLATE_SETUP')
  t.false(existsSync(join(ws, 'new')), 'made by the call, gone again')
  mkdirSync(join(ws, 'old'))
  await t.throwsAsync(unpackRootfs(join(ws, 'not.tar'), join(ws, 'old')), { instanceOf: IsolateError })
  t.true(existsSync(join(ws, 'old')), 'there before the call, still there')
  // The directories above it that the call made go too (they stayed), and no further.
  await t.throwsAsync(unpackRootfs(join(ws, 'not.tar'), join(ws, 'old', 'n1', 'n2', 'n3')), { instanceOf: IsolateError })
  t.false(existsSync(join(ws, 'old', 'n1')), 'made by the call above its target, gone again')
  t.true(existsSync(join(ws, 'old')))
  await t.throwsAsync(importImage(join(ws, 'not.tar'), join(ws, 'i1', 'i2')), { instanceOf: IsolateError })
  t.false(existsSync(join(ws, 'i1')))
  // A path with a lone surrogate would be written with U+FFFD in its place.
  const lone = await t.throwsAsync(unpackRootfs(join(ws, 'not.tar'), join(ws, 'x\uD800')), { instanceOf: IsolateError })
  t.deepEqual([lone?.code, lone?.option], ['ERR_ISOLATE_OPTION', 'dir'])
  t.deepEqual(readdirSync(ws).sort(), ['not.tar', 'old'])
})

test('a failed unpack removes the tree it made however deep, and directories the archive made unreadable', async (t) => {
  const ws = workspace(t)
  // Deeper than a path may be from the target's parent (Node's rm -r met ENAMETOOLONG and left it).
  const levels = Array.from({ length: 2040 }, (_, i) => 'a/'.repeat(i + 1))
  const entries: TarEntry[] = [
    ...levels.map((name) => ({ name, type: 'dir' as const })),
    { name: `${levels.at(-1)}deep`, data: 'x' },
    // What a non-root caller cannot empty without opening it up first.
    { name: 'locked/', type: 'dir', mode: 0o000 },
    { name: 'ro/', type: 'dir', mode: 0o555 },
    { name: 'ro/file', data: 'y' },
    { name: '../escape', data: 'z' },
  ]
  writeFileSync(join(ws, 'deep.tar'), tar(entries))
  const e = await t.throwsAsync(unpackRootfs(join(ws, 'deep.tar'), join(ws, 'new')), { instanceOf: IsolateError })
  t.is(e?.step, 'check_entry', e?.message)
  t.notRegex(e?.message ?? '', /could not be removed/)
  t.false(existsSync(join(ws, 'new')), 'the whole tree the call made is gone')
})

test('a second unpack or import into a directory that one is writing is refused, and leaves the first one whole', async (t) => {
  const ws = workspace(t)
  // The first reads its archive from a FIFO, so it is still writing for as long as this test says.
  const whole = tar([{ name: 'data', data: Buffer.alloc(4 << 20, 0x61) }])
  const fifo = join(ws, 'first.tar')
  await promisify(execFile)('mkfifo', [fifo])
  writeFileSync(join(ws, 'small.tar'), tar([{ name: 'other', data: 'o' }]))
  writeFileSync(join(ws, 'bad.tar'), tar([{ name: 'other', data: 'o' }, { name: '../escape', data: 'z' }]))
  const target = join(ws, 'new')
  const first = unpackRootfs(fifo, target)
  const writer = await open(fifo, 'w')
  await writer.write(whole.subarray(0, 1 << 20))
  t.true(await waitUntil(() => existsSync(join(target, 'data')), 10_000), 'the first one is writing')
  for (const [name, second] of [
    ['an unpack', () => unpackRootfs(join(ws, 'small.tar'), target)],
    ['a failing unpack', () => unpackRootfs(join(ws, 'bad.tar'), target)],
    ['an import', () => importImage(join(ws, 'small.tar'), target)],
  ] as const) {
    const e = await t.throwsAsync(second(), { instanceOf: IsolateError }, name)
    t.deepEqual([e?.step, e?.errno], ['open_archive', 'EBUSY'], `${name}: ${e?.message}`)
    t.regex(e?.hint ?? '', /another unpack or import is writing into this directory/)
  }
  await writer.write(whole.subarray(1 << 20))
  await writer.close()
  const r = await first
  t.is(r.entries, 1)
  t.is(statSync(join(target, 'data')).size, 4 << 20, 'the first one wrote all of its tree, and nothing of it was removed')
  t.deepEqual(readdirSync(target), ['data'])
})

test("a failing unpack that finds its directory made by another call (which finished meanwhile) leaves that call's tree", async (t) => {
  const ws = workspace(t)
  const fifo = join(ws, 'slow.tar')
  await promisify(execFile)('mkfifo', [fifo])
  writeFileSync(join(ws, 'good.tar'), tar([{ name: 'precious', data: 'p' }]))
  const target = join(ws, 'new')
  // The first call saw no directory; its tool waits for its archive before it looks at the target.
  const first = unpackRootfs(fifo, target)
  t.true(await waitUntil(() => toolsFor(fifo).length === 1, 10_000))
  await unpackRootfs(join(ws, 'good.tar'), target)
  const writer = await open(fifo, 'w')
  await writer.write(tar([{ name: '../escape', data: 'z' }]))
  await writer.close()
  const e = await t.throwsAsync(first, { instanceOf: IsolateError })
  t.is(e?.step, 'check_entry')
  t.deepEqual(readdirSync(target), ['precious'], 'the tree of the call that made the directory stays')
})

test('an archive with no entries (an empty file, zeros) is refused, not unpacked as an empty rootfs', async (t) => {
  const ws = workspace(t)
  writeFileSync(join(ws, 'empty.tar'), '')
  writeFileSync(join(ws, 'zeros.tar'), Buffer.alloc(10240))
  for (const name of ['empty.tar', 'zeros.tar']) {
    const e = await t.throwsAsync(unpackRootfs(join(ws, name), join(ws, 'rootfs')), { instanceOf: IsolateError }, name)
    t.deepEqual([e?.code, e?.step], ['ERR_ISOLATE_SETUP', 'read_archive'], name)
    t.regex(e?.message ?? '', /no archive entries/, name)
    t.regex(e?.hint ?? '', /tar archive of a root filesystem/, name)
    t.false(existsSync(join(ws, 'rootfs')), `${name}: the directory the call made is gone again`)
  }
})

test('an archive that breaks is told as such, with a hint: cut short, random bytes (none of them quoted), an entry of a kind no rootfs has, a name longer than a file name may be', async (t) => {
  const ws = workspace(t)
  const common = { mode: 0o644, uid: 0, gid: 0, mtime: 0, linkname: '', devmajor: 0, devminor: 0 }
  const whole = gzipSync(tar([{ name: 'f', data: randomBytes(200_000) }]))
  const cases: Array<[string, Buffer, Record<string, unknown>, RegExp, RegExp]> = [
    ['cut short', whole.subarray(0, whole.length >> 1), { step: 'read_archive' }, /incomplete|unexpected end/, /damaged or incomplete/],
    ['random bytes', randomBytes(10_000), { step: 'read_archive', path: undefined }, /^[\x20-\x7e]*$/, /damaged or incomplete/],
    ['a tape volume label', Buffer.concat([header({ ...common, name: 'vol', size: 0, type: 'V' }), Buffer.alloc(1024)]), { step: 'check_entry', path: 'vol' }, /a type this unpacker does not handle \('V'\)/, /no rootfs/],
    ['a name of 300 bytes', tar([{ name: 'a'.repeat(300), data: 'x' }]), { step: 'write_entry', errno: 'ENAMETOOLONG' }, /too long/, /255 bytes per path component/],
  ]
  for (const [what, bytes, fields, message, hint] of cases) {
    const file = join(ws, `${what.replace(/ /g, '-')}.tar`)
    writeFileSync(file, bytes)
    const e = await t.throwsAsync(unpackRootfs(file, join(ws, 'out')), { instanceOf: IsolateError }, what)
    t.like(e, fields, what)
    t.regex(e?.message.replace(/^cannot unpack \S+: /, '') ?? '', message, what)
    t.regex(e?.hint ?? '', hint, what)
    t.false(existsSync(join(ws, 'out')), what)
  }
})

test('a layers.json that an archive brought is refused, not followed: no host directory becomes a layer', async (t) => {
  const ws = workspace(t)
  const cases: Array<[string, TarEntry[]]> = [
    ['host paths', [{ name: 'layers.json', data: JSON.stringify({ lowerDirs: ['/etc', '/usr'] }) }]],
    ['a way out', [{ name: 'layers.json', data: JSON.stringify({ lowerDirs: ['layers/../../../etc'] }) }]],
    ['a symlinked layer', [{ name: 'layers/', type: 'dir' }, { name: 'layers/1', type: 'symlink', linkname: '/etc' }, { name: 'layers.json', data: JSON.stringify({ lowerDirs: ['layers/1'] }) }]],
    ['a symlinked layers directory', [{ name: 'real/1/', type: 'dir' }, { name: 'layers', type: 'symlink', linkname: '/' }, { name: 'layers.json', data: JSON.stringify({ lowerDirs: ['layers/1'] }) }]],
  ]
  for (const [name, entries] of cases) {
    const dir = join(ws, name.replace(/ /g, '-'))
    writeFileSync(`${dir}.tar`, tar(entries))
    await unpackRootfs(`${dir}.tar`, dir)
    const refused = await t.throwsAsync(runIsolated('/bin/sh', ['-c', 'cat /shadow /etc/shadow'], { rootfs: dir }), { instanceOf: IsolateError }, name)
    t.is(refused?.option, 'rootfs', name)
    t.regex(refused?.message ?? '', /refused rather than followed/, name)
  }
})

alpineTest("a layers.json that is no small regular file is not read as one: a fifo, a symlink, a sparse file of a gigabyte neither block nor fill the caller, and the tree is read as it is", async (t) => {
  const ws = workspace(t)
  const dir = join(ws, 'rootfs')
  await unpackRootfs(alpineTarball, dir)
  // A layer of isolate-image's shape, that a followed manifest would stack as the whole root.
  mkdirSync(join(dir, 'layers', '0'), { recursive: true })
  writeFileSync(join(dir, 'layers', '0', 'only-in-the-layer'), 'x\n')
  const manifest = join(ws, 'manifest.json')
  writeFileSync(manifest, JSON.stringify({ lowerDirs: ['layers/0'] }))
  const fifo = join(ws, 'fifo')
  execFileSync('mkfifo', [fifo])
  const cases: Array<[string, () => void]> = [
    ['a symlink to a manifest', () => symlinkSync(manifest, join(dir, 'layers.json'))],
    ['a symlink to a fifo nobody writes', () => symlinkSync(fifo, join(dir, 'layers.json'))],
    ['a symlink to /dev/zero', () => symlinkSync('/dev/zero', join(dir, 'layers.json'))],
    ['a fifo', () => execFileSync('mkfifo', [join(dir, 'layers.json')])],
    ['a sparse file of 1 GiB', () => execFileSync('truncate', ['-s', '1G', join(dir, 'layers.json')])],
  ]
  for (const [name, make] of cases) {
    rmSync(join(dir, 'layers.json'), { force: true })
    make()
    // In a process of its own: a read that blocks would stall this one, its timers included.
    const r = await nodeScript(
      `import { runIsolated } from './index.ts'
       const r = await runIsolated('/bin/sh', ['-c', 'test -e /etc/alpine-release && test -e /layers/0/only-in-the-layer && echo flat'], { rootfs: ${JSON.stringify(dir)}, timeoutMs: 10000 })
       console.log(JSON.stringify({ out: r.stdout, rss: process.memoryUsage().rss }))`,
      30_000,
    )
    t.false(r.timedOut, `${name}: the start never came back`)
    t.is(r.status, 0, `${name}: ${r.stderr}`)
    const { out, rss } = JSON.parse(r.stdout || '{}')
    t.is(out, 'flat\n', `${name}: the tree as it is, not stacked from layers/0`)
    t.true(rss < 512 << 20, `${name}: the caller's RSS ${rss}`)
  }
})

test('a rootfs or a layer swapped for a symlink after the options were read is refused, not followed: one that may write its directory cannot aim the sandbox at the host', async (t) => {
  const ws = workspace(t)
  // What the sandbox must never see: a host directory, and a whole other tree.
  const secret = join(ws, 'host-secret')
  mkdirSync(secret)
  writeFileSync(join(secret, 'secret'), 'HOST-SECRET\n')
  const other = join(ws, 'other')
  await unpackRootfs(alpineTarball, other)
  writeFileSync(join(other, 'secret'), 'HOST-SECRET\n')
  // An image as layers (Alpine, an empty layer on top), and a flat rootfs.
  const img = join(ws, 'img')
  await unpackRootfs(alpineTarball, join(img, 'layers', '0'))
  mkdirSync(join(img, 'layers', '1'))
  writeFileSync(join(img, 'layers.json'), JSON.stringify({ lowerDirs: ['layers/1', 'layers/0'] }))
  const flat = join(ws, 'flat')
  await unpackRootfs(alpineTarball, flat)
  const cases: Array<[string, string, string]> = [
    ['the top layer, swapped for a host directory', join(img, 'layers', '1'), secret],
    ['the rootfs, swapped for another tree', flat, other],
  ]
  for (const [what, path, to] of cases) {
    const rootfs = path === flat ? flat : img
    let refused = 0
    let round = 0
    // Until two starts met the swap (a loaded machine may let the helper look first many times).
    for (; round < 40 && refused < 2; round++) {
      symlinkSync(to, `${path}.link`)
      const run = runIsolated('/bin/sh', ['-c', 'cat /secret 2>/dev/null; echo ran'], { rootfs })
      // The call has read its options (their checks passed); its helper opens the paths next.
      renameSync(path, `${path}.real`)
      renameSync(`${path}.link`, path)
      const r = await run.then((r) => r, (e: unknown) => e as IsolateError)
      rmSync(path)
      renameSync(`${path}.real`, path)
      if (r instanceof IsolateError && r.errno === 'ENOENT') {
        t.log(`${what}: the helper looked between the two renames`)
      } else if (r instanceof IsolateError) {
        // Whichever open met it: the helper's look, or the init's at the mount.
        t.like(r, { errno: 'ELOOP' }, `${what}: ${r.message}`)
        t.true(['inspect_sources', 'bind_mount', 'mount_overlay'].includes(r.step ?? ''), `${what}: ${r.step}`)
        t.regex(r.hint ?? '', /symlink/, what)
        refused++
      } else {
        t.is((r as { stdout: string }).stdout, 'ran\n', `${what}: the tree the options named, never the host's`)
      }
    }
    t.log(`${what}: ${refused} of ${round} starts saw the swap and were refused; the others opened the paths first`)
    t.true(refused > 0, `${what}: the swap came after the helper had looked, every time`)
  }
})

test('an entry name longer than a path may be is refused at once, named in part: a small archive cannot make a huge report', async (t) => {
  const ws = workspace(t)
  const long = `${'\x01'.repeat(8 << 20)}/../x`
  writeFileSync(join(ws, 'long.tar.gz'), gzipSync(tar([{ name: long, data: 'x' }])))
  t.true(statSync(join(ws, 'long.tar.gz')).size < 64 << 10, 'a small archive')
  // The report was a line of ~50 MB (the name, escaped, twice): 41 s here, the event loop held for 1.6 s at a time.
  const e = await t.throwsAsync(unpackRootfs(join(ws, 'long.tar.gz'), join(ws, 'rootfs')), { instanceOf: IsolateError })
  t.is(e?.step, 'check_entry')
  t.regex(e?.message ?? '', /more than a path may have \(4096\)/)
  t.true((e?.path ?? '').length < 300 && (e?.message ?? '').length < 1000, `path of ${e?.path?.length} characters`)
})

test('a header of gigabytes (a GNU long name, a PAX record) is refused when it passes the unpacker\'s 1 GiB: a small archive cannot take the host\'s memory, and what came before it is removed with the directory the call made', async (t) => {
  const ws = workspace(t)
  // Entries before it: the tree the unpacker had begun (a read-only directory too), which its
  // end at the budget empties as any failure's does.
  const before = gzipSync(tar([{ name: 'd/', type: 'dir' }, ...Array.from({ length: 20 }, (_, i) => ({ name: `d/f${i}`, data: 'x' })), { name: 'ro/', type: 'dir', mode: 0o555 }, { name: 'ro/f', data: 'x' }]).subarray(0, -1024))
  // 1.5 GiB of header data, as 1536 gzip members of 1 MiB each (a stream may hold several).
  const member = gzipSync(Buffer.alloc(1 << 20, 'a'))
  const size = 1536 << 20
  const common = { mode: 0o644, uid: 0, gid: 0, mtime: 0, linkname: '', devmajor: 0, devminor: 0 }
  for (const [kind, type] of [['GNU long name', 'L'], ['PAX record', 'x']]) {
    const file = join(ws, `huge-${type}.tar.gz`)
    const head = gzipSync(header({ ...common, name: '././@LongLink', size, type }))
    writeFileSync(file, Buffer.concat([before, head, ...Array<Buffer>(1536).fill(member), gzipSync(tar([{ name: 'x', data: 'x' }]))]))
    t.true(statSync(file).size < 8 << 20, 'a small archive')
    const e = await t.throwsAsync(unpackRootfs(file, join(ws, `rootfs-${type}`)), { instanceOf: IsolateError })
    t.like(e, { step: 'read_archive', errno: 'ENOMEM' }, kind)
    t.regex(e?.message ?? '', /1 GiB of memory/, kind)
    t.notRegex(e?.message ?? '', /holds what was unpacked/, kind)
    t.false(existsSync(join(ws, `rootfs-${type}`)), `${kind}: the directory the call made is gone, with what was unpacked into it`)
  }
})

test("an archive's ./ gives a directory made for it its mode, but no group or other write and never an owner, and never touches one that was there (the caller's keeps its own)", async (t) => {
  const ws = workspace(t)
  writeFileSync(join(ws, 'open.tar'), tar([{ name: './', type: 'dir', mode: 0o777, uid: 1002, gid: 1002 }, { name: 'd/', type: 'dir', mode: 0o750, uid: 1002, gid: 1002 }, { name: 'f', data: 'x' }]))
  await unpackRootfs(join(ws, 'open.tar'), join(ws, 'new'))
  const top = statSync(join(ws, 'new'))
  t.is(top.mode & 0o7777, 0o755, 'made for it: as tar gives it, less group and other write (they could swap its parts)')
  t.deepEqual([top.uid, top.gid], [process.getuid!(), process.getgid!()], "the top stays the caller's: a host account the archive names would own the tree")
  writeFileSync(join(ws, 'setid.tar'), tar([{ name: './', type: 'dir', mode: 0o7777 }, { name: 'f', data: 'x' }]))
  await unpackRootfs(join(ws, 'setid.tar'), join(ws, 'setid'))
  t.is(statSync(join(ws, 'setid')).mode & 0o7777, 0o1755, 'no set-id bits either (the sticky one stays)')
  const inner = statSync(join(ws, 'new', 'd'))
  t.deepEqual([inner.mode & 0o7777, inner.uid], [0o750, isRoot ? 1002 : process.getuid!()], "below it, the archive's own mode and (as root) owner")
  mkdirSync(join(ws, 'mine'), { mode: 0o750 })
  chmodSync(join(ws, 'mine'), 0o750)
  await unpackRootfs(join(ws, 'open.tar'), join(ws, 'mine'))
  t.is(statSync(join(ws, 'mine')).mode & 0o7777, 0o750, 'there before: its own mode')
  t.is(readFileSync(join(ws, 'mine', 'f'), 'utf8'), 'x')
  // The same for an image whose layer carries ./ (docker save), imported into an empty directory that was there.
  const l = layer([{ name: './', type: 'dir', mode: 0o777 }, { name: 'f', data: 'x' }], 'none')
  const config = configJson({ layers: [l] })
  const configName = `${sha256(config).slice(7)}.json`
  writeFileSync(join(ws, 'image.tar'), tar([{ name: configName, data: config }, { name: 'l0/layer.tar', data: l.tar }, { name: 'manifest.json', data: JSON.stringify([{ Config: configName, RepoTags: ['x:1'], Layers: ['l0/layer.tar'] }]) }]))
  mkdirSync(join(ws, 'empty'), { mode: 0o750 })
  chmodSync(join(ws, 'empty'), 0o750)
  await importImage(join(ws, 'image.tar'), join(ws, 'empty'))
  t.is(statSync(join(ws, 'empty')).mode & 0o7777, 0o750, 'imported into a directory that was there: its own mode')
  t.is(readFileSync(join(ws, 'empty', 'f'), 'utf8'), 'x')
})

test("a target that is a symlink is refused, not followed; so is one that was there but is another user's or others may write", async (t) => {
  const ws = workspace(t)
  writeFileSync(join(ws, 'one.tar'), tar([{ name: 'etc/', type: 'dir' }, { name: 'etc/passwd', data: 'from the archive\n' }]))
  // What a symlink planted where the caller unpacks would aim at: a directory of the caller's.
  mkdirSync(join(ws, 'victim', 'etc'), { recursive: true })
  writeFileSync(join(ws, 'victim', 'etc', 'passwd'), 'ORIG\n')
  symlinkSync(join(ws, 'victim'), join(ws, 'planted'))
  for (const call of [() => unpackRootfs(join(ws, 'one.tar'), join(ws, 'planted')), () => importImage(join(ws, 'one.tar'), join(ws, 'planted'))]) {
    const e = await t.throwsAsync(call(), { instanceOf: IsolateError })
    t.like(e, { step: 'open_archive', errno: 'ELOOP' })
    t.regex(e?.hint ?? '', /symlink/)
  }
  t.is(readFileSync(join(ws, 'victim', 'etc', 'passwd'), 'utf8'), 'ORIG\n', 'nothing was written through it')
  mkdirSync(join(ws, 'open'))
  chmodSync(join(ws, 'open'), 0o777)
  const open = await t.throwsAsync(unpackRootfs(join(ws, 'one.tar'), join(ws, 'open')), { instanceOf: IsolateError })
  t.like(open, { step: 'open_archive' })
  t.regex(open?.message ?? '', /not this caller's alone .*mode 777/)
  t.deepEqual(readdirSync(join(ws, 'open')), [], 'nothing was written there')
  if (isRoot) {
    mkdirSync(join(ws, 'theirs'))
    chownSync(join(ws, 'theirs'), 65534, 65534)
    const theirs = await t.throwsAsync(importImage(join(ws, 'one.tar'), join(ws, 'theirs')), { instanceOf: IsolateError })
    t.regex(theirs?.message ?? '', /not this caller's alone \(owner uid 65534/)
    t.deepEqual(readdirSync(join(ws, 'theirs')), [], 'nothing was written there')
  } else {
    t.log('another user\'s directory: only root can make one to try (the mode case above holds for every caller)')
  }
})

test('runs of zeros are written as holes: a small archive cannot fill the disk, and every file reads back the same', async (t) => {
  const ws = workspace(t)
  const zeros = Buffer.alloc(32 << 20)
  const mixed = Buffer.concat([Buffer.alloc(1 << 20), Buffer.from('data in the middle\n'), Buffer.alloc(3 << 20)])
  writeFileSync(join(ws, 'holes.tar.gz'), gzipSync(tar([{ name: 'zeros', data: zeros }, { name: 'mixed', data: mixed }, { name: 'plain', data: 'x' }])))
  await unpackRootfs(join(ws, 'holes.tar.gz'), join(ws, 'rootfs'))
  const z = statSync(join(ws, 'rootfs', 'zeros'))
  t.is(z.size, zeros.length)
  t.true(z.blocks * 512 < 1 << 20, `${z.blocks * 512} bytes on disk for ${z.size}`)
  t.deepEqual(createHash('sha256').update(readFileSync(join(ws, 'rootfs', 'zeros'))).digest(), createHash('sha256').update(zeros).digest())
  t.true(readFileSync(join(ws, 'rootfs', 'mixed')).equals(mixed), 'a file that ends in a hole keeps its size and its data')
  t.is(readFileSync(join(ws, 'rootfs', 'plain'), 'utf8'), 'x')
})

test('maxBytes and maxEntries bound what an archive writes: up to them it unpacks, one past them is refused (EFBIG) and the directory the call made goes', async (t) => {
  const ws = workspace(t)
  // Runs of zeros are holes on disk, but count at their size: they still take the unpacker's time.
  writeFileSync(join(ws, 'a.tar.gz'), gzipSync(tar([{ name: 'zeros', data: Buffer.alloc(8 << 20) }, { name: 'etc/x', data: 'x' }])))
  // etc/x implies etc: three entries and directories in all.
  const whole = await unpackRootfs(join(ws, 'a.tar.gz'), join(ws, 'at'), { maxBytes: (8 << 20) + 1, maxEntries: 3 })
  t.deepEqual([whole.bytes, whole.entries, whole.impliedDirectories], [(8 << 20) + 1, 2, 1])
  const bytes = await t.throwsAsync(unpackRootfs(join(ws, 'a.tar.gz'), join(ws, 'past-bytes'), { maxBytes: 8 << 20 }), { instanceOf: IsolateError })
  t.deepEqual([bytes?.step, bytes?.errno, bytes?.path], ['write_entry', 'EFBIG', 'etc/x'])
  t.regex(bytes?.message ?? '', /maxBytes/)
  t.regex(bytes?.hint ?? '', /raise it/)
  const entries = await t.throwsAsync(unpackRootfs(join(ws, 'a.tar.gz'), join(ws, 'past-entries'), { maxEntries: 1 }), { instanceOf: IsolateError })
  t.deepEqual([entries?.step, entries?.errno, entries?.path], ['check_entry', 'EFBIG', 'etc/x'])
  t.false(existsSync(join(ws, 'past-bytes')) || existsSync(join(ws, 'past-entries')), 'made by the failed calls, gone again')
  // The directories an entry's path implies take inodes too: one entry, three of them.
  writeFileSync(join(ws, 'deep.tar'), tar([{ name: 'a/b/c/f', data: 'x' }]))
  const deepAt = await unpackRootfs(join(ws, 'deep.tar'), join(ws, 'deep-at'), { maxEntries: 4 })
  t.deepEqual([deepAt.entries, deepAt.impliedDirectories], [1, 3])
  const deep = await t.throwsAsync(unpackRootfs(join(ws, 'deep.tar'), join(ws, 'deep-past'), { maxEntries: 3 }), { instanceOf: IsolateError })
  t.deepEqual([deep?.step, deep?.errno], ['check_entry', 'EFBIG'])
  for (const option of ['maxBytes', 'maxEntries'] as const) {
    for (const bad of [0, -1, 1.5, Infinity, NaN, 2 ** 53, '10']) {
      const e = await t.throwsAsync(unpackRootfs(join(ws, 'a.tar.gz'), join(ws, 'no'), { [option]: bad as number }), { instanceOf: IsolateError })
      t.deepEqual([e?.code, e?.option], ['ERR_ISOLATE_OPTION', option], `${option}: ${bad}`)
    }
  }
  // An image's layers count together: its exact total passes, one byte less is refused.
  ociLayout(join(ws, 'image'), [{ layers: twoLayers() }])
  const all = await importImage(join(ws, 'image'), join(ws, 'img'))
  t.truthy(await importImage(join(ws, 'image'), join(ws, 'img-at'), { maxBytes: all.bytes, maxEntries: all.entries + all.impliedDirectories }))
  const layered = await t.throwsAsync(importImage(join(ws, 'image'), join(ws, 'img-past'), { maxBytes: all.bytes - 1 }), { instanceOf: IsolateError })
  t.deepEqual([layered?.step, layered?.errno], ['write_entry', 'EFBIG'])
  t.regex(layered?.message ?? '', /layer 1/, 'passed in the second layer, each of which alone is under the bound')
  const layeredEntries = await t.throwsAsync(importImage(join(ws, 'image'), join(ws, 'img-past2'), { maxEntries: all.entries + all.impliedDirectories - 1 }), { instanceOf: IsolateError })
  t.deepEqual([layeredEntries?.step, layeredEntries?.errno], ['check_entry', 'EFBIG'])
  t.false(existsSync(join(ws, 'img-past')) || existsSync(join(ws, 'img-past2')))
  // In layout 'layers' the importer's own directories (one per layer) count too.
  const asLayers = await importImage(join(ws, 'image'), join(ws, 'lay'), { layout: 'layers' })
  t.true(asLayers.impliedDirectories >= 2, 'layers/0 and layers/1')
  t.truthy(await importImage(join(ws, 'image'), join(ws, 'lay-at'), { layout: 'layers', maxEntries: asLayers.entries + asLayers.impliedDirectories }))
  const ownDirs = await t.throwsAsync(importImage(join(ws, 'image'), join(ws, 'lay-past'), { layout: 'layers', maxEntries: asLayers.entries + asLayers.impliedDirectories - 1 }), { instanceOf: IsolateError })
  t.deepEqual([ownDirs?.step, ownDirs?.errno], ['check_entry', 'EFBIG'])
  // A compressed image archive is decompressed to a copy first: with maxBytes, that copy may hold
  // twice the bound (and 64 MiB) at most, so a bomb of one repeated byte stops there.
  const bomb = layer([{ name: 'big', data: Buffer.alloc(80 << 20, 1) }], 'none')
  writeFileSync(join(ws, 'bomb.tar.gz'), gzipSync(dockerSave({ layers: [bomb] })))
  const copy = await t.throwsAsync(importImage(join(ws, 'bomb.tar.gz'), join(ws, 'bomb'), { maxBytes: 1 << 20 }), { instanceOf: IsolateError })
  t.deepEqual([copy?.step, copy?.errno], ['read_archive', 'EFBIG'])
  t.regex(copy?.message ?? '', /decompresses to more than 69206016 bytes/)
  t.false(existsSync(join(ws, 'bomb')))
})

test('the literal trick: a -> /etc, then a/passwd', async (t) => {
  // As root a bug here would overwrite the host's /etc/passwd, so this exact form runs where it
  // cannot (the rootless lane); as root the same trick runs above against a sentinel directory.
  if (isRoot) return t.pass('runs in the rootless lane; the sentinel form runs as root')
  const ws = workspace(t)
  const before = readFileSync('/etc/passwd')
  writeFileSync(join(ws, 'etc.tar'), tar([{ name: 'a', type: 'symlink', linkname: '/etc' }, { name: 'a/passwd', data: 'root::0:0::/:/bin/sh\n' }]))
  // There before the call, so the partial tree stays to be looked at (a directory the call made goes).
  mkdirSync(join(ws, 'rootfs'))
  const e = await t.throwsAsync(unpackRootfs(join(ws, 'etc.tar'), join(ws, 'rootfs')), { instanceOf: IsolateError })
  t.is(e?.path, 'a/passwd')
  t.regex(e?.message ?? '', /symlink-then-file trick/)
  t.deepEqual(readFileSync('/etc/passwd'), before)
  t.is(readlinkSync(join(ws, 'rootfs', 'a')), '/etc', 'the symlink itself is made, never followed')
})

test("specialFiles: 'skip' leaves devices and fifos out", async (t) => {
  const ws = workspace(t)
  writeFileSync(
    join(ws, 'dev.tar'),
    tar([
      { name: 'dev/', type: 'dir' },
      { name: 'dev/null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666 },
      { name: 'dev/sda', type: 'block', devmajor: 8, devminor: 0 },
      { name: 'run/initctl', type: 'fifo' },
      { name: 'etc/hostname', data: 'box\n' },
    ]),
  )
  const r = await unpackRootfs(join(ws, 'dev.tar'), join(ws, 'rootfs'), { specialFiles: 'skip' })
  t.is(r.skipped, 3)
  t.deepEqual([...manifest(join(ws, 'rootfs')).keys()].sort(), ['', 'dev', 'etc', 'etc/hostname', 'etc/resolv.conf'], 'a skipped entry makes nothing, not even its parent')
})

test('bad archives and bad options', async (t) => {
  const ws = workspace(t)
  writeFileSync(join(ws, 'x.bz2'), Buffer.from('BZh91AY&SY....'))
  const bz = await t.throwsAsync(unpackRootfs(join(ws, 'x.bz2'), join(ws, 'a')), { instanceOf: IsolateError })
  t.is(bz?.step, 'open_archive')
  t.regex(bz?.message ?? '', /bzip2/)
  writeFileSync(join(ws, 'junk.tar'), Buffer.alloc(2048, 'garbage '))
  const junk = await t.throwsAsync(unpackRootfs(join(ws, 'junk.tar'), join(ws, 'b')), { instanceOf: IsolateError })
  t.is(junk?.step, 'read_archive')
  t.regex(junk?.message ?? '', /not a readable tar archive/)
  // A file that is no archive at all (a password file named by mistake): none of its bytes are quoted.
  writeFileSync(join(ws, 'secret'), `root:x:0:0:${'s3cret'.repeat(30)}\n`)
  const secret = await t.throwsAsync(unpackRootfs(join(ws, 'secret'), join(ws, 'c')), { instanceOf: IsolateError })
  t.is(secret?.step, 'read_archive')
  t.notRegex(JSON.stringify(secret), /root:x|s3cret/)
  const asImage = await t.throwsAsync(importImage(join(ws, 'secret'), join(ws, 'd')), { instanceOf: IsolateError })
  t.is(asImage?.step, 'read_image')
  t.notRegex(JSON.stringify(asImage), /root:x|s3cret/)
  // Bytes of the archive a message quotes reach a terminal or a log: no control character.
  writeFileSync(join(ws, 'noise.tar'), Buffer.from(Array.from({ length: 3072 }, (_, i) => (i * 7919 + 13) % 256)))
  const noise = await t.throwsAsync(unpackRootfs(join(ws, 'noise.tar'), join(ws, 'n')), { instanceOf: IsolateError })
  t.is(noise?.step, 'read_archive')
  t.notRegex(noise?.message ?? '', /[\x00-\x1f\x7f]/, 'control characters escaped')
  writeFileSync(join(ws, 'esc.tar'), tar([{ name: 'x\x1b]0;pwned\x07/../y', data: 'x' }]))
  const esc = await t.throwsAsync(unpackRootfs(join(ws, 'esc.tar'), join(ws, 'm')), { instanceOf: IsolateError })
  t.is(esc?.step, 'check_entry')
  t.notRegex(`${esc?.message}${esc?.path}`, /[\x00-\x1f\x7f]/, 'an entry name with a terminal escape is shown escaped')
  t.regex(esc?.message ?? '', /x\\u\{1b\}\]0;pwned/)
  const missing = await t.throwsAsync(unpackRootfs(join(ws, 'nope.tar'), join(ws, 'c')), { instanceOf: IsolateError })
  t.deepEqual([missing?.step, missing?.errno], ['open_archive', 'ENOENT'])
  writeFileSync(join(ws, 'trunc.tar.gz'), gzipSync(tar([{ name: 'f', data: 'x'.repeat(5000) }])).subarray(0, 60))
  const trunc = await t.throwsAsync(unpackRootfs(join(ws, 'trunc.tar.gz'), join(ws, 'd')), { instanceOf: IsolateError })
  t.is(trunc?.code, 'ERR_ISOLATE_SETUP')
  for (const [option, value] of [['ref', 'a\0b'], ['ref', 'r'.repeat(1 << 20)], ['platform', 'linux/am\0d64']] as const) {
    // They reached the tool's command line (E2BIG, 'could not start the image tool').
    const bad = await t.throwsAsync(importImage(join(ws, 'x'), join(ws, 'e'), { [option]: value }), { instanceOf: IsolateError })
    t.deepEqual([bad?.code, bad?.option], ['ERR_ISOLATE_OPTION', option])
  }
  const opt = await t.throwsAsync(unpackRootfs(join(ws, 'x'), join(ws, 'e'), { specialFiles: 'keep' as 'skip' }), { instanceOf: IsolateError })
  t.deepEqual([opt?.code, opt?.option], ['ERR_ISOLATE_OPTION', 'specialFiles'])
  if (!isRoot) {
    const own = await t.throwsAsync(unpackRootfs(join(ws, 'x'), join(ws, 'f'), { ownership: 'archive' }), { instanceOf: IsolateError })
    t.deepEqual([own?.code, own?.option], ['ERR_ISOLATE_UNSUPPORTED', 'ownership'])
  }
})

test("the host's root is refused as the target, also through a symlink, and so is an unknown option (a misspelt signal would do nothing), before anything is written", async (t) => {
  const ws = workspace(t)
  const name = `isolate-test-not-here-${process.pid}`
  t.teardown(() => rmSync(join('/', name), { force: true }))
  writeFileSync(join(ws, 'one.tar'), tar([{ name, data: 'x' }]))
  symlinkSync('/', join(ws, 'to-root'))
  for (const dir of ['/', join(ws, 'to-root'), '/tmp/..']) {
    for (const call of [unpackRootfs(join(ws, 'one.tar'), dir), importImage(join(ws, 'one.tar'), dir)]) {
      const e = await t.throwsAsync(call, { instanceOf: IsolateError })
      t.deepEqual([e?.code, e?.option], ['ERR_ISOLATE_OPTION', 'dir'], dir)
      t.regex(e?.message ?? '', /host's root/)
    }
  }
  t.false(existsSync(join('/', name)), 'nothing was written there')
  const ac = new AbortController()
  const typo = await t.throwsAsync(unpackRootfs(join(ws, 'one.tar'), join(ws, 'a'), { singal: ac.signal } as never), { instanceOf: IsolateError })
  t.deepEqual([typo?.code, typo?.option], ['ERR_ISOLATE_OPTION', 'singal'])
  const imp = await t.throwsAsync(importImage(join(ws, 'one.tar'), join(ws, 'b'), { layers: 'flat' } as never), { instanceOf: IsolateError })
  t.deepEqual([imp?.code, imp?.option], ['ERR_ISOLATE_OPTION', 'layers'])
  t.false(existsSync(join(ws, 'a')) || existsSync(join(ws, 'b')), 'no target was made')
})

test("the image tool refuses the host's root itself: named to it directly, or as a bind mount of / elsewhere (a name the library cannot tell from any other)", async (t) => {
  const ws = workspace(t)
  const name = `isolate-test-not-here-${process.pid}`
  t.teardown(() => rmSync(join('/', name), { force: true }))
  writeFileSync(join(ws, 'one.tar'), tar([{ name, data: 'x' }]))
  const tool = join(root, 'npm', 'linux-x64-gnu', 'isolate-image')
  for (const command of ['unpack', 'import']) {
    const r = spawnSync(tool, [command, '--', join(ws, 'one.tar'), '/'], { encoding: 'utf8' })
    t.is(r.status, 1, `${command}: ${r.stdout}${r.stderr}`)
    t.regex(r.stdout, /"step":"open_archive","path":"\/","message":"the target directory \/ is the host's root directory/, command)
  }
  if (isRoot) {
    // As root: a bind mount of the host's root, read-only (the same device and inode, and nothing
    // a failed check could write), on a directory of its own outside the workspace, whose
    // teardown removes a tree: only rmdir'd once unmounted.
    const bound = mkdtempSync(join(tmpdir(), 'isolate-bound-root-'))
    execFileSync('mount', ['-o', 'bind,ro', '/', bound])
    try {
      t.throws(() => writeFileSync(join(bound, name), 'x'), { code: 'EROFS' }, 'the bind is read-only')
      for (const call of [unpackRootfs(join(ws, 'one.tar'), bound), importImage(join(ws, 'one.tar'), bound)]) {
        const e = await t.throwsAsync(call, { instanceOf: IsolateError })
        t.deepEqual([e?.step, e?.path], ['open_archive', bound])
        t.regex(e?.message ?? '', /host's root directory/)
      }
    } finally {
      execFileSync('umount', ['-l', bound])
      rmdirSync(bound)
    }
  } else {
    console.log('image.test: not root, so no bind mount of / to name: the tool was asked for / directly only')
  }
  t.false(existsSync(join('/', name)), 'nothing was written there')
})

test('an abort stops the unpacker and rejects with ABORT_ERR; the directory it made goes', async (t) => {
  const ws = workspace(t)
  const big = gzipSync(tar([{ name: 'zeros', data: Buffer.alloc(64 << 20) }]))
  writeFileSync(join(ws, 'big.tar.gz'), big)
  const pre = new AbortController()
  pre.abort()
  t.is((await t.throwsAsync(unpackRootfs(join(ws, 'big.tar.gz'), join(ws, 'a'), { signal: pre.signal }), { instanceOf: IsolateError }))?.code, 'ABORT_ERR')
  const ac = new AbortController()
  const p = unpackRootfs(join(ws, 'big.tar.gz'), join(ws, 'b'), { signal: ac.signal })
  ac.abort()
  const e = await t.throwsAsync(p, { instanceOf: IsolateError })
  t.is(e?.code, 'ABORT_ERR')
  // Other tests' children come and go meanwhile (their unpackers too): this one's, gone by the
  // rejection (its socket closed), is among the unreaped isolate-image children now, if at all.
  const unreaped = () => zombieChildren().filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'isolate-image'
    } catch {
      return false
    }
  })
  const then = unreaped()
  const left = () => unreaped().filter((pid) => then.includes(pid))
  t.true(await waitUntil(() => left().length === 0, 5000), `the unpacker is reaped (zombies: ${left().join(', ')})`)
  // Aborted mid-way (its archive a FIFO, half written): it stops at its next read, and the
  // directory it made goes (emptied by the unpacker, which still held it).
  const fifo = join(ws, 'half.tar')
  await promisify(execFile)('mkfifo', [fifo])
  const ac3 = new AbortController()
  const q = unpackRootfs(fifo, join(ws, 'c'), { signal: ac3.signal })
  const writer = await open(fifo, 'w')
  await writer.write(tar([{ name: 'data', data: Buffer.alloc(4 << 20, 0x61) }]).subarray(0, 1 << 20))
  t.true(await waitUntil(() => existsSync(join(ws, 'c', 'data')), 10_000), 'it is writing')
  ac3.abort()
  t.is((await t.throwsAsync(q, { instanceOf: IsolateError }))?.code, 'ABORT_ERR')
  await writer.close()
  t.false(existsSync(join(ws, 'c')), 'the directory it made is gone')
})

test("an abort stops the unpacker even while it writes what it does not read (a sparse entry's terabyte of holes, from an archive of 10 KiB): the directory it made goes, emptied by the unpacker itself", async (t) => {
  const ws = workspace(t)
  // GNU tar writes a file of holes as a sparse entry: its data map, not its zeros.
  const src = join(ws, 'src')
  mkdirSync(src)
  execFileSync('truncate', ['-s', '1T', join(src, 'holes')])
  writeFileSync(join(src, 'holes'), 'end', { flag: 'a' })
  execFileSync('tar', ['--sparse', '-C', src, '-cf', join(ws, 'sparse.tar'), 'holes'])
  rmSync(src, { recursive: true })
  t.true(statSync(join(ws, 'sparse.tar')).size < 64 << 10)
  const ac = new AbortController()
  const p = unpackRootfs(join(ws, 'sparse.tar'), join(ws, 'out'), { signal: ac.signal })
  p.catch(() => {})
  // Aborted while it writes the entry (a terabyte of holes takes it minutes).
  t.true(await waitUntil(() => existsSync(join(ws, 'out', 'holes')), 10_000), 'it is writing the entry')
  ac.abort()
  const e = await t.throwsAsync(p, { instanceOf: IsolateError })
  t.is(e?.code, 'ABORT_ERR', e?.message)
  t.notRegex(e?.message ?? '', /holds what was unpacked/)
  t.false(existsSync(join(ws, 'out')), 'the directory it made is gone')
})

/** Pids of this host's image tools whose command line names `path`. */
function toolsFor(path: string): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'isolate-image' && readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(path)
      } catch {
        return false
      }
    })
    .map(Number)
}

test('a worker thread terminated mid-unpack ends its unpackers and removes the directory the call made (one that was there stays); one that finished keeps its tree; so does an exit', async (t) => {
  const ws = workspace(t)
  // Bytes that are not zeros (those become holes): the unpack takes a while.
  writeFileSync(join(ws, 'big.tar'), tar([{ name: 'data', data: Buffer.alloc(64 << 20, 0x61) }]))
  const { line } = await startFixture(t, 'image-abandoned.ts', [join(ws, 'big.tar'), ws])
  const seen = JSON.parse(line) as { whenStarted: { said: string; running: number }; whenFinished: { said: string }; left: number[]; exists: Record<string, boolean> }
  t.deepEqual(seen.whenStarted, { said: 'started', running: 2 }, 'both unpackers ran when the first worker was terminated')
  t.is(seen.whenFinished.said, 'finished')
  t.deepEqual(seen.left, [], 'no image tool of that process is left, running or unreaped')
  t.deepEqual(seen.exists, { made: false, existing: true, finished: true }, 'the directory the terminated call made is gone; the one that was there, and the finished one, stay')
  t.true(readdirSync(join(ws, 'finished')).includes('data'))

  // The main thread: an exit mid-unpack (Node runs no cleanup hook of its then: an exit listener does it).
  const exiting = join(ws, 'exiting')
  const script = [
    `const api = await import(${JSON.stringify(join(root, 'dist', 'index.js'))})`,
    "const { existsSync } = await import('node:fs')",
    `const dir = ${JSON.stringify(exiting)}`,
    `api.unpackRootfs(${JSON.stringify(join(ws, 'big.tar'))}, dir).then(() => console.log('finished'), (e) => console.log(e.message))`,
    // Once the tool has made it: then it is the call's to remove.
    'while (!existsSync(dir)) await new Promise((r) => setTimeout(r, 1))',
    "console.log('made')",
    'process.exit(0)',
  ].join('\n')
  const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' })
  t.is(child.status, 0, child.stderr)
  t.is(child.stdout, 'made\n', 'the process exited while the unpack ran, the directory made')
  t.false(existsSync(exiting), 'the directory the call made is gone with the process')
  t.true(await waitUntil(() => toolsFor(exiting).length === 0, 5000), `its unpacker ended (${toolsFor(exiting)})`)
})

test('a SIGKILL of the caller ends its image tool, even one that writes no report meanwhile (an input that blocks)', async (t) => {
  const ws = workspace(t)
  const fifo = join(ws, 'image.fifo')
  await promisify(execFile)('mkfifo', [fifo])
  const script = `const api = await import(${JSON.stringify(join(root, 'dist', 'index.js'))}); await api.importImage(${JSON.stringify(fifo)}, ${JSON.stringify(join(ws, 'out'))})`
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: 'ignore' })
  const exited = new Promise((r) => child.once('exit', r))
  t.true(await waitUntil(() => toolsFor(fifo).length === 1, 10_000), 'the tool runs, waiting to open its input')
  const [tool] = toolsFor(fifo)
  t.teardown(() => {
    try {
      process.kill(tool, 'SIGKILL') // only if the test failed: it outlived its caller
    } catch {}
  })
  child.kill('SIGKILL')
  await exited
  t.true(await waitUntil(() => !existsSync(`/proc/${tool}`) || readFileSync(`/proc/${tool}/stat`, 'utf8').split(') ')[1]?.startsWith('Z') === true, 5000), `the tool ${tool} ended with its caller`)
})

// ---------------------------------------------------------------------------------------------
// Images

const HOST_ARCH = process.arch === 'arm64' ? 'arm64' : 'amd64'
const OTHER_ARCH = HOST_ARCH === 'amd64' ? 'arm64' : 'amd64'

const sha256 = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`

interface Layer {
  /** The layer as stored (maybe compressed). */
  blob: Buffer
  /** The uncompressed tar. */
  tar: Buffer
  mediaType: string
}

function layer(entries: TarEntry[], compression: 'gzip' | 'none' | 'zstd' = 'gzip'): Layer {
  const raw = tar(entries)
  if (compression === 'gzip') return { blob: gzipSync(raw), tar: raw, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }
  if (compression === 'zstd') return { blob: execFileSync('zstd', ['-q', '-c'], { input: raw }), tar: raw, mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd' }
  return { blob: raw, tar: raw, mediaType: 'application/vnd.oci.image.layer.v1.tar' }
}

/** Two layers: the second deletes a file and a directory, makes a directory opaque, changes a file. */
function twoLayers(): Layer[] {
  const lower = layer([
    { name: 'etc/', type: 'dir' },
    { name: 'etc/a', data: 'a0' },
    { name: 'etc/b', data: 'b0' },
    { name: 'etc/c', data: 'c0' },
    { name: 'etc/hard', type: 'hardlink', linkname: 'etc/c' },
    { name: 'opq/', type: 'dir' },
    { name: 'opq/old', data: 'old' },
    { name: 'opq/sub/', type: 'dir' },
    { name: 'opq/sub/old2', data: 'old2' },
    { name: 'keep/', type: 'dir' },
    { name: 'keep/x', data: 'x' },
    { name: 'drop/', type: 'dir' },
    { name: 'drop/f', data: 'f' },
    { name: 'link', type: 'symlink', linkname: 'etc/a' },
  ])
  const upper = layer(
    [
      { name: 'etc/', type: 'dir' },
      { name: 'etc/.wh.b', data: '' },
      { name: 'etc/a', data: 'a1' },
      { name: 'opq/', type: 'dir' },
      { name: 'opq/.wh..wh..opq', data: '' },
      { name: 'opq/new', data: 'new' },
      { name: 'keep/', type: 'dir' },
      { name: 'keep/y', data: 'y' },
      { name: '.wh.drop', data: '' },
    ],
    tools.zstd ? 'zstd' : 'none',
  )
  return [lower, upper]
}

/** What twoLayers() gives once merged: path -> file content, symlink target (->) or 'dir'. */
const MERGED: Record<string, string> = {
  etc: 'dir',
  'etc/a': 'a1',
  'etc/c': 'c0',
  'etc/hard': 'c0',
  opq: 'dir',
  'opq/new': 'new',
  keep: 'dir',
  'keep/x': 'x',
  'keep/y': 'y',
  link: '-> etc/a',
}

/** MERGED unpacked flat: with the empty etc/resolv.conf an unpack adds (see checkAgainstListing). */
const FLAT: Record<string, string> = { ...MERGED, 'etc/resolv.conf': '' }

function tree(dir: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const [path, n] of manifest(dir)) {
    if (path === '') continue
    out[path] = n.type === 'dir' ? 'dir' : n.type === 'symlink' ? `-> ${n.target}` : n.type === 'file' ? readFileSync(join(dir, path), 'utf8') : `${n.type} ${n.rdev}`
  }
  return out
}

interface ImageSpec {
  layers: Layer[]
  arch?: string
  config?: Record<string, unknown>
  ref?: string
}

function configJson(img: ImageSpec): Buffer {
  return Buffer.from(
    JSON.stringify({
      architecture: img.arch ?? HOST_ARCH,
      os: 'linux',
      config: { Env: ['PATH=/usr/bin:/bin', 'GREETING=hello'], Cmd: ['/bin/sh'], WorkingDir: '/work', ...img.config },
      rootfs: { type: 'layers', diff_ids: img.layers.map((l) => sha256(l.tar)) },
    }),
  )
}

/** An OCI image layout in `dir` with each image in index.json (its platform and ref annotated). */
function ociLayout(dir: string, images: ImageSpec[]): { blobs: string } {
  const blobs = join(dir, 'blobs', 'sha256')
  mkdirSync(blobs, { recursive: true })
  const put = (b: Buffer) => {
    writeFileSync(join(blobs, sha256(b).slice(7)), b)
    return { digest: sha256(b), size: b.length }
  }
  const manifests = images.map((img) => {
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...put(configJson(img)) },
        layers: img.layers.map((l) => ({ mediaType: l.mediaType, ...put(l.blob) })),
      }),
    )
    return {
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      ...put(manifest),
      platform: { os: 'linux', architecture: img.arch ?? HOST_ARCH },
      ...(img.ref ? { annotations: { 'org.opencontainers.image.ref.name': img.ref } } : {}),
    }
  })
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }))
  writeFileSync(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests }))
  return { blobs }
}

/** A `docker save` archive (the classic layout: <id>/layer.tar, <config digest>.json). */
function dockerSave(img: ImageSpec, tag = 'test/image:1'): Buffer {
  const config = configJson(img)
  const configName = `${sha256(config).slice(7)}.json`
  const layerNames = img.layers.map((l) => `${createHash('sha256').update(l.tar).update('id').digest('hex')}/layer.tar`)
  const entries: TarEntry[] = []
  img.layers.forEach((l, i) => {
    entries.push({ name: `${layerNames[i].split('/')[0]}/`, type: 'dir' }, { name: `${layerNames[i].split('/')[0]}/VERSION`, data: '1.0' }, { name: layerNames[i], data: l.tar })
  })
  entries.push({ name: configName, data: config })
  entries.push({ name: 'manifest.json', data: JSON.stringify([{ Config: configName, RepoTags: [tag], Layers: layerNames }]) })
  entries.push({ name: 'repositories', data: JSON.stringify({ [tag.split(':')[0]]: { [tag.split(':')[1]]: layerNames[layerNames.length - 1].split('/')[0] } }) })
  return tar(entries)
}

function lowerDirOption(r: ImportResult): string {
  return r.lowerDirs!.join(':')
}

/** Mount the layers with overlayfs in a new user+mount namespace and list the merged tree. */
function mountedTree(r: ImportResult): Record<string, string> {
  const mnt = join(r.dir, '..', 'mnt')
  mkdirSync(mnt, { recursive: true })
  const script = `mount -t overlay overlay -o lowerdir=${lowerDirOption(r)},userxattr ${mnt} && cd ${mnt} && find . -mindepth 1 | sort | while read -r p; do if [ -L "$p" ]; then echo "$p	-> $(readlink "$p")"; elif [ -d "$p" ]; then echo "$p	dir"; else echo "$p	$(cat "$p")"; fi; done`
  const out = execFileSync('unshare', ['-Urm', 'sh', '-c', script], { encoding: 'utf8' })
  return Object.fromEntries(
    out
      .trimEnd()
      .split('\n')
      .map((l) => {
        const [p, v] = l.split('\t')
        return [p.slice(2), v]
      }),
  )
}

function xattr(path: string, name: string): string | null {
  const out = spawnSync('python3', ['-c', 'import os,sys\ntry: print(os.getxattr(sys.argv[1], sys.argv[2]).decode())\nexcept OSError: print("<none>")', path, name], { encoding: 'utf8' })
  const v = out.stdout.trim()
  return v === '<none>' ? null : v
}

test('an OCI layout with two layers, a whiteout and an opaque directory: merged', async (t) => {
  const ws = workspace(t)
  const layers = twoLayers()
  ociLayout(join(ws, 'image'), [{ layers }])
  const dir = join(ws, 'rootfs')
  const phases = new Set<string>()
  const r = await importImage(join(ws, 'image'), dir, { onProgress: (p) => phases.add(p.phase) })
  t.deepEqual(tree(dir), FLAT)
  t.is(lstatSync(join(dir, 'etc/hard')).ino, lstatSync(join(dir, 'etc/c')).ino)
  t.is(r.format, 'oci')
  t.is(r.layout, 'flat')
  t.is(r.platform, `linux/${HOST_ARCH}`)
  t.deepEqual(
    r.layers.map((l) => [l.digest, l.diffId, l.compression]),
    layers.map((l, i) => [sha256(l.blob), sha256(l.tar), i === 0 ? 'gzip' : tools.zstd ? 'zstd' : 'tar']),
  )
  t.is(r.whiteouts, 3)
  t.deepEqual(r.config, { env: ['PATH=/usr/bin:/bin', 'GREETING=hello'], entrypoint: [], cmd: ['/bin/sh'], workingDir: '/work', user: '' })
  t.regex(r.manifestDigest ?? '', /^sha256:[0-9a-f]{64}$/)
  t.true(phases.has('verify') && phases.has('unpack'))
})

test("layout 'layers': one overlayfs lower directory per layer, and layers.json", async (t) => {
  const ws = workspace(t)
  ociLayout(join(ws, 'image'), [{ layers: twoLayers() }])
  const dir = join(ws, 'rootfs')
  const r = await importImage(join(ws, 'image'), dir, { layout: 'layers' })
  t.deepEqual(r.lowerDirs, [join(dir, 'layers/1'), join(dir, 'layers/0')])
  t.deepEqual(
    r.layers.map((l) => l.dir),
    [join(dir, 'layers/0'), join(dir, 'layers/1')],
  )
  const file = JSON.parse(readFileSync(join(dir, 'layers.json'), 'utf8'))
  t.deepEqual(file.lowerDirs, ['layers/1', 'layers/0'])
  t.is(file.whiteouts, 'chardev')
  t.deepEqual(file.mountOptions, ['userxattr'])
  t.deepEqual(file.opaqueXattrs, isRoot ? ['user.overlay.opaque', 'trusted.overlay.opaque'] : ['user.overlay.opaque'])
  t.deepEqual(readdirSync(dir).sort(), ['layers', 'layers.json'])
  // The bottom layer as it is; the top one with overlayfs whiteouts.
  t.is(tree(join(dir, 'layers/0'))['opq/sub/old2'], 'old2')
  const top = tree(join(dir, 'layers/1'))
  t.is(top['etc/b'], 'char 0', '.wh.b became a 0/0 character device')
  t.is(top.drop, 'char 0', 'a whited-out directory too')
  t.is(top['etc/a'], 'a1')
  t.false('opq/.wh..wh..opq' in top)
  if (tools.python3) {
    t.is(xattr(join(dir, 'layers/1/opq'), 'user.overlay.opaque'), 'y')
    t.is(xattr(join(dir, 'layers/1/etc'), 'user.overlay.opaque'), null)
    if (isRoot) t.is(xattr(join(dir, 'layers/1/opq'), 'trusted.overlay.opaque'), 'y')
  }
  // What the lead's overlay root will see: mount them (in a user namespace, as a sandbox does).
  if (tools.unshare) t.deepEqual(mountedTree(r), MERGED, 'overlayfs over the layers shows the merged tree')
  else t.log('overlay mount check skipped: no unshare command')
})

test('platform and ref choose among several images; a wrong platform is explained', async (t) => {
  const ws = workspace(t)
  const img = (arch: string, ref: string) => ({ layers: [layer([{ name: 'arch', data: arch }])], arch, ref })
  ociLayout(join(ws, 'image'), [img(HOST_ARCH, 'one'), img(OTHER_ARCH, 'two')])
  await importImage(join(ws, 'image'), join(ws, 'host'))
  t.is(readFileSync(join(ws, 'host', 'arch'), 'utf8'), HOST_ARCH)
  const other = await importImage(join(ws, 'image'), join(ws, 'other'), { platform: `linux/${OTHER_ARCH}` })
  t.is(readFileSync(join(ws, 'other', 'arch'), 'utf8'), OTHER_ARCH)
  t.is(other.platform, `linux/${OTHER_ARCH}`)
  await importImage(join(ws, 'image'), join(ws, 'byref'), { ref: 'two', platform: `linux/${OTHER_ARCH}` })
  t.is(readFileSync(join(ws, 'byref', 'arch'), 'utf8'), OTHER_ARCH)
  const none = await t.throwsAsync(importImage(join(ws, 'image'), join(ws, 'none'), { platform: 'linux/s390x' }), { instanceOf: IsolateError })
  t.is(none?.step, 'read_image')
  t.regex(none?.message ?? '', new RegExp(`no image for linux/s390x; it has: linux/${HOST_ARCH}, linux/${OTHER_ARCH}`))
  const noref = await t.throwsAsync(importImage(join(ws, 'image'), join(ws, 'noref'), { ref: 'three' }), { instanceOf: IsolateError })
  t.regex(noref?.message ?? '', /no image named 'three'; it names: one, two/)
  // An image's own names reach the caller's terminal or log escaped.
  ociLayout(join(ws, 'escapes'), [img(HOST_ARCH, 'one'), img(HOST_ARCH, 'red\x1b[31m')])
  const escaped = await t.throwsAsync(importImage(join(ws, 'escapes'), join(ws, 'e'), { ref: 'three' }), { instanceOf: IsolateError })
  t.notRegex(escaped?.message ?? '', /[\x00-\x1f]/)
  t.regex(escaped?.message ?? '', /red\\u\{1b\}\[31m/)
  writeFileSync(join(ws, 'host', 'extra'), '')
  const notEmpty = await t.throwsAsync(importImage(join(ws, 'image'), join(ws, 'host')), { instanceOf: IsolateError })
  t.regex(notEmpty?.message ?? '', /not empty/)
})

test('a docker save archive, plain and gzip-compressed, gives the same tree', async (t) => {
  const ws = workspace(t)
  const saved = dockerSave({ layers: twoLayers().map((l) => ({ ...l, blob: l.tar })) })
  writeFileSync(join(ws, 'image.tar'), saved)
  writeFileSync(join(ws, 'image.tar.gz'), gzipSync(saved))
  const r = await importImage(join(ws, 'image.tar'), join(ws, 'plain'), { ref: 'test/image:1' })
  t.is(r.format, 'docker')
  t.deepEqual(tree(join(ws, 'plain')), FLAT)
  t.deepEqual(
    r.layers.map((l) => l.digest),
    [undefined, undefined],
  )
  t.is(r.config.workingDir, '/work')
  const phases = new Set<string>()
  await importImage(join(ws, 'image.tar.gz'), join(ws, 'gz'), { onProgress: (p) => phases.add(p.phase) })
  t.deepEqual(tree(join(ws, 'gz')), FLAT)
  t.true(phases.has('decompress'))
  const layers = await importImage(join(ws, 'image.tar'), join(ws, 'layers'), { layout: 'layers' })
  t.is(layers.lowerDirs?.length, 2)
  if (tools.unshare) t.deepEqual(mountedTree(layers), MERGED)
})

test('an OCI layout packed as a tar (oci-archive, or docker save since Docker 25)', async (t) => {
  const ws = workspace(t)
  ociLayout(join(ws, 'layout'), [{ layers: twoLayers() }])
  await output('tar', ['-cf', join(ws, 'oci.tar'), '-C', join(ws, 'layout'), '.'])
  const r = await importImage(join(ws, 'oci.tar'), join(ws, 'rootfs'))
  t.is(r.format, 'oci')
  t.deepEqual(tree(join(ws, 'rootfs')), FLAT)
})

test('unpackRootfs of an image archive (docker save, an OCI layout as a tar) is refused naming importImage, and leaves no directory', async (t) => {
  const ws = workspace(t)
  writeFileSync(join(ws, 'saved.tar'), dockerSave({ layers: twoLayers().map((l) => ({ ...l, blob: l.tar })) }))
  ociLayout(join(ws, 'layout'), [{ layers: twoLayers() }])
  await output('tar', ['-cf', join(ws, 'oci.tar'), '-C', join(ws, 'layout'), '.'])
  for (const [archive, entry] of [['saved.tar', 'manifest.json'], ['oci.tar', 'oci-layout']]) {
    const e = await t.throwsAsync(unpackRootfs(join(ws, archive), join(ws, `${archive}.d`)), { instanceOf: IsolateError })
    t.regex(e?.message ?? '', new RegExp(`'(\\./)?${entry}': this is an image archive \\('docker save', or an OCI layout packed as a tar\\), not a root filesystem tarball`), archive)
    t.regex(e?.hint ?? '', /importImage \(isolate rootfs import IMAGE DIR\)/)
    t.false(existsSync(join(ws, `${archive}.d`)), `${archive}: the directory it made is gone`)
  }
})

test('a digest mismatch is refused before anything is written', async (t) => {
  const ws = workspace(t)
  const layers = twoLayers()
  // OCI: a layer blob whose bytes no longer match its name.
  const { blobs } = ociLayout(join(ws, 'oci'), [{ layers }])
  const blob = join(blobs, sha256(layers[1].blob).slice(7))
  const bytes = readFileSync(blob)
  bytes[bytes.length - 1] ^= 0xff
  writeFileSync(blob, bytes)
  const e = await t.throwsAsync(importImage(join(ws, 'oci'), join(ws, 'a')), { instanceOf: IsolateError })
  t.deepEqual([e?.code, e?.step, e?.path], ['ERR_ISOLATE_SETUP', 'verify_digest', `blobs/sha256/${sha256(layers[1].blob).slice(7)}`])
  t.regex(e?.message ?? '', /does not match its digest: expected sha256:[0-9a-f]{64}, got sha256:[0-9a-f]{64}/)
  t.false(existsSync(join(ws, 'a')), 'nothing written: the directory the call made is gone again')
  // OCI: a manifest edited in place.
  const { blobs: blobs2 } = ociLayout(join(ws, 'oci2'), [{ layers }])
  const index = JSON.parse(readFileSync(join(ws, 'oci2', 'index.json'), 'utf8'))
  const manifestPath = join(blobs2, index.manifests[0].digest.slice(7))
  writeFileSync(manifestPath, readFileSync(manifestPath, 'utf8').replace('"schemaVersion":2', '"schemaVersion": 2'))
  const m = await t.throwsAsync(importImage(join(ws, 'oci2'), join(ws, 'b')), { instanceOf: IsolateError })
  t.is(m?.step, 'verify_digest')
  t.false(existsSync(join(ws, 'b')))
  // Docker: a layer whose content is not the one its (correctly named) config lists.
  const honest = twoLayers().map((l) => ({ ...l, blob: l.tar }))
  const config = configJson({ layers: honest })
  const configName = `${sha256(config).slice(7)}.json`
  const entries: TarEntry[] = [
    { name: configName, data: config },
    { name: 'l0/layer.tar', data: honest[0].tar },
    { name: 'l1/layer.tar', data: tar([{ name: 'etc/', type: 'dir' }, { name: 'etc/a', data: 'evil' }]) },
    { name: 'manifest.json', data: JSON.stringify([{ Config: configName, RepoTags: ['x:1'], Layers: ['l0/layer.tar', 'l1/layer.tar'] }]) },
  ]
  writeFileSync(join(ws, 'docker.tar'), tar(entries))
  const d = await t.throwsAsync(importImage(join(ws, 'docker.tar'), join(ws, 'c')), { instanceOf: IsolateError })
  t.deepEqual([d?.step, d?.path], ['verify_digest', 'l1/layer.tar'])
  t.regex(d?.message ?? '', /\(uncompressed\) does not match its digest/)
  t.false(existsSync(join(ws, 'c')), 'nothing written')
})

test('a hostile layer is refused like a hostile tarball', async (t) => {
  const ws = workspace(t)
  mkdirSync(join(ws, 'sentinel'))
  const evil = layer([{ name: 'a', type: 'symlink', linkname: join(ws, 'sentinel') }, { name: 'a/pwned', data: 'x' }])
  ociLayout(join(ws, 'image'), [{ layers: [evil] }])
  for (const layout of ['flat', 'layers'] as const) {
    const e = await t.throwsAsync(importImage(join(ws, 'image'), join(ws, `rootfs-${layout}`), { layout }), { instanceOf: IsolateError })
    t.deepEqual([e?.step, e?.path], ['check_entry', 'a/pwned'])
    t.regex(e?.message ?? '', /^cannot import .*: layer 0: entry 'a\/pwned' would be written through the symlink 'a'/)
  }
  const wh = layer([{ name: '.wh...', data: '' }])
  ociLayout(join(ws, 'image2'), [{ layers: [wh] }])
  const w = await t.throwsAsync(importImage(join(ws, 'image2'), join(ws, 'rootfs-wh')), { instanceOf: IsolateError })
  t.regex(w?.message ?? '', /path traversal/)
  t.deepEqual(readdirSync(join(ws, 'sentinel')), [])
})

// ---------------------------------------------------------------------------------------------
// The result runs

alpineTest('a sandbox runs on an unpacked rootfs and on an imported image', async (t) => {
  const ws = workspace(t)
  const dir = join(ws, 'alpine')
  await unpackRootfs(alpineTarball, dir)
  const r = await runIsolated('/bin/sh', ['-c', 'cat /etc/os-release'], { rootfs: dir })
  t.is(r.exitCode, 0, r.stderr)
  t.regex(r.stdout, /^NAME="Alpine Linux"$/m)

  // The fixture itself is a valid gzip layer; a second layer adds a file and deletes one.
  const base: Layer = { blob: readFileSync(alpineTarball), tar: gunzipSync(readFileSync(alpineTarball)), mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }
  const top = layer([{ name: 'hello', data: 'from the top layer\n' }, { name: 'etc/.wh.motd', data: '' }])
  ociLayout(join(ws, 'image'), [{ layers: [base, top] }])
  const imported = await importImage(join(ws, 'image'), join(ws, 'rootfs'))
  const env = Object.fromEntries(imported.config.env.map((kv) => kv.split(/=(.*)/s).slice(0, 2)))
  const s = await runIsolated('/bin/sh', ['-c', 'cat /hello; test -e /etc/motd || echo "no motd"; echo "$GREETING"; . /etc/os-release; echo "$ID"'], { rootfs: imported.dir, env })
  t.is(s.exitCode, 0, s.stderr)
  t.is(s.stdout, 'from the top layer\nno motd\nhello\nalpine\n')

  // The same image as layers: stacked by overlayfs in the sandbox, nothing merged or copied.
  const layered = await importImage(join(ws, 'image'), join(ws, 'layered'), { layout: 'layers' })
  const check = 'cat /hello; test -e /etc/motd || echo "no motd"; . /etc/os-release; echo "$ID"; touch /x 2>&1 | grep -c "Read-only"'
  const l = await runIsolated('/bin/sh', ['-c', check], { rootfs: layered.dir })
  t.is(l.stdout, 'from the top layer\nno motd\nalpine\n1\n', l.stderr)
  const byList = await runIsolated('/bin/sh', ['-c', 'cat /hello'], { rootfs: { layers: layered.lowerDirs! } })
  t.is(byList.stdout, 'from the top layer\n', byList.stderr)
  const before = comparable(manifest(join(ws, 'layered')))
  const w = await runIsolated('/bin/sh', ['-c', 'echo w > /etc/written && rm /hello && cat /etc/written'], { rootfs: layered.dir, overlay: true })
  t.is(w.stdout, 'w\n', w.stderr)
  t.deepEqual(comparable(manifest(join(ws, 'layered'))), before, 'the layers are never written')
})

alpineTest('an unpacked rootfs under overlay: true is writable inside and unchanged outside', async (t) => {
  const ws = workspace(t)
  const dir = join(ws, 'rootfs')
  await unpackRootfs(alpineTarball, dir)
  const before = comparable(manifest(dir))
  const s = await runIsolated('/bin/sh', ['-c', 'stat -c "%u:%g" /etc/os-release; echo new > /etc/written && cat /etc/written; rm /etc/motd && echo deleted'], { rootfs: dir, overlay: true })
  t.is(s.exitCode, 0, s.stderr)
  t.is(s.stdout, '0:0\nnew\ndeleted\n', 'inside, the files belong to root (as root: the archive\'s ids, idmapped; rootless: the caller, mapped)')
  t.deepEqual(comparable(manifest(dir)), before, 'the unpacked tree is untouched')
})

// ---------------------------------------------------------------------------------------------
// The command line

function cli(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ['--import=tsx', 'cli.ts', ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    child.on('error', reject)
    child.on('close', (status) => resolvePromise({ status, stdout, stderr }))
  })
}

test('isolate rootfs unpack and import, with --progress, --json and refusals', async (t) => {
  const ws = workspace(t)
  writeFileSync(join(ws, 'small.tar.gz'), gzipSync(tar([{ name: 'etc/hostname', data: 'box\n' }, { name: 'data', data: Buffer.alloc(3 << 20, 1) }])))
  const ok = await cli(['rootfs', 'unpack', '--progress', join(ws, 'small.tar.gz'), join(ws, 'out')])
  t.is(ok.status, 0, ok.stderr)
  t.regex(ok.stdout, new RegExp(`^unpacked 2 entries \\(3\\.0 MiB\\) into ${join(ws, 'out')}\\n$`))
  t.regex(ok.stderr, /^unpacking: .*MiB \/ .*MiB read \(\d+%\)/m, 'progress lines on stderr (not a terminal, so only with --progress)')
  t.regex(ok.stderr, /\(100%\), 2 entries$/m)
  t.is(readFileSync(join(ws, 'out', 'etc/hostname'), 'utf8'), 'box\n')

  const quiet = await cli(['rootfs', 'unpack', join(ws, 'small.tar.gz'), join(ws, 'out2')])
  t.is(quiet.stderr, '', 'no progress without a terminal or --progress')

  writeFileSync(join(ws, 'evil.tar'), tar([{ name: '../escape', data: 'x' }]))
  const evil = await cli(['rootfs', 'unpack', '--json', join(ws, 'evil.tar'), join(ws, 'out3')])
  t.is(evil.status, 1)
  t.regex(evil.stderr, /^isolate: cannot unpack .*evil\.tar: entry '\.\.\/escape' contains a '\.\.' component/m)
  t.regex(evil.stderr, /^ {2}step: check_entry$/m)
  t.regex(evil.stderr, /^ {2}path: \.\.\/escape$/m)
  t.is(JSON.parse(evil.stdout).error.path, '../escape')
  t.false(existsSync(join(ws, 'escape')))

  ociLayout(join(ws, 'image'), [{ layers: twoLayers() }])
  const imp = await cli(['rootfs', 'import', '--layers', '--json', join(ws, 'image'), join(ws, 'img')])
  t.is(imp.status, 0, imp.stderr)
  const result = JSON.parse(imp.stdout) as ImportResult
  t.deepEqual(result.lowerDirs, [join(ws, 'img', 'layers/1'), join(ws, 'img', 'layers/0')])
  t.true(existsSync(join(ws, 'img', 'layers.json')))

  const bounded = await cli(['rootfs', 'unpack', '--max-size', '1M', '--max-entries', '5', join(ws, 'small.tar.gz'), join(ws, 'out4')])
  t.is(bounded.status, 1)
  t.regex(bounded.stderr, /would pass the 1048576 bytes of file content maxBytes \(isolate rootfs --max-size\) allows/)
  t.false(existsSync(join(ws, 'out4')))
  const fewEntries = await cli(['rootfs', 'unpack', '--max-entries', '2', join(ws, 'small.tar.gz'), join(ws, 'out6')])
  t.is(fewEntries.status, 1, 'etc/hostname implies etc: three in all')
  t.regex(fewEntries.stderr, /^ {2}step: check_entry$/m)
  t.false(existsSync(join(ws, 'out6')))
  t.is((await cli(['rootfs', 'unpack', '--max-entries', '3', join(ws, 'small.tar.gz'), join(ws, 'out7')])).status, 0)
  for (const [flag, value, says] of [['--max-size', 'lots', /--max-size: invalid size/], ['--max-entries', '0', /--max-entries: expected a positive whole number/]] as const) {
    const bad = await cli(['rootfs', 'unpack', flag, value, join(ws, 'small.tar.gz'), join(ws, 'out5')])
    t.is(bad.status, 125)
    t.regex(bad.stderr, says)
  }

  const usage = await cli(['rootfs', 'unpack', '--platform', 'linux/arm64', 'a', 'b'])
  t.is(usage.status, 125)
  t.regex(usage.stderr, /--platform is an option of 'rootfs import'/)
  const help = await cli(['rootfs', '--help'])
  t.regex(help.stdout, /isolate rootfs import \[options\] IMAGE DIR/)
})
