/** stdio: bytes in and out exactly, large streams without buffering them in Node. */
import test from 'ava'
import { createHash, randomBytes } from 'node:crypto'
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { createSandbox, runIsolated, spawnIsolated } from '../index.js'
import { isRoot, root } from './helpers.js'

test('stdin reaches the command and binary stdout comes back byte for byte', async (t) => {
  const input = randomBytes(3 << 20)
  const r = await runIsolated('/bin/cat', [], { input, encoding: 'buffer' })
  t.is(r.exitCode, 0)
  t.true(Buffer.compare(r.stdout, input) === 0)
  const e = await runIsolated('/bin/sh', ['-c', 'cat >&2'], { input, encoding: 'buffer' })
  t.true(Buffer.compare(e.stderr, input) === 0)
  t.is(e.stdout.length, 0)
})

test('output is a string by default and a Buffer with encoding "buffer", as the types say (tsc checks the annotations)', async (t) => {
  // Without options the string overload applies (an optional options on the Buffer one took every such call).
  const s: string = (await runIsolated('/bin/echo', ['hi'])).stdout
  t.is(s, 'hi\n')
  const b: Buffer = (await runIsolated('/bin/echo', ['hi'], { encoding: 'buffer' })).stdout
  t.true(Buffer.isBuffer(b))
  const sb = await createSandbox()
  try {
    const e: string = (await sb.exec('/bin/echo', ['hi'])).stdout
    t.is(e, 'hi\n')
    const eb: Buffer = (await sb.exec('/bin/echo', ['hi'], { encoding: 'buffer' })).stdout
    t.true(Buffer.isBuffer(eb))
  } finally {
    await sb.destroy()
  }
})

test('commands that end before Node reads their (empty) output still resolve, one after another', async (t) => {
  for (let i = 0; i < 20; i++) t.is((await runIsolated('/bin/true')).exitCode, 0)
  const tty = await runIsolated('/bin/true', [], { tty: true })
  t.is(tty.reason, 'exited')
})

test('100 MB out of the sandbox streams without Node holding it', async (t) => {
  const size = 100 << 20
  const sb = await spawnIsolated('/bin/sh', ['-c', `head -c ${size} /dev/zero | tr '\\0' 'a'`])
  const rssBefore = process.memoryUsage().rss
  let peak = rssBefore
  let total = 0
  let allA = true
  for await (const chunk of sb.stdout!) {
    total += chunk.length
    if (allA && (chunk as Buffer).some((b: number) => b !== 0x61)) allA = false
    peak = Math.max(peak, process.memoryUsage().rss)
  }
  const r = await sb.wait()
  t.is(r.exitCode, 0)
  t.is(total, size)
  t.true(allA)
  t.true(peak - rssBefore < 64 << 20, `rss grew by ${(peak - rssBefore) >> 20} MB`)
})

test('100 MB into the sandbox through stdin', async (t) => {
  const size = 100 << 20
  const chunk = Buffer.alloc(1 << 20, 7)
  const hash = createHash('sha256')
  for (let i = 0; i < 100; i++) hash.update(chunk)
  const sb = await spawnIsolated('/bin/sh', ['-c', 'tee /dev/fd/3 3>&1 >/dev/null | sha256sum'], { stdio: ['pipe', 'pipe', 'pipe'] })
  let out = ''
  sb.stdout!.on('data', (d) => (out += d))
  Readable.from((function* () {
    for (let i = 0; i < 100; i++) yield chunk
  })()).pipe(sb.stdin!)
  const r = await sb.wait()
  await new Promise((res) => (sb.stdout!.readableEnded ? res(null) : sb.stdout!.once('end', res)))
  t.is(r.exitCode, 0)
  t.is(out.split(' ')[0], hash.digest('hex'), `${size} bytes hashed inside`)
})

test('stdio ignore and an fd', async (t) => {
  const r = await runIsolated('/bin/sh', ['-c', 'cat; echo out; echo err >&2'], { stdio: ['ignore', 'pipe', 'ignore'] })
  t.is(r.stdout, 'out\n')
  t.is(r.stderr, '')
})

test("stdio[2] 'stdout' sends stderr where stdout goes, in the order written (2>&1): in a run, under an output bound (counted once), in a spawn, in an exec; elsewhere it is refused", async (t) => {
  // Many short writes, alternating: two pipes (or two relays) would not keep their order.
  const script = 'i=0; while [ $i -lt 2000 ]; do echo "o$i"; echo "e$i" >&2; i=$((i+1)); done'
  const expected = Array.from({ length: 2000 }, (_, i) => `o${i}\ne${i}\n`).join('')
  const merged = { stdio: ['pipe', 'pipe', 'stdout'] } as const
  const r = await runIsolated('/bin/sh', ['-c', script], merged)
  t.is(r.stdout, expected)
  t.is(r.stderr, '')
  const bounded = await runIsolated('/bin/sh', ['-c', script], { ...merged, limits: { outputBytes: expected.length } })
  t.is(bounded.reason, 'exited')
  t.is(bounded.stdout, expected)
  const over = await runIsolated('/bin/sh', ['-c', script], { ...merged, limits: { outputBytes: expected.length - 1 } })
  t.is(over.reason, 'output-limit')
  t.true(expected.startsWith(over.stdout), 'what came before the bound, in order')
  const sb = await spawnIsolated('/bin/sh', ['-c', 'echo a; echo b >&2; echo c'], merged)
  t.is(sb.stderr, null)
  let out = ''
  sb.stdout!.on('data', (d: Buffer) => (out += d))
  await once(sb.stdout!, 'end')
  t.is((await sb.wait()).exitCode, 0)
  t.is(out, 'a\nb\nc\n')
  const box = await createSandbox()
  t.teardown(() => box.destroy())
  const x = await box.exec('/bin/sh', ['-c', script], merged)
  t.is(x.stdout, expected)
  t.is(x.stderr, '')
  // The command sees one pipe at 1 and 2.
  const file = await runIsolated('/bin/sh', ['-c', 'echo a; echo b >&2; readlink /proc/self/fd/1 /proc/self/fd/2'], { stdio: ['ignore', 'pipe', 'stdout'] })
  t.regex(file.stdout, /^a\nb\npipe:\[(\d+)\]\npipe:\[\1\]\n$/)
  for (const stdio of [['stdout', 'pipe', 'pipe'], ['pipe', 'stdout', 'pipe'], 'stdout']) {
    const e = await runIsolated('/bin/true', [], { stdio } as never).catch((e: unknown) => e as { code?: string; option?: string })
    t.is((e as { code?: string }).code, 'ERR_ISOLATE_OPTION', JSON.stringify(stdio))
    t.regex((e as { option?: string }).option ?? '', /^stdio/)
  }
})

test('the command reopens its stdio pipes by path (/dev/stdin, /dev/stdout, /dev/stderr, /proc/self/fd/N), as root inside or as another uid, in a run, with an output bound and in an exec; a host user that may not trace it cannot; without a user namespace of its own they stay closed, to a host process of its uid too', async (t) => {
  const script = 'cat /dev/stdin; echo out >/dev/stdout; echo err >/dev/stderr; echo fd >/proc/self/fd/1'
  const want = { stdout: 'in\nout\nfd\n', stderr: 'err\n' }
  const runs: Array<[string, Parameters<typeof runIsolated>[2]]> = [
    ['default', {}],
    ['outputBytes (the helper\'s pipes)', { limits: { outputBytes: 1 << 20 } }],
  ]
  if (isRoot) runs.push(['user 1000', { user: { uid: 1000, gid: 1000 } }])
  else t.log('not root: a command of another uid needs ids only root maps; the root suite runs it')
  for (const [name, opts] of runs) {
    const r = await runIsolated('/bin/sh', ['-c', script], { ...opts, input: 'in\n' })
    t.deepEqual({ stdout: r.stdout, stderr: r.stderr }, want, name)
  }
  const sb = await createSandbox()
  t.teardown(() => sb.destroy())
  const e = await sb.exec('/bin/sh', ['-c', script], { input: 'in\n' })
  t.deepEqual({ stdout: e.stdout, stderr: e.stderr }, want, 'exec')

  if (!isRoot) return void t.log('not root: the host user who may not trace the command is made with runuser, as root; the root suite runs it')
  const held = await spawnIsolated('/bin/sh', ['-c', 'echo ready; exec sleep 30'], { stdio: ['pipe', 'pipe', 'pipe'] })
  t.teardown(() => held.kill('SIGKILL'))
  const [first] = await once(held.stdout!, 'data')
  t.is(String(first), 'ready\n')
  const other = spawnSync('runuser', ['-u', 'nobody', '--', '/bin/sh', '-c', `echo forged > /proc/${held.pid}/fd/1`], { encoding: 'utf8' })
  t.not(other.status, 0)
  t.regex(other.stderr, /Permission denied/)

  // Without a user namespace the command is host uid 1000, whose every process may read-trace it:
  // its pipes stay closed to reopening, by itself and by them.
  const hostIds = { namespaces: { user: false }, user: { uid: 1000, gid: 1000 } }
  const own = await runIsolated('/bin/sh', ['-c', 'echo out >/dev/stdout'], hostIds)
  t.regex(own.stderr, /Permission denied/)
  const shared = await spawnIsolated('/bin/sh', ['-c', 'echo ready; exec sleep 30'], { ...hostIds, stdio: ['pipe', 'pipe', 'pipe'] })
  t.teardown(() => shared.kill('SIGKILL'))
  t.is(String((await once(shared.stdout!, 'data'))[0]), 'ready\n')
  const sameUid = spawnSync('setpriv', ['--reuid=1000', '--regid=1000', '--clear-groups', '/bin/sh', '-c', `echo forged > /proc/${shared.pid}/fd/1`], { encoding: 'utf8' })
  t.not(sameUid.status, 0)
  t.regex(sameUid.stderr, /Permission denied/, 'a host process of the same uid cannot open the pipes either')
})

test('a command that ignores its stdin does not break the caller', async (t) => {
  const sb = await spawnIsolated('/bin/true')
  const big = Buffer.alloc(4 << 20)
  sb.stdin!.write(big)
  sb.stdin!.end()
  const r = await sb.wait()
  t.is(r.exitCode, 0)
})

test("an inherited stdout that is non-blocking on the caller's side (Node's own pipe, once it wrote to it) is blocking for the command, as child_process leaves it: a full pipe makes it wait, not fail with EAGAIN", async (t) => {
  // A Node process whose stdout is a pipe it has written to, running a sandbox and an exec that
  // inherit it; each says how its stdout is open, then writes more than the pipe holds while
  // nobody reads for a moment.
  const script = `
    import { createSandbox, runIsolated } from ${JSON.stringify(join(root, 'index.ts'))}
    process.stdout.write('caller\\n')
    const cmd = ['/bin/sh', ['-c', 'grep ^flags /proc/self/fdinfo/1; head -c 300000 /dev/zero | tr "\\\\0" z; r=$?; echo; echo rc=$r']]
    const sandbox = await runIsolated(cmd[0], cmd[1], { stdio: ['ignore', 'inherit', 'inherit'] })
    const box = await createSandbox({})
    const exec = await box.exec(cmd[0], cmd[1], { stdio: ['ignore', 'inherit', 'inherit'] })
    await box.destroy()
    process.stderr.write(JSON.stringify([sandbox.exitCode, exec.exitCode]) + '\\n')
  `
  const child = spawn(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d))
  // Nobody reads for a moment: the pipe fills.
  await new Promise((r) => setTimeout(r, 1500))
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d))
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
  const code = await new Promise((r) => child.on('close', r))
  clearTimeout(timer)
  t.is(code, 0, err)
  t.is(err.trim(), '[0,0]', err)
  const flags = [...out.matchAll(/^flags:\s+([0-7]+)$/gm)].map((m) => parseInt(m[1], 8))
  t.is(flags.length, 2, out.slice(0, 200))
  for (const f of flags) t.is(f & 0o4000, 0, `O_NONBLOCK in ${f.toString(8)}`)
  t.deepEqual(out.match(/^rc=\d+$/gm), ['rc=0', 'rc=0'])
  t.is(out.split('z').length - 1, 600000, 'every byte of both')
})
