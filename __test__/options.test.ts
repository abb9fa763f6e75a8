import * as vm from 'node:vm'
/** Invalid options throw before anything is spawned, naming the option. */
import test from 'ava'
import { chmodSync, existsSync, readFileSync, symlinkSync } from 'node:fs'
import { join } from 'node:path'
import { configurePool, createSandbox, importImage, IsolateError, probe, runIsolated, spawnIsolated, unpackRootfs } from '../index.js'
import { shown } from '../lib/errors.js'
import { NAMESPACE_OWNER_IDS } from '../lib/probe.js'
import { alpineTarball, isRoot, removeDir, tempDir, zombieChildren } from './helpers.js'

/** This process's hard RLIMIT_NOFILE. */
const hardNoFile = () => Number(/^Max open files\s+\S+\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))![1])

const owners = isRoot ? (await probe()).namespaceOwners : null

const cases: Array<[string, Record<string, unknown>, string]> = [
  ['relative mount target', { mounts: [{ type: 'tmpfs', target: 'tmp' }] }, 'mounts[0].target'],
  ['unknown mount type', { mounts: [{ type: 'nfs', target: '/x' }] }, 'mounts[0].type'],
  ['unknown mount field', { mounts: [{ type: 'bind', source: '/tmp', target: '/x', rw: true }] }, 'mounts[0].rw'],
  ['mount over /proc', { mounts: [{ type: 'tmpfs', target: '/proc' }] }, 'mounts[0].target'],
  ['dotdot target', { mounts: [{ type: 'tmpfs', target: '/a/../b' }] }, 'mounts[0].target'],
  ['zero tmpfs size', { mounts: [{ type: 'tmpfs', target: '/a', sizeBytes: 0 }] }, 'mounts[0].sizeBytes'],
  ['bad hostname', { hostname: 'no spaces please' }, 'hostname'],
  ['bad network', { network: 'bridge' }, 'network'],
  ['net namespace off with network none', { namespaces: { net: false } }, 'namespaces.net'],
  ['mount namespace off', { namespaces: { mount: false } }, 'namespaces.mount'],
  ['unknown namespace', { namespaces: { time: true } }, 'namespaces.time'],
  ['env value not a string', { env: { A: 1 } }, 'env.A'],
  ['env as a Map (it was an empty environment, no PATH)', { env: new Map([['A', 'b']]) }, 'env'],
  ['relative cwd', { cwd: 'tmp' }, 'cwd'],
  ['negative uid', { user: { uid: -1, gid: 0 } }, 'user'],
  ['a host variable to inherit that is no name', { inheritEnv: ['A=B'] }, 'inheritEnv[0]'],
  ['a host variable to inherit that is no string (a raw TypeError)', { inheritEnv: ['PATH', 1] }, 'inheritEnv[1]'],
  ['a hole among the host variables to inherit', { inheritEnv: [, 'PATH'] }, 'inheritEnv[0]'],
  ['supplementary groups, which the command never has', { user: { uid: 1000, gid: 1000, groups: [5] } }, 'user.groups'],
  ['zero timeout', { timeoutMs: 0 }, 'timeoutMs'],
  ['unknown option', { hostnmae: 'x' }, 'hostnmae'],
  ['bad stdio', { stdio: ['pipe', 'pipe'] }, 'stdio'],
  ['stdio fd not open', { stdio: ['ignore', 99999, 'ignore'] }, 'stdio[1]'],
  ['overlay of a file (overlayfs said EINVAL of an internal layer name)', { mounts: [{ type: 'overlay', source: '/etc/hostname', target: '/x' }] }, 'mounts[0].source'],
  ['rootfs slash', { rootfs: '/' }, 'rootfs'],
  ['the host\'s / as a layer (it failed at mount_overlay with path \'\')', { rootfs: { layers: ['/tmp', '/'] } }, 'rootfs.layers[1]'],
  ['a file as a layer (it said ENOENT)', { rootfs: { layers: ['/etc/hostname'] } }, 'rootfs.layers[0]'],
  ['an unknown field of rootfs (it was ignored)', { rootfs: { layers: ['/tmp'], upper: '/tmp' } }, 'rootfs.upper'],
  ['unknown capability', { capabilities: ['NET_BIND_SERVICE', 'FLY'] }, 'capabilities[1]'],
  ['relative landlock path', { landlock: { read: ['usr'] } }, 'landlock.read[0]'],
  ['unknown landlock list', { landlock: { delete: ['/x'] } }, 'landlock.delete'],
  ['seccomp not a profile', { seccomp: 'strict' }, 'seccomp'],
  ['negative cpus', { limits: { cpus: -1 } }, 'limits.cpus'],
  ['tiny memory', { limits: { memoryBytes: 4096 } }, 'limits.memoryBytes'],
  ['zero pids', { limits: { pids: 0 } }, 'limits.pids'],
  ['one pid, the init\'s (it failed at fork_command with EAGAIN, naming no option; a long-lived sandbox came up and refused every exec)', { limits: { pids: 1 } }, 'limits.pids'],
  ['openFiles above fs.nr_open (it failed at set_rlimits with EPERM and no hint)', { limits: { openFiles: 1e9 + 1 } }, 'limits.openFiles'],
  ['openFiles above this process\'s hard limit, which a sandbox cannot raise', { limits: { openFiles: hardNoFile() + 1 } }, 'limits.openFiles'],
  ['tty of no size', { tty: { rows: 0, cols: 80 } }, 'tty'],
  ['tty with an output bound', { tty: true, limits: { outputBytes: 100 } }, 'limits.outputBytes'],
  ['mounts not an array', { mounts: 'abc' }, 'mounts'],
  ['mounts an object', { mounts: {} }, 'mounts'],
  ['= in an env name (it would set another variable)', { env: { 'PATH=/evil:/bin;X': '1' } }, 'env.PATH=/evil:/bin;X'],
  ['empty env name', { env: { '': '1' } }, 'env.'],
  ['lone surrogate in an env value', { env: { A: 'x\uD800' } }, 'env.A'],
  ['lone surrogate in a path', { cwd: '/\uDC00' }, 'cwd'],
  ['empty rootfs (it meant the working directory)', { rootfs: '' }, 'rootfs'],
  ['input is runIsolated\'s', { input: 'x' }, 'input'],
  ['encoding is runIsolated\'s', { encoding: 'buffer' }, 'encoding'],
  ['maxBuffer is runIsolated\'s', { maxBuffer: 10 }, 'maxBuffer'],
  ['pids above the kernel\'s ceiling (it failed at write_cgroup_limits with EINVAL)', { limits: { pids: 5_000_000 } }, 'limits.pids'],
  ['a hostname without the uts namespace (it was silently the host\'s)', { hostname: 'x', namespaces: { uts: false } }, 'hostname'],
  ['net namespace on with network host (it was silently a network of its own)', { network: 'host', namespaces: { net: true } }, 'namespaces.net'],
  ['NUL in an env value (it was named env[0])', { env: { A: 'x\0y' } }, 'env.A'],
  ['empty bind source (it bound the working directory)', { mounts: [{ type: 'bind', source: '', target: '/x' }] }, 'mounts[0].source'],
  ['empty overlay upper', { rootfs: '/tmp', overlay: { upper: '' } }, 'overlay.upper'],
  ['the host\'s / as the overlay upper (it said path \'\')', { overlay: { upper: '/' } }, 'overlay.upper'],
  ['/./proc as a mount target (it replaced the sandbox\'s /proc)', { mounts: [{ type: 'bind', source: '/proc', target: '/./proc' }] }, 'mounts[0].target'],
  ['//dev as a mount target', { mounts: [{ type: 'tmpfs', target: '//dev' }] }, 'mounts[0].target'],
  ['a second spelling of an earlier target', { mounts: [{ type: 'tmpfs', target: '/x' }, { type: 'tmpfs', target: '/./x' }] }, 'mounts[1].target'],
  // Without a user namespace (root only): it ran as host root, the kernel reading it as 'unchanged'.
  ...(isRoot ? [['uid 4294967295 without a user namespace', { namespaces: { user: false }, user: { uid: 2 ** 32 - 1, gid: 2 ** 32 - 1 } }, 'user'] as [string, Record<string, unknown>, string]] : []),
  // The ids that own root's sandboxes' user namespaces: a host process running as one would hold one's capabilities.
  ...(isRoot && owners !== null
    ? ([
        ['the first owner of root sandboxes\' user namespaces without a user namespace', { namespaces: { user: false }, user: { uid: owners, gid: 1000 } }, 'user'],
        ['an owner past the first 65536 (a helper pid above 65535)', { namespaces: { user: false }, user: { uid: owners + 65536, gid: 1000 } }, 'user'],
        ['the last owner of root sandboxes\' user namespaces', { namespaces: { user: false }, user: { uid: owners + NAMESPACE_OWNER_IDS - 1, gid: 1000 } }, 'user'],
      ] as Array<[string, Record<string, unknown>, string]>)
    : []),
  ['gid 4294967295', { user: { uid: 0, gid: 2 ** 32 - 1 } }, 'user'],
  ['a cwd longer than the kernel takes (its error hung the sandbox)', { cwd: `/${'a'.repeat(70_000)}` }, 'cwd'],
]

test('invalid: a command path longer than the kernel takes (its error hung the sandbox)', async (t) => {
  const e = await t.throwsAsync(spawnIsolated(`/${'a'.repeat(70_000)}`), { instanceOf: IsolateError })
  t.is(e?.option, 'file')
})

for (const [name, options, option] of cases) {
  test(`invalid: ${name}`, async (t) => {
    const e = await t.throwsAsync(spawnIsolated('/bin/true', [], options as never), { instanceOf: IsolateError })
    t.is(e?.code, 'ERR_ISOLATE_OPTION')
    t.is(e?.option, option)
    t.true(e!.message.includes(option), e!.message)
  })
}

const unsupported: Array<[string, Record<string, unknown>, string]> = [
]

for (const [name, options, option] of unsupported) {
  test(`refused rather than ignored: ${name}`, async (t) => {
    const e = await t.throwsAsync(spawnIsolated('/bin/true', [], options as never), { instanceOf: IsolateError })
    t.is(e?.code, 'ERR_ISOLATE_UNSUPPORTED')
    t.is(e?.option, option)
  })
}

test('invalid file and args', async (t) => {
  await t.throwsAsync(spawnIsolated('', []), { instanceOf: IsolateError, message: /options\.file/ })
  await t.throwsAsync(spawnIsolated('/bin/true', [1 as never]), { instanceOf: IsolateError, message: /options\.args/ })
  t.is((await t.throwsAsync(spawnIsolated('/bin/t\0rue', []), { instanceOf: IsolateError }))?.option, 'file')
  t.is((await t.throwsAsync(spawnIsolated('/bin/echo', ['ok', '\uD800']), { instanceOf: IsolateError }))?.option, 'args[1]')
  // A hole passed the check (every and forEach skip it) and the addon refused it naming no option.
  t.is((await t.throwsAsync(spawnIsolated('/bin/echo', ['ok', , 'x'] as string[]), { instanceOf: IsolateError }))?.option, 'args[1]')
  // Read once, through a copy: a trap that throws is an option error, not a raw one.
  const trapped = new Proxy(['ok'], { get: (a, k) => (k === '0' ? (() => { throw new Error('boom') })() : Reflect.get(a, k)) })
  const e = await t.throwsAsync(spawnIsolated('/bin/echo', trapped), { instanceOf: IsolateError })
  t.is(e?.option, 'args')
  t.regex(e!.message, /could not be read: boom/)
  // As many as execve takes: more than an option's bound on entries (65536).
  const many = await runIsolated('/bin/sh', ['-c', 'echo $#', 'sh', ...Array(70_000).fill('a')])
  t.is(many.stdout, '70000\n', many.stderr)
})

test('args whose length says more than execve takes are refused before anything is made of them (a length of 2^32-1 took Node down: a fatal out-of-memory)', async (t) => {
  const huge: string[] = []
  huge.length = 2 ** 32 - 1
  const claims = new Proxy<string[]>([], { get: (a, k) => (k === 'length' ? 2 ** 32 - 1 : Reflect.get(a, k)) })
  const sb = await createSandbox()
  t.teardown(() => sb.destroy())
  for (const args of [huge, claims]) {
    const started = Date.now()
    for (const call of [() => spawnIsolated('/bin/true', args), () => runIsolated('/bin/true', args), () => sb.exec('/bin/true', args)]) {
      const e = await t.throwsAsync(call(), { instanceOf: IsolateError })
      t.is(e?.option, 'args')
      t.regex(e!.message, /at most 1048576/)
    }
    t.true(Date.now() - started < 1000, 'refused at once')
  }
  // A long sparse array is refused at its first hole, not after it is read whole.
  const sparse: string[] = ['a']
  sparse.length = 1_000_000
  t.is((await t.throwsAsync(spawnIsolated('/bin/true', sparse), { instanceOf: IsolateError }))?.option, 'args[1]')
})

test('a revoked Proxy as args or as the options of runIsolated, sb.exec or configurePool is an option error, not a TypeError', async (t) => {
  const revoked = () => {
    const { proxy, revoke } = Proxy.revocable({}, {})
    revoke()
    return proxy as never
  }
  const sb = await createSandbox()
  t.teardown(() => sb.destroy())
  for (const call of [() => spawnIsolated('/bin/true', revoked()), () => sb.exec('/bin/true', revoked()), () => runIsolated('/bin/true', [], revoked()), () => sb.exec('/bin/true', [], revoked())]) {
    const e = await t.throwsAsync(call(), { instanceOf: IsolateError })
    t.is(e?.code, 'ERR_ISOLATE_OPTION')
    t.regex(e!.message, /could not be read/)
  }
  t.is(t.throws(() => configurePool(revoked()), { instanceOf: IsolateError })?.code, 'ERR_ISOLATE_OPTION')
})

test("a signal is an AbortSignal Node made, and its own state decides: an object that only inherits from AbortSignal is refused; an `aborted` getter of its own that lies or throws changes nothing", async (t) => {
  const fake = Object.create(AbortSignal.prototype) as AbortSignal
  for (const call of [() => spawnIsolated('/bin/true', [], { signal: fake }), () => createSandbox({ signal: fake })]) {
    t.is((await t.throwsAsync(call(), { instanceOf: IsolateError }))?.option, 'signal')
  }
  // Lies on its third read (after the start: the sandbox ran and was never ended, nor waited
  // for as if it had been), or throws there (a raw Error, the sandbox left running).
  for (const third of [() => true, () => { throw new Error('x') }]) {
    const ac = new AbortController()
    let reads = 0
    Object.defineProperty(ac.signal, 'aborted', { get: () => (++reads >= 3 ? third() : false) })
    const r = await runIsolated('/bin/echo', ['ran'], { signal: ac.signal })
    t.is(r.reason, 'exited')
    t.is(r.stdout, 'ran\n')
    const box = await createSandbox({ signal: ac.signal })
    t.is((await box.exec('/bin/echo', ['in'], { signal: ac.signal })).stdout, 'in\n')
    await box.destroy()
  }
  t.deepEqual(zombieChildren(), [])
})

test('a rootfs that is the host\'s / through a symlink is refused like \'/\'', async (t) => {
  const dir = tempDir()
  t.teardown(() => removeDir(dir))
  symlinkSync('/', join(dir, 'root'))
  const e = await t.throwsAsync(spawnIsolated('/bin/true', [], { rootfs: join(dir, 'root') }), { instanceOf: IsolateError })
  t.is(e?.option, 'rootfs')
})

test('runIsolated and sb.exec check input, encoding and maxBuffer before anything runs', async (t) => {
  const dir = tempDir()
  t.teardown(() => removeDir(dir))
  chmodSync(dir, 0o777) // the sandbox's root is an unprivileged host id
  const marks = { mounts: [{ type: 'bind' as const, source: dir, target: '/m', readonly: false }] }
  const bad: Array<[Record<string, unknown> | null, string]> = [
    [{ ...marks, input: 5 }, 'input'],
    [{ ...marks, encoding: 'bogus' }, 'encoding'],
    [{ ...marks, maxBuffer: -1 }, 'maxBuffer'],
    [null, ''],
  ]
  for (const [options, option] of bad) {
    const e = await t.throwsAsync(runIsolated('/bin/sh', ['-c', 'touch /m/ran'], options as never), { instanceOf: IsolateError })
    t.is(e?.code, 'ERR_ISOLATE_OPTION')
    t.is(e?.option, option)
  }
  const sb = await createSandbox(marks)
  t.teardown(() => sb.destroy())
  for (const [options, option] of bad.slice(0, 3)) {
    const { mounts: _, ...execOptions } = options as Record<string, unknown>
    const e = await t.throwsAsync(sb.exec('/bin/sh', ['-c', 'touch /m/ran'], execOptions as never), { instanceOf: IsolateError })
    t.is(e?.option, option)
  }
  await new Promise((r) => setTimeout(r, 300))
  t.false(existsSync(join(dir, 'ran')), 'no command ran (it did, and stayed, when input was checked after the spawn)')
  // Control: the same command with good options leaves the mark.
  t.is((await runIsolated('/bin/sh', ['-c', 'touch /m/ran'], marks)).exitCode, 0)
  t.true(existsSync(join(dir, 'ran')))
})

// Serial, so before the tests of this file that do start sandboxes (whose helpers are, for a
// moment, zombie children of this process).
test('runIsolated refuses input that has no stdin to go to; configurePool refuses what it does not take, as an IsolateError', async (t) => {
  const e = await t.throwsAsync(runIsolated('/bin/cat', [], { input: 'x', stdio: ['ignore', 'pipe', 'pipe'] }), { instanceOf: IsolateError })
  t.is(e?.option, 'input')
  for (const [options, option] of [[{ size: -1 }, 'size'], [{ size: 1.5 }, 'size'], [{ sizes: 2 }, 'sizes']] as const) {
    const err = t.throws(() => configurePool(options as never), { instanceOf: IsolateError })
    t.is(err?.option, option)
  }
  t.notThrows(() => configurePool())
})

test("an unknown option's error names the call the caller made, what the option likely meant (a typo, another tool's name for it) and the options there are", async (t) => {
  const cases: Array<[() => Promise<unknown>, string, RegExp]> = [
    [() => runIsolated('/bin/true', [], { timeout: 1 } as never), 'timeout', /^options\.timeout: is not an option of runIsolated \(did you mean timeoutMs\?\); its options are rootfs, .*, maxBuffer$/],
    [() => runIsolated('/bin/true', [], { memoryLimit: 1 } as never), 'memoryLimit', /of runIsolated \(did you mean limits\.memoryBytes\?\)/],
    [() => spawnIsolated('/bin/true', [], { hostnmae: 'x' } as never), 'hostnmae', /of spawnIsolated \(did you mean hostname\?\); its options are .*landlock, stop$/],
    [() => createSandbox({ timout: 1 } as never), 'timout', /of createSandbox \(did you mean timeoutMs\?\); its options are (?!.*\bstdio\b)(?!.*\binput\b).*landlock, stop$/],
    [() => spawnIsolated('/bin/true', [], { shell: true } as never), 'shell', /\(here: the command '\/bin\/sh' with args \['-c', script\]\)/],
    [() => spawnIsolated('/bin/true', [], { qqqq: 1 } as never), 'qqqq', /^options\.qqqq: is not an option of spawnIsolated; its options are/],
    // A short name is one edit from many: only one edit counts there (dir is no 'user', foo no 'root').
    [() => spawnIsolated('/bin/true', [], { dir: 1, foo: 2 } as never), 'dir', /^options\.dir: is not an option of spawnIsolated; its options are/],
    [() => spawnIsolated('/bin/true', [], { ids: 1 } as never), 'ids', /\(did you mean user\?\)/],
    // A key of a million characters is refused at once, with no suggestion worked out for it.
    [() => spawnIsolated('/bin/true', [], { [`timeout${'x'.repeat(1e6)}`]: 1 } as never), `timeout${'x'.repeat(1e6)}`, /^options\.timeoutx+: is not an option of spawnIsolated; its options are/],
    [() => createSandbox({ limits: { memry: 1 } } as never), 'limits.memry', /^options\.limits\.memry: is not a limit \(did you mean limits\.memoryBytes\?\); the limits are (?!.*outputBytes).*coreDumps$/],
    [() => spawnIsolated('/bin/true', [], { limits: { memory: 1 } } as never), 'limits.memory', /^options\.limits\.memory: is not a limit \(did you mean limits\.memoryBytes\?\); the limits are .*coreDumps$/],
    [() => spawnIsolated('/bin/true', [], { limits: { cpuTime: 1 } } as never), 'limits.cpuTime', /did you mean limits\.cpuTimeMs\?/],
    [() => spawnIsolated('/bin/true', [], { mounts: [{ type: 'bnd', source: '/tmp', target: '/x' }] } as never), 'mounts[0].type', /^options\.mounts\[0\]\.type: must be 'bind', 'tmpfs' or 'overlay', got "bnd" \(did you mean 'bind'\?\)$/],
    [() => spawnIsolated('/bin/true', [], { mounts: [{ source: '/tmp', target: '/x' }] } as never), 'mounts[0].type', /got undefined$/],
  ]
  const sb = await createSandbox()
  t.teardown(() => sb.destroy())
  cases.push(
    [() => sb.exec('/bin/true', [], { timeout: 1 } as never), 'timeout', /^options\.timeout: is not an option of sb\.spawn or sb\.exec \(did you mean timeoutMs\?\); its options are env, cwd, tty, stdio, timeoutMs, signal, stop, input, encoding, maxBuffer$/],
    [async () => configurePool({ szie: 2 } as never), 'szie', /^options\.szie: is not an option of configurePool \(did you mean size\?\); its options are size$/],
  )
  for (const [call, option, message] of cases) {
    const e = await t.throwsAsync(call(), { instanceOf: IsolateError })
    t.is(e?.code, 'ERR_ISOLATE_OPTION')
    t.is(e?.option, option)
    t.regex(e?.message ?? '', message)
  }
})

test.serial('nothing is spawned for invalid options', async (t) => {
  await t.throwsAsync(spawnIsolated('/bin/true', [], { hostname: '' }))
  t.deepEqual(zombieChildren(), [])
})

test('unpackRootfs and importImage check their options before their tool starts', async (t) => {
  const dir = tempDir()
  t.teardown(() => removeDir(dir))
  for (const call of [unpackRootfs, importImage]) {
    const e = await t.throwsAsync(call(alpineTarball, join(dir, 'out'), { signal: 5 as never }), { instanceOf: IsolateError })
    t.is(e?.option, 'signal')
    t.is((await t.throwsAsync(call(alpineTarball, join(dir, 'out'), null as never), { instanceOf: IsolateError }))?.code, 'ERR_ISOLATE_OPTION')
  }
  await new Promise((r) => setTimeout(r, 300))
  t.false(existsSync(join(dir, 'out')), 'nothing unpacked (the tool ran on, unwatched, when the signal was checked after its start)')
  t.deepEqual(zombieChildren(), [])
})

test('openFiles up to this process\'s hard limit is what the command gets', async (t) => {
  const n = Math.min(hardNoFile(), 4096)
  const r = await runIsolated('/bin/sh', ['-c', 'ulimit -Hn'], { limits: { openFiles: n } })
  t.is(r.stdout.trim(), String(n), r.stderr)
})

test('options that cannot become JSON are option errors (BigInt, cycles, throwing getters), never a TypeError', async (t) => {
  const cycle: Record<string, unknown> = { defaultAction: 'SCMP_ACT_ALLOW' }
  cycle.self = cycle
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ network: 1n }, 'network'],
    [{ stdio: ['pipe', 1n, 'pipe'] }, 'stdio[1]'],
    [{ mounts: [{ type: 1n, target: '/x' }] }, 'mounts[0].type'],
    [{ seccomp: { defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['read'], action: 'SCMP_ACT_ERRNO', errnoRet: 1n }] } }, 'seccomp'],
    [{ seccomp: cycle }, 'seccomp.self'],
    [{ get cwd() { throw new Error('a getter that throws') } }, 'cwd'],
    [{ maxBuffer: 1n }, 'maxBuffer'],
    [{ encoding: 1n }, 'encoding'],
  ]
  for (const [options, option] of cases) {
    const e = await t.throwsAsync(runIsolated('/bin/true', [], options as never), { instanceOf: IsolateError }, option)
    t.is(e?.option, option)
  }
  const m = await t.throwsAsync(runIsolated('/bin/true', [], { maxBuffer: 1n } as never), { instanceOf: IsolateError })
  t.regex(m!.message, /got 1n/, 'a BigInt is shown as one, not as the number it is not')
})

test.serial('a property set on Object.prototype (pollution elsewhere in the process) is never read as an option', async (t) => {
  const proto = Object.prototype as Record<string, unknown>
  const box = await createSandbox()
  t.teardown(() => box.destroy())
  proto.seccomp = 'none'
  proto.namespaces = { user: false, net: false }
  proto.network = 'host'
  try {
    const r = await runIsolated('/bin/sh', ['-c', 'grep -E "^(Seccomp|Uid):" /proc/self/status; awk -F: \'NR > 2 { gsub(/ /, "", $1); print "if " $1 }\' /proc/net/dev'])
    t.regex(r.stdout, /^Seccomp:\s+2$/m, 'the default filter')
    t.regex(r.stdout, /^Uid:\s+0\s+0\s+0\s+0$/m, 'root of its own user namespace')
    t.deepEqual(r.stdout.split('\n').filter((l) => l.startsWith('if ')), ['if lo'], `a network of its own\n${r.stdout}${r.stderr}`)
    const e = await box.exec('/bin/sh', ['-c', 'grep ^Seccomp: /proc/self/status'])
    t.regex(e.stdout, /^Seccomp:\s+2$/m, 'an exec too (its request was read with the prototype\'s properties)')
  } finally {
    delete proto.seccomp
    delete proto.namespaces
    delete proto.network
  }
})

test.serial('a limit, an env PATH or a namespace name set on Object.prototype is not read where the caller gave none', async (t) => {
  const proto = Object.prototype as Record<string, unknown>
  proto.timeoutMs = 300
  proto.coreDumps = true
  proto.PATH = '/nowhere'
  try {
    const r = await runIsolated('/bin/sh', ['-c', 'sleep 0.6; ulimit -c; echo "$PATH"'])
    t.is(r.reason, 'exited', 'no timeout came from the prototype')
    t.is(r.stdout, '0\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n', r.stderr)
  } finally {
    delete proto.timeoutMs
    delete proto.coreDumps
    delete proto.PATH
  }
  const e = await t.throwsAsync(runIsolated('/bin/true', [], { namespaces: { constructor: false } as never }), { instanceOf: IsolateError })
  t.is(e?.option, 'namespaces.constructor')
})

test('options inherited from defaults (Object.create), a class\'s getters through runIsolated, and getters that are no options', async (t) => {
  const defaults = { hostname: 'from-defaults', env: { PATH: '/usr/bin:/bin', WHO: 'defaults' } }
  const r = await runIsolated('/bin/sh', ['-c', 'hostname; echo "$WHO"'], Object.create(defaults) as typeof defaults)
  t.is(r.stdout, 'from-defaults\ndefaults\n', r.stderr)
  class Job {
    get hostname() {
      return 'from-a-getter'
    }
    get summary() {
      return 'not an option, and never taken for one'
    }
  }
  const c = await runIsolated('/bin/hostname', [], new Job() as {})
  t.is(c.stdout, 'from-a-getter\n', c.stderr)
})

test('option graphs: a subtree shared many times is copied once; a stream is a value, not options; a Proxy whose length throws is an option error', async (t) => {
  let shared: unknown = { PATH: '/usr/bin:/bin' }
  for (let i = 0; i < 40; i++) shared = { a: shared, b: shared }
  // 2^40 paths through it: walked path by path this would never end.
  const e = await t.throwsAsync(runIsolated('/bin/true', [], { env: shared as never }), { instanceOf: IsolateError })
  t.is(e?.option, 'env.a', 'its first value is not a string')
  const s = await t.throwsAsync(runIsolated('/bin/true', [], { stdio: ['pipe', process.stdout, 'pipe'] as never }), { instanceOf: IsolateError })
  t.is(s?.option, 'stdio[1]')
  t.notRegex(s!.message, /cycle/)
  const trap = new Proxy([], { get: (target, key) => (key === 'length' ? (() => { throw new Error('no length') })() : Reflect.get(target, key)) })
  const p = await t.throwsAsync(runIsolated('/bin/true', [], { capabilities: trap as never }), { instanceOf: IsolateError })
  t.is(p?.option, 'capabilities')
})

test('an object held in many places is refused as a seccomp profile, and shown cut short in a message, where written out it would never end', async (t) => {
  let dag: unknown = { names: ['read'], action: 'SCMP_ACT_ALLOW' }
  // 2^40 copies as JSON text: JSON.stringify alone hung the call (and Node's loop) for good.
  for (let i = 0; i < 40; i++) dag = { l: dag, r: dag }
  const profile = await t.throwsAsync(runIsolated('/bin/true', [], { seccomp: { defaultAction: 'SCMP_ACT_ALLOW', rules: dag } }), { instanceOf: IsolateError })
  t.is(profile?.option, 'seccomp')
  t.regex(profile!.message, /at most 4 MiB as JSON text; this one is more/)
  for (const [options, option] of [[{ network: dag }, 'network'], [{ mounts: [{ type: dag, target: '/x' }] }, 'mounts[0].type']] as const) {
    const e = await t.throwsAsync(runIsolated('/bin/true', [], options as never), { instanceOf: IsolateError })
    t.is(e?.option, option)
    t.regex(e!.message, /\[object Object\] \(more than 65536 characters as JSON\)/)
  }
  const text = JSON.stringify({ defaultAction: 'SCMP_ACT_ALLOW', pad: 'x'.repeat(4 << 20) })
  const long = await t.throwsAsync(runIsolated('/bin/true', [], { seccomp: text }), { instanceOf: IsolateError })
  t.is(long?.option, 'seccomp')
  t.regex(long!.message, /at most 4 MiB as JSON text; this one has \d+ characters/)
  // Short values are shown whole, as before; a long text by its start and its length.
  const short = await t.throwsAsync(runIsolated('/bin/true', [], { network: { a: [1, 2] } } as never), { instanceOf: IsolateError })
  t.regex(short!.message, /got \{"a":\[1,2\]\}/)
  const longText = await t.throwsAsync(runIsolated('/bin/true', [], { network: 'n'.repeat(70_000) } as never), { instanceOf: IsolateError })
  t.regex(longText!.message, /got "n{1024}"… \(70000 characters\)$/)
  // String objects count as the text they write (a value shown as it came, as kill()'s signal).
  let boxed: unknown = new String('s'.repeat(2000))
  for (let i = 0; i < 30; i++) boxed = { l: boxed, r: boxed }
  t.regex(shown(boxed), /more than 65536 characters as JSON/)
  // A profile whose toJSON makes it something else than an object.
  const unmade = await t.throwsAsync(runIsolated('/bin/true', [], { seccomp: { defaultAction: 'SCMP_ACT_ALLOW', toJSON: () => undefined } as never }), { instanceOf: IsolateError })
  t.is(unmade?.option, 'seccomp')
  t.regex(unmade!.message, /must be a JSON object/)
})

test('a seccomp profile given as text says what is wrong with the text: not JSON, no object, nested deeper than the parser takes', async (t) => {
  const notJson = await t.throwsAsync(runIsolated('/bin/true', [], { seccomp: '{"defaultAction": SCMP_ACT_ALLOW}' }), { instanceOf: IsolateError })
  t.is(notJson?.option, 'seccomp')
  t.regex(notJson!.message, /this text is not JSON: ".*"/)
  const array = await t.throwsAsync(runIsolated('/bin/true', [], { seccomp: '[]' }), { instanceOf: IsolateError })
  t.regex(array!.message, /this JSON text is no object/)
  // JSON.parse takes any depth; the profile's parser in the addon stops at 128 levels.
  const deep = `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":${'['.repeat(1000)}${']'.repeat(1000)}}`
  const nested = await t.throwsAsync(runIsolated('/bin/true', [], { seccomp: deep }), { instanceOf: IsolateError })
  t.deepEqual([nested?.code, nested?.option], ['ERR_ISOLATE_OPTION', 'seccomp'])
  t.regex(nested!.message, /recursion limit exceeded/)
})

test.serial("options made in another realm, or as a class's instance, are read without their realm's Object.prototype", async (t) => {
  const realm = vm.createContext({})
  const foreignProto = vm.runInContext('Object.prototype', realm) as Record<string, unknown>
  foreignProto.seccomp = 'none'
  foreignProto.network = 'host'
  const proto = Object.prototype as Record<string, unknown>
  proto.seccomp = 'none'
  try {
    // createSandbox: runIsolated's own split of its options already copies them.
    const foreign = await createSandbox(vm.runInContext("({ env: { PATH: '/usr/bin:/bin', FROM: 'a vm context' } })", realm))
    t.teardown(() => foreign.destroy())
    const r = await foreign.exec('/bin/sh', ['-c', 'grep ^Seccomp: /proc/self/status; echo "$FROM"; awk -F: \'NR > 2 { gsub(/ /, "", $1); print "if " $1 }\' /proc/net/dev'])
    t.regex(r.stdout, /^Seccomp:\s+2$/m, `the default filter, not the vm context's prototype's 'none'\n${r.stdout}${r.stderr}`)
    t.regex(r.stdout, /^a vm context$/m, 'its own properties are read')
    t.deepEqual(r.stdout.split('\n').filter((l) => l.startsWith('if ')), ['if lo'], 'a network of its own')

    class Options {
      env = { PATH: '/usr/bin:/bin' }
      get hostname() {
        return 'from-a-getter'
      }
    }
    const bytes = vm.runInContext("new Uint8Array([104, 105, 10])", realm) as Uint8Array
    const fromRealm = await runIsolated('/bin/cat', [], { input: bytes })
    t.is(fromRealm.stdout, 'hi\n', "a vm context's Uint8Array is input too")
    const instance = await createSandbox(new Options() as {})
    t.teardown(() => instance.destroy())
    const c = await instance.exec('/bin/sh', ['-c', 'grep ^Seccomp: /proc/self/status; hostname'])
    t.regex(c.stdout, /^Seccomp:\s+2$/m, "a class's instance: the default filter, not Object.prototype's 'none'")
    t.regex(c.stdout, /^from-a-getter$/m, "its class's getter is read")
  } finally {
    delete foreignProto.seccomp
    delete foreignProto.network
    delete proto.seccomp
  }
})
