/** Capabilities, Landlock and the masked kernel interfaces, each with the thing it forbids tried. */
import test from 'ava'
import { chmodSync, copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { createSandbox, runIsolated, spawnIsolated, probe, IsolateError } from '../index.js'
import { buildMiniRootfs, expectedOutsideIds, removeDir, root, sh, tempDir } from './helpers.js'
import { symlinkSync } from 'node:fs'
import { join } from 'node:path'

const libcEperm = 1
const bindPort80 = "import socket; s = socket.socket(); s.bind(('127.0.0.1', 80)); print('bound')"

function caps(status: string): Record<string, bigint> {
  const out: Record<string, bigint> = {}
  for (const line of status.split('\n')) {
    const m = /^(Cap\w+):\s+([0-9a-f]+)$/.exec(line)
    if (m) out[m[1]] = BigInt(`0x${m[2]}`)
  }
  return out
}

test('without capabilities a non-root user cannot bind port 80', async (t) => {
  const r = await runIsolated('/usr/bin/python3', ['-c', bindPort80], { user: { uid: 1000, gid: 1000 } })
  t.not(r.exitCode, 0)
  t.regex(r.stderr, /PermissionError|Permission denied/)
})

test('capabilities keeps exactly the named ones, in every set, across the uid change', async (t) => {
  const r = await runIsolated('/bin/cat', ['/proc/self/status'], { user: { uid: 1000, gid: 1000 }, capabilities: ['NET_BIND_SERVICE'] })
  const c = caps(r.stdout)
  const bit = 1n << 10n
  t.is(c.CapEff, bit)
  t.is(c.CapPrm, bit)
  t.is(c.CapBnd, bit)
  t.is(c.CapAmb, bit)
  const bound = await runIsolated('/usr/bin/python3', ['-c', bindPort80], { user: { uid: 1000, gid: 1000 }, capabilities: ['CAP_NET_BIND_SERVICE'] })
  t.is(bound.stdout, 'bound\n', bound.stderr)
  const root = await runIsolated('/bin/cat', ['/proc/self/status'], { capabilities: ['net_bind_service'] })
  t.is(caps(root.stdout).CapBnd, bit, 'root inside gets nothing beyond the kept one either')
})

test('a kept capability does not bring others: CAP_SYS_ADMIN-only actions still fail', async (t) => {
  const r = await sh('mount -t tmpfs none /tmp 2>&1; echo rc=$?', { capabilities: ['NET_BIND_SERVICE'] })
  t.regex(r.stdout, /rc=(1|32|255)/)
})

test("without a user namespace the command runs as the sandbox's unprivileged host ids, never host root: root's files stay closed, ids 0 are refused", async (t) => {
  const options = { namespaces: { user: false } }
  if (process.getuid!() !== 0) {
    const e = await t.throwsAsync(runIsolated('/bin/true', [], options), { instanceOf: IsolateError })
    return t.is(e?.option, 'namespaces.user')
  }
  const sandboxHostIds = await expectedOutsideIds()
  const dir = tempDir()
  try {
    writeFileSync(join(dir, 'secret'), 'root only\n', { mode: 0o600 })
    const r = await runIsolated('/bin/sh', ['-c', 'cat /proc/self/uid_map; id -u; id -g; cat /job/secret || echo unreadable; chmod 666 /dev/zero || echo unchangeable'], {
      ...options,
      mounts: [{ type: 'bind', source: dir, target: '/job' }],
    })
    const [map, uid, gid, ...rest] = r.stdout.trim().split('\n')
    t.deepEqual(map.trim().split(/\s+/), ['0', '0', '4294967295'], "the host's own user namespace")
    t.deepEqual([Number(uid), Number(gid)], [sandboxHostIds.uid, sandboxHostIds.gid])
    // chmod to the mode it has: a no-op where it is allowed, refused to anyone but the owner.
    t.deepEqual(rest, ['unreadable', 'unchangeable'], r.stderr)
    for (const user of [{ uid: 0, gid: 0 }, { uid: sandboxHostIds.uid, gid: 0 }]) {
      const e = await t.throwsAsync(runIsolated('/bin/true', [], { ...options, user }), { instanceOf: IsolateError })
      t.is(e?.option, 'user')
    }
  } finally {
    removeDir(dir)
  }
})

test('/proc: the kernel helpers are masked or read-only', async (t) => {
  const r = await sh([
    'echo h > /proc/sysrq-trigger 2>&1; echo sysrq=$?',
    'echo x > /proc/sys/kernel/core_pattern 2>&1; echo core=$?',
    'echo x > /proc/sys/kernel/modprobe 2>&1; echo modprobe=$?',
    'head -c1 /proc/kallsyms >/dev/null 2>&1; echo kallsyms=$?',
    'ls /proc/acpi >/dev/null 2>&1; echo acpi=$?',
    'echo "some 150000 1000000" > /proc/pressure/memory 2>&1; echo pressure=$?',
    'cat /proc/cmdline >/dev/null 2>&1; echo cmdline=$?',
    'cat /proc/sys/kernel/ostype',
    'grep -E " /proc/sys | /proc/sysrq-trigger " /proc/self/mountinfo | cut -d" " -f5,6',
  ].join('; '))
  for (const k of ['sysrq', 'core', 'modprobe', 'kallsyms', 'acpi', 'pressure', 'cmdline']) t.regex(r.stdout, new RegExp(`^${k}=[1-9]`, 'm'), `${k}: ${r.stdout}`)
  t.regex(r.stdout, /^Linux$/m, '/proc/sys stays readable')
  t.regex(r.stdout, /^\/proc\/sys ro,/m)
  if (existsSync('/proc/sysrq-trigger')) t.regex(r.stdout, /^\/proc\/sysrq-trigger ro,/m)
  else t.log('this kernel has no /proc/sysrq-trigger; its write was still tried above')
})

test('no /sys and no cgroupfs inside', async (t) => {
  const r = await sh('ls /sys 2>&1; grep -c -E " - cgroup2? " /proc/self/mountinfo')
  t.regex(r.stdout, /No such file/)
  t.regex(r.stdout, /^0$/m)
})

test('the init cannot be opened or traced through /proc/1 (CVE-2019-5736 class)', async (t) => {
  const r = await sh('cat /proc/1/exe >/dev/null 2>&1; echo exe=$?; ls /proc/1/fd >/dev/null 2>&1; echo fd=$?; cat /proc/1/environ >/dev/null 2>&1; echo env=$?')
  t.regex(r.stdout, /exe=[1-9]/)
  t.regex(r.stdout, /fd=[1-9]/)
  t.regex(r.stdout, /env=[1-9]/)
})

test('landlock: reads, writes and execs outside the lists are denied', async (t) => {
  const p = await probe()
  if (!p.landlockAbi) throw new Error('this kernel has no Landlock; the landlock tests need it')
  const landlock = { exec: ['/usr', '/bin', '/lib', '/lib64'], read: ['/etc/os-release', '/proc'], write: ['/tmp/out'] }
  const r = await sh([
    'mkdir /tmp/out 2>&1; echo mk=$?',
    'cat /etc/os-release >/dev/null; echo osrel=$?',
    'cat /etc/passwd >/dev/null 2>&1; echo passwd=$?',
    'echo x > /tmp/else 2>&1; echo tmp=$?',
    'echo ok >/dev/null; echo devnull=$?',
  ].join('; '), { mounts: [{ type: 'tmpfs', target: '/tmp/out' }], landlock })
  t.regex(r.stdout, /osrel=0/)
  t.regex(r.stdout, /passwd=1/, 'a file outside the read list')
  t.regex(r.stdout, /tmp=[12]/, 'a write outside the write list')
  t.regex(r.stdout, /devnull=0/)
  const w = await sh('echo data > /tmp/out/f && cat /tmp/out/f', { mounts: [{ type: 'tmpfs', target: '/tmp/out' }], landlock })
  t.is(w.stdout, 'data\n', w.stderr)
  const x = await sh('cp /bin/true /tmp/out/t && /tmp/out/t; echo rc=$?', { mounts: [{ type: 'tmpfs', target: '/tmp/out', mode: 0o777 }], landlock })
  t.regex(x.stdout, /rc=126/, 'written but not executable: write does not imply exec')
})

test("landlock: a file outside the exec list cannot run through the loader or an executable mapping either: mounts that hold no exec path are noexec (a program written to /tmp, one in a read-only bind)", async (t) => {
  const job = tempDir()
  t.teardown(() => removeDir(job))
  copyFileSync('/usr/bin/true', join(job, 'prog'))
  chmodSync(job, 0o755)
  const mounts = [{ type: 'bind' as const, source: job, target: '/job' }]
  const script = [
    'cp /usr/bin/true /tmp/t',
    '/lib64/ld-linux-x86-64.so.2 /tmp/t; echo tmp=$?',
    '/lib64/ld-linux-x86-64.so.2 /job/prog; echo job=$?',
    '/lib64/ld-linux-x86-64.so.2 /usr/bin/true; echo usr=$?',
    'grep -E " /(tmp|job|usr) " /proc/self/mountinfo | while read -r a b c d point opts rest; do case ",$opts," in *,noexec,*) echo "$point noexec";; *) echo "$point exec";; esac; done | sort',
  ].join('; ')
  const r = await runIsolated('/bin/sh', ['-c', script], { mounts, landlock: { read: ['/'], write: ['/tmp'], exec: ['/usr'] } })
  t.regex(r.stdout, /^tmp=(126|127|1)$/m, `the loader cannot map what the command wrote: ${r.stderr}`)
  t.regex(r.stdout, /^job=(126|127|1)$/m, 'nor a program of a bind outside the exec list')
  t.regex(r.stdout, /^usr=0$/m, 'what the exec list holds runs, through the loader too')
  t.regex(r.stdout, /\/job noexec\n\/tmp noexec\n\/usr exec\n$/)
  // So for every exec of a long-lived sandbox.
  const sb = await createSandbox({ mounts, landlock: { read: ['/'], write: ['/tmp'], exec: ['/usr'] } })
  t.teardown(() => sb.destroy())
  const e = await sb.exec('/bin/sh', ['-c', script])
  t.regex(e.stdout, /^tmp=(126|127|1)\n.*^job=(126|127|1)\n.*^usr=0\n/ms, e.stderr)
  // A mount its path no longer reaches (a tmpfs over a directory above it) is left alone.
  const hidden = await runIsolated('/bin/sh', ['-c', 'cp /usr/bin/true /tmp/t; /lib64/ld-linux-x86-64.so.2 /tmp/t; echo tmp=$?'], {
    mounts: [{ type: 'bind', source: job, target: '/a/b' }, { type: 'tmpfs', target: '/a' }],
    landlock: { read: ['/'], write: ['/tmp'], exec: ['/usr'] },
  })
  t.regex(hidden.stdout, /^tmp=(126|127|1)$/m, hidden.stderr)
  // Without landlock, nothing changes: the same loader runs both.
  const free = await runIsolated('/bin/sh', ['-c', script], { mounts })
  t.regex(free.stdout, /^tmp=0$/m, free.stderr)
  t.regex(free.stdout, /^job=0$/m)
})

test('landlock: a path that does not exist inside fails setup, naming it', async (t) => {
  const e = await t.throwsAsync(spawnIsolated('/bin/true', [], { landlock: { read: ['/nope'], exec: ['/usr', '/bin', '/lib', '/lib64'] } }), { instanceOf: IsolateError })
  t.is(e?.step, 'apply_landlock')
  t.is(e?.path, '/nope')
  t.is(e?.errno, 'ENOENT')
})

test("landlock: a rule's path through a symlink of the image's is refused, not followed (an image's /work -> / would give / what the caller gave /work)", async (t) => {
  const dir = buildMiniRootfs()
  t.teardown(() => removeDir(dir))
  symlinkSync('/', join(dir, 'work'))
  // A read-write bind the rules keep read-only: writable by anyone as far as the files go.
  const cache = tempDir()
  t.teardown(() => removeDir(cache))
  chmodSync(cache, 0o777)
  const options = { rootfs: dir, mounts: [{ type: 'bind' as const, source: cache, target: '/cache', readonly: false }] }
  const e = await t.throwsAsync(runIsolated('/usr/bin/sh', ['-c', 'echo x > /cache/f'], { ...options, landlock: { read: ['/'], write: ['/work'], exec: ['/usr', '/lib', '/lib64'] } }), { instanceOf: IsolateError })
  t.like(e, { step: 'apply_landlock', errno: 'ELOOP', path: '/work' })
  t.regex(e?.hint ?? '', /real path/)
  t.false(existsSync(join(cache, 'f')), 'nothing was written to the bind')
  // The same rules by real paths hold: the bind stays read-only to the command.
  const held = await runIsolated('/usr/bin/sh', ['-c', 'echo x > /cache/f; echo rc=$?'], { ...options, landlock: { read: ['/'], write: ['/tmp'], exec: ['/usr', '/lib', '/lib64'] } })
  t.regex(held.stdout, /rc=[12]/, held.stderr)
  t.false(existsSync(join(cache, 'f')))
})

test('landlock: a command outside the exec list is refused at execve', async (t) => {
  const e = await t.throwsAsync(spawnIsolated('/usr/bin/python3', ['-c', '1'], { landlock: { read: ['/usr'] } }), { instanceOf: IsolateError })
  t.is(e?.step, 'execve')
  t.is(e?.errno, 'EACCES')
})

test('a hostile rootfs: proc, dev and tmp symlinked out are replaced, a bind target through a symlink is refused', async (t) => {
  const dir = buildMiniRootfs()
  t.teardown(() => removeDir(dir))
  symlinkSync('/etc', join(dir, 'proc'))
  symlinkSync('/', join(dir, 'dev'))
  symlinkSync('/root', join(dir, 'tmp'))
  symlinkSync('/etc', join(dir, 'data'))
  const r = await runIsolated('/bin/sh', ['-c', 'cat /proc/1/comm; echo *; echo x > /tmp/f && cat /tmp/f; cat /data/hostname 2>&1; true'], { rootfs: dir, env: {} })
  t.is(r.exitCode, 0, r.stderr)
  const [comm, listing, written] = r.stdout.split('\n')
  t.is(comm, 'isolate-init', 'the sandbox\'s own /proc, not the host\'s /etc')
  t.true(listing.split(' ').includes('dev'))
  t.is(written, 'x', '/tmp is the sandbox\'s tmpfs')
  t.regex(r.stdout, /No such file/, '/data points at the sandbox\'s own (absent) /etc, not the host\'s')
  const e = await t.throwsAsync(spawnIsolated('/bin/sh', [], { rootfs: dir, mounts: [{ type: 'tmpfs', target: '/data/inner' }] }), { instanceOf: IsolateError })
  t.is(e?.step, 'create_mountpoint')
  t.is(e?.errno, 'ENOTDIR')
})

test('seccomp default: new namespaces, vsock and the mount API are refused; none allows them', async (t) => {
  const script = [
    'import ctypes, errno, os, socket',
    'libc = ctypes.CDLL(None, use_errno=True)',
    'r = libc.unshare(0x10000000)',
    'print("unshare", r, errno.errorcode.get(ctypes.get_errno(), 0) if r else "ok")',
    'try:',
    '  socket.socket(40, socket.SOCK_STREAM); print("vsock ok")',
    'except OSError as e: print("vsock", errno.errorcode[e.errno])',
    'r = libc.syscall(435, 0, 0)',
    'print("clone3", errno.errorcode.get(ctypes.get_errno(), 0))',
  ].join('\n')
  const d = await runIsolated('/usr/bin/python3', ['-c', script])
  t.regex(d.stdout, /^unshare -1 EPERM$/m, d.stderr)
  t.regex(d.stdout, /^vsock EAFNOSUPPORT$/m)
  t.regex(d.stdout, /^clone3 ENOSYS$/m)
  const n = await runIsolated('/usr/bin/python3', ['-c', script], { seccomp: 'none' })
  t.regex(n.stdout, /^unshare 0 ok$/m, 'without the filter the same call works: the filter is what refuses it')
  t.notRegex(n.stdout, /^clone3 ENOSYS$/m)
})

test('seccomp default: modify_ldt (x86) and memfd_secret are refused; none allows them', async (t) => {
  const x86 = process.arch === 'x64'
  if (!x86) t.log(`modify_ldt is x86's alone: only memfd_secret is tried on ${process.arch}`)
  const script = [
    'import ctypes, errno, os',
    'libc = ctypes.CDLL(None, use_errno=True)',
    // One 16-byte user_desc (entry 0, a flat 32-bit data segment), written to the process's LDT.
    ...(x86 ? [
      'desc = (ctypes.c_uint32 * 4)(0, 0, 0xfffff, 0x51)',
      'r = libc.syscall(154, 1, desc, 16)',
      'print("modify_ldt", r, errno.errorcode.get(ctypes.get_errno(), 0) if r else "ok")',
    ] : []),
    // memfd_secret is 447 on x86_64 and arm64 alike.
    'r = libc.syscall(447, 0)',
    'print("memfd_secret", "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), 0))',
  ].join('\n')
  const d = await runIsolated('/usr/bin/python3', ['-c', script])
  if (x86) t.regex(d.stdout, /^modify_ldt -1 EPERM$/m, d.stderr)
  t.regex(d.stdout, /^memfd_secret EPERM$/m, d.stderr)
  const n = await runIsolated('/usr/bin/python3', ['-c', script], { seccomp: 'none' })
  if (x86) t.regex(n.stdout, /^modify_ldt 0 ok$/m, `without the filter the call works here: the filter is what refuses it\n${n.stdout}${n.stderr}`)
  // A kernel without secret memory (CONFIG_SECRETMEM, secretmem.enable) answers ENOSYS itself.
  if (/^memfd_secret ENOSYS$/m.test(n.stdout)) t.log('this kernel has no memfd_secret: the filter\'s EPERM above is all there is to see')
  else t.regex(n.stdout, /^memfd_secret ok$/m, `without the filter the call works here\n${n.stdout}${n.stderr}`)
})

test('seccomp default: io_setup answers ENOSYS (the host has one pool of AIO events, bounded by no cgroup); none allows it', async (t) => {
  const nr = process.arch === 'x64' ? { setup: 206, destroy: 207 } : { setup: 0, destroy: 1 }
  const script = [
    'import ctypes, errno',
    'libc = ctypes.CDLL(None, use_errno=True)',
    'ctx = ctypes.c_ulong(0)',
    `r = libc.syscall(${nr.setup}, 1, ctypes.byref(ctx))`,
    'print("io_setup", "ok" if r == 0 else errno.errorcode.get(ctypes.get_errno(), 0))',
    `r == 0 and libc.syscall(${nr.destroy}, ctx)`,
  ].join('\n')
  const d = await runIsolated('/usr/bin/python3', ['-c', script])
  t.is(d.stdout, 'io_setup ENOSYS\n', d.stderr)
  const n = await runIsolated('/usr/bin/python3', ['-c', script], { seccomp: 'none' })
  t.is(n.stdout, 'io_setup ok\n', `without the filter the call works here: the filter is what refuses it\n${n.stderr}`)
})

test("seccomp default: no file lease (F_SETLEASE), which would hold every other open of the file, the host's too, for 45 s; none allows it", async (t) => {
  const script = [
    'import errno, fcntl, os',
    'fd = os.open("/tmp/leased", os.O_RDONLY | os.O_CREAT, 0o644)',
    'for kind, name in ((fcntl.F_RDLCK, "read"), (fcntl.F_WRLCK, "write")):',
    '  try:',
    '    fcntl.fcntl(fd, 1024, kind); print(name, "lease ok"); fcntl.fcntl(fd, 1024, fcntl.F_UNLCK)',
    '  except OSError as e: print(name, "lease", errno.errorcode[e.errno])',
  ].join('\n')
  const d = await runIsolated('/usr/bin/python3', ['-c', script])
  t.is(d.stdout, 'read lease EPERM\nwrite lease EPERM\n', d.stderr)
  const n = await runIsolated('/usr/bin/python3', ['-c', script], { seccomp: 'none' })
  t.is(n.stdout, 'read lease ok\nwrite lease ok\n', `without the filter the owner takes leases here: the filter is what refuses them\n${n.stderr}`)
})

test("a sandbox opens at most 64 terminals from its devpts (the host's pool for every devpts but its own holds 3072): while one holds all it may, another still gets its terminal", async (t) => {
  const grab = [
    'import errno, os, sys',
    'fds = []',
    'try:',
    '    while True: fds.append(os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY))',
    'except OSError as e: print(len(fds), errno.errorcode[e.errno], flush=True)',
    'sys.stdin.read()',
  ].join('\n')
  const holder = await spawnIsolated('/usr/bin/python3', ['-c', grab], { stdio: ['pipe', 'pipe', 'inherit'], timeoutMs: 60_000 })
  t.teardown(() => holder.kill('SIGKILL'))
  const said = await new Promise<string>((resolve) => {
    let out = ''
    holder.stdout!.on('data', (d) => (out += d))
    holder.stdout!.on('data', () => out.includes('\n') && resolve(out))
    holder.stdout!.on('end', () => resolve(out))
  })
  t.is(said, '64 ENOSPC\n', 'the 65th open of /dev/ptmx is refused')
  const other = await runIsolated('/bin/sh', ['-c', 'tty'], { tty: true })
  t.is(other.stdout, '/dev/pts/0\r\n', 'another sandbox gets its terminal meanwhile')
  holder.stdin!.end()
  t.is((await holder.wait()).exitCode, 0)
})

// Sets the line discipline of fd 0 to N_NULL and prints what happened. A line discipline outlives
// the process that set it: on the caller's terminal it would stay after the sandbox.
const setNullLdisc = [
  'import errno, fcntl, struct, termios',
  'try:',
  '  fcntl.ioctl(0, termios.TIOCSETD, struct.pack("i", 27)); print("changed")',
  'except OSError as e: print(errno.errorcode[e.errno])',
].join('\n')
const hasNullLdisc = /^n_null\s+27$/m.test(readFileSync('/proc/tty/ldiscs', 'utf8'))

test('seccomp default: TIOCSETD is refused on the sandbox\'s own terminal; none allows it', async (t) => {
  const d = await runIsolated('/usr/bin/python3', ['-c', setNullLdisc], { tty: true })
  t.is(d.stdout.trim(), 'EPERM', d.stderr)
  // Set back to N_TTY at once: N_NULL discards what the command writes after it.
  const calibrate = setNullLdisc.replace('print("changed")', 'fcntl.ioctl(0, termios.TIOCSETD, struct.pack("i", 0)); print("changed")')
  const n = await runIsolated('/usr/bin/python3', ['-c', calibrate], { tty: true, seccomp: 'none' })
  t.not(n.stdout.trim(), 'EPERM', 'without the filter the kernel does not refuse it: the filter is what does')
  if (hasNullLdisc) t.is(n.stdout.trim(), 'changed')
})

test('seccomp default: a sandbox on the caller\'s terminal cannot change its line discipline', async (t) => {
  // A pty whose slave a Node process hands to the sandbox as its stdin (as an fd: were it Node's
  // own stdin, the calibration run would make Node abort at its exit, in ResetStdio, as the
  // isolate CLI did); afterwards the harness asks the slave, as the caller's shell would, for its
  // line discipline.
  const harness = [
    'import errno, fcntl, os, struct, subprocess, sys, termios',
    'm, s = os.openpty()',
    'p = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, pass_fds=(s,), env={**os.environ, "TTY_FD": str(s)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)',
    'ld = struct.unpack("i", fcntl.ioctl(s, termios.TIOCGETD, bytes(4)))[0]',
    'try: termios.tcgetattr(s); attr = "ok"',
    'except termios.error as e: attr = errno.errorcode[e.args[0]]',
    'print(p.stdout.decode().strip() or p.stderr.decode().strip(), ld, attr)',
  ].join('\n')
  const node = (seccomp: string) => `
    const { spawnIsolated } = await import(${JSON.stringify(join(root, 'index.ts'))})
    const sb = await spawnIsolated('/usr/bin/python3', ['-c', ${JSON.stringify(setNullLdisc)}], { stdio: [Number(process.env.TTY_FD), 'pipe', 'inherit'], seccomp: '${seccomp}' })
    let out = ''
    sb.stdout.on('data', (d) => (out += d))
    const ended = new Promise((r) => sb.stdout.once('end', r))
    await sb.wait()
    await ended
    process.stdout.write(out)`
  const run = (seccomp: string) => spawnSync('python3', ['-c', harness, process.execPath, '--import=tsx', '--input-type=module', '-e', node(seccomp)], { cwd: root, encoding: 'utf8', timeout: 90_000 })
  const d = run('default')
  t.is(d.stdout, 'EPERM 0 ok\n', d.stderr)
  const n = run('none')
  if (hasNullLdisc) t.is(n.stdout, 'changed 27 EINVAL\n', `without the filter the caller's terminal is broken: ${n.stderr}`)
  else t.notRegex(n.stdout, /^EPERM/, n.stderr)
})

test('seccomp default: no file gets a set-user-id or set-group-id bit (chmod, creating open); none allows it', async (t) => {
  const script = [
    'import os',
    'def tried(f):',
    '  try: f(); return "ok"',
    '  except OSError as e: return str(e.errno)',
    'open("/tmp/f", "w").close()',
    'print(tried(lambda: os.chmod("/tmp/f", 0o4755)), tried(lambda: os.chmod("/tmp/f", 0o2755)), tried(lambda: os.close(os.open("/tmp/g", os.O_CREAT | os.O_WRONLY, 0o4755))), tried(lambda: os.chmod("/tmp", 0o3777)))',
    'print(tried(lambda: os.chmod("/tmp/f", 0o755)), tried(lambda: os.close(os.open("/tmp/h", os.O_CREAT | os.O_WRONLY, 0o755))), tried(lambda: os.mkdir("/tmp/e", 0o1777)))',
  ].join('\n')
  const strict = await runIsolated('/usr/bin/python3', ['-c', script])
  t.is(strict.stdout, `${libcEperm} ${libcEperm} ${libcEperm} ${libcEperm}\nok ok ok\n`, strict.stderr)
  const none = await runIsolated('/usr/bin/python3', ['-c', script], { seccomp: 'none' })
  t.is(none.stdout, 'ok ok ok ok\nok ok ok\n', none.stderr)
})

test('seccomp: ordinary programs keep working under the default profile', async (t) => {
  const r = await runIsolated('/usr/bin/python3', ['-c', 'import threading, subprocess, socket\nt = threading.Thread(target=lambda: None); t.start(); t.join()\na, b = socket.socketpair(); a.send(b"x"); print(b.recv(1), subprocess.run(["/bin/echo", "child"], capture_output=True).stdout)'])
  t.is(r.stdout, "b'x' b'child\\n'\n", r.stderr)
  const node = await runIsolated(process.execPath, ['-e', 'const { Worker } = require("worker_threads"); new Worker("process.exit(0)", { eval: true }).on("exit", () => console.log("node ok"))'])
  t.is(node.stdout, 'node ok\n', node.stderr)
})

test('seccomp: a custom OCI profile is enforced, and a broken one is refused as an option naming the field, before any process', async (t) => {
  const profile = { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO', errnoRet: 13 }] }
  const r = await sh('mkdir /tmp/d 2>&1; echo rc=$?; touch /tmp/f && echo touched', { seccomp: profile })
  t.regex(r.stdout, /Permission denied/)
  t.regex(r.stdout, /touched/)
  const asText = await sh('mkdir /tmp/d && echo made', { seccomp: JSON.stringify({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [] }) })
  t.is(asText.stdout, 'made\n')
  // Compiled once in the addon, before any process: refused as the option it is.
  const e = await t.throwsAsync(spawnIsolated('/bin/true', [], { seccomp: { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['read'], action: 'SCMP_ACT_FOO' }] } }), { instanceOf: IsolateError })
  t.is(e?.code, 'ERR_ISOLATE_OPTION')
  t.is(e?.option, 'seccomp')
  t.regex(e!.message, /syscalls\[0\]\.action/)
})

test('seccomp: a profile naming a system call no architecture has is refused (a typo would leave its denial out), one naming another architecture\'s call is not', async (t) => {
  // The misspelt name sits beside a real one: left out silently, mkdir would still work inside.
  const typo = { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['mkdirat', 'mkdri'], action: 'SCMP_ACT_ERRNO', errnoRet: 13 }] }
  const e = await t.throwsAsync(spawnIsolated('/bin/true', [], { seccomp: typo }), { instanceOf: IsolateError })
  t.deepEqual([e?.code, e?.option], ['ERR_ISOLATE_OPTION', 'seccomp'])
  t.regex(e!.message, /syscalls\[0\]\.names\[1\]: "mkdri" is no system call of any architecture libseccomp knows \(did you mean "mkdir"\?\)/)
  // arm_fadvise64_64 and socketcall exist on 32-bit arm and i386 only: skipped here, as in Docker's profile.
  const foreign = { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['arm_fadvise64_64', 'socketcall', 'mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO', errnoRet: 13 }] }
  const r = await sh('mkdir /tmp/d 2>&1; echo rc=$?', { seccomp: foreign })
  t.regex(r.stdout, /Permission denied\nrc=1/)
})

test("a process inside cannot pass for the helper: the init's marked signals (end, stop, a group stop) are taken only from outside its pid namespace; one queued from inside is only forwarded", async (t) => {
  // The helper ends the sandbox by queueing signal 64 with END_MARK on the init (the init then
  // kills every process); queued so from inside, the shell (the command) gets signal 64 instead.
  const END_MARK = 0x454e4421
  const queue = `import ctypes; libc = ctypes.CDLL(None); libc.sigqueue.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p]; print("sent", libc.sigqueue(1, 64, ${END_MARK}), flush=True)`
  const r = await runIsolated('/bin/sh', ['-c', `trap "echo forwarded" 64; /usr/bin/python3 -c '${queue}'; sleep 0.3; echo alive`], { timeoutMs: 20_000 })
  t.like(r, { exitCode: 0, signal: null, stdout: 'sent 0\nforwarded\nalive\n' })
})
