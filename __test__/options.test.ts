/** Invalid options throw before anything is spawned, naming the option. */
import test from 'ava'
import { IsolateError, spawnIsolated } from '../index.js'
import { zombieChildren } from './helpers.js'

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
  ['relative cwd', { cwd: 'tmp' }, 'cwd'],
  ['negative uid', { user: { uid: -1, gid: 0 } }, 'user'],
  ['zero timeout', { timeoutMs: 0 }, 'timeoutMs'],
  ['unknown option', { hostnmae: 'x' }, 'hostnmae'],
  ['bad stdio', { stdio: ['pipe', 'pipe'] }, 'stdio'],
  ['rootfs slash', { rootfs: '/' }, 'rootfs'],
  ['unknown capability', { capabilities: ['NET_BIND_SERVICE', 'FLY'] }, 'capabilities[1]'],
  ['relative landlock path', { landlock: { read: ['usr'] } }, 'landlock.read[0]'],
  ['unknown landlock list', { landlock: { delete: ['/x'] } }, 'landlock.delete'],
  ['seccomp not a profile', { seccomp: 'strict' }, 'seccomp'],
  ['negative cpus', { limits: { cpus: -1 } }, 'limits.cpus'],
  ['tiny memory', { limits: { memoryBytes: 4096 } }, 'limits.memoryBytes'],
  ['zero pids', { limits: { pids: 0 } }, 'limits.pids'],
  ['tty of no size', { tty: { rows: 0, cols: 80 } }, 'tty'],
  ['tty with an output bound', { tty: true, limits: { outputBytes: 100 } }, 'limits.outputBytes'],
]

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
})

test('nothing is spawned for invalid options', async (t) => {
  await t.throwsAsync(spawnIsolated('/bin/true', [], { hostname: '' }))
  t.deepEqual(zombieChildren(), [])
})
