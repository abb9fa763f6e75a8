/**
 * The escape suite: crates/escape-probe, a static program that tries one attack per probe, run
 * inside a sandbox with the DEFAULT options. Every probe must report "contained" (for the
 * controls: "works"). Runs as root and, in CI, again as an unprivileged user
 * (ISOLATE_TEST_ROOTLESS=1).
 *
 * The host side gives the probes something real to find: a marker file, a file in /dev/shm, an
 * abstract unix socket, an environment variable, its own pid, its session keyring, and (as root) a
 * setuid-root copy of the probe. Calibration tests show the probes do see these where a sandbox
 * leaves them reachable, so "contained" is evidence and not a probe that cannot see.
 */
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { chmodSync, chownSync, copyFileSync, existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import * as net from 'node:net'
import { join } from 'node:path'
import { createSandbox, runIsolated, type RunOptions } from '../index.js'
import { isRoot, removeDir, root, tempDir } from './helpers.js'

const TARGET = 'x86_64-unknown-linux-gnu'
const crateDir = join(root, 'crates', 'escape-probe')
const builtProbe = process.env.ISOLATE_ESCAPE_PROBE ?? join(root, 'target', TARGET, 'release', 'escape-probe')
const HOST_ENV = 'ISOLATE_ESCAPE_HOST_SECRET'

/** Every category the probe reports; each gets a test of its own below. */
const CATEGORIES = [
  'pid', 'ptrace', 'setns', 'init', 'env', 'chroot', 'oldroot', 'fd', 'handle', 'hostfs', 'mount', 'mknod', 'devices',
  'kernel-write', 'kernel-read', 'cgroup', 'module', 'kexec', 'kernel', 'userns', 'caps', 'nnp', 'keyring', 'abi', 'syscall',
  'tty', 'socket', 'net', 'uts',
] as const

interface ProbeLine {
  probe: string
  category: string
  result: 'contained' | 'escaped' | 'error'
  detail: string
}

interface Setup {
  probe: string
  dir: string
  markerDir: string
  marker: string
  shmName: string
  abstractName: string
  server: net.Server
  fixtureArg: string
  deviceArg: string
  hostKeyring: string
  /** Names and categories from `escape-probe --list`. */
  listed: Array<{ probe: string; category: string }>
  /** The default-sandbox run. */
  run: { exitCode: number | null; signal: string | null; stderr: string; lines: ProbeLine[] }
  /** The same, exec'd into a long-lived default sandbox that already runs other commands. */
  execRun: { exitCode: number | null; signal: string | null; stderr: string; lines: ProbeLine[] }
}

let setup: Setup | undefined
const cleanups: Array<() => void> = []

function newestSource(dir: string): number {
  let newest = 0
  for (const name of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, name.name)
    newest = Math.max(newest, name.isDirectory() ? newestSource(p) : statSync(p).mtimeMs)
  }
  return newest
}

/** The probe binary, built with cargo when it is missing or older than its sources. */
function ensureProbe(log: (m: string) => void): string {
  if (process.env.ISOLATE_ESCAPE_PROBE) return builtProbe
  const sources = Math.max(newestSource(join(crateDir, 'src')), statSync(join(crateDir, 'Cargo.toml')).mtimeMs)
  const have = existsSync(builtProbe)
  if (have && statSync(builtProbe).mtimeMs >= sources) return builtProbe
  log(`${have ? 'escape-probe is older than its sources' : 'escape-probe is not built'}: cargo build -p isolate-escape-probe`)
  try {
    execFileSync('cargo', ['build', '--release', '--locked', '-p', 'isolate-escape-probe', '--target', TARGET], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS: '-C target-feature=+crt-static' },
    })
  } catch (e) {
    const err = e as Error & { stderr?: Buffer }
    throw new Error(
      `could not build escape-probe (${err.message.split('\n')[0]}): build it first with ` +
        `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked -p isolate-escape-probe --target ${TARGET}, ` +
        `or point ISOLATE_ESCAPE_PROBE at a built one\n${err.stderr?.toString() ?? ''}`,
    )
  }
  return builtProbe
}

function parseLines(stdout: string): ProbeLine[] {
  return stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      try {
        return JSON.parse(l) as ProbeLine
      } catch {
        throw new Error(`escape-probe printed a line that is not JSON: ${l}`)
      }
    })
}

/** The arguments that tell the probes what of the host to look for. */
function hostArgs(s: Omit<Setup, 'run' | 'listed' | 'execRun'>): string[] {
  return [
    '--host-pid', String(process.pid),
    '--host-env', HOST_ENV,
    '--host-marker', s.marker,
    '--host-shm', s.shmName,
    '--host-keyring', s.hostKeyring,
    '--abstract', s.abstractName,
    '--setuid-fixture', s.fixtureArg,
    '--device-fixture', s.deviceArg,
  ]
}

/**
 * Exec the probe into a long-lived default sandbox (its directory bound read-only), after other
 * execs ran there and while one still does: what an exec'd process can reach, as it joins and after.
 */
async function probeByExec(s: Omit<Setup, 'run' | 'listed' | 'execRun'>) {
  const sb = await createSandbox({ mounts: [{ type: 'bind', source: s.dir, target: '/probe' }] })
  try {
    await sb.exec('/bin/sh', ['-c', 'echo earlier > /tmp/earlier'])
    const neighbour = await sb.spawn('/bin/sleep', ['1000'], { stdio: 'ignore' })
    const r = await sb.exec('/probe/escape-probe', hostArgs(s))
    neighbour.kill('SIGKILL')
    return { exitCode: r.exitCode, signal: r.signal, stderr: r.stderr, lines: parseLines(r.stdout) }
  } finally {
    await sb.destroy()
  }
}

/** Run the probe inside a sandbox: the given options plus the read-only bind of its directory. */
async function probeInSandbox(s: Omit<Setup, 'run' | 'listed' | 'execRun'>, names: string[] = [], options: RunOptions & { encoding?: BufferEncoding } = {}) {
  const r = await runIsolated('/probe/escape-probe', [...hostArgs(s), ...names], {
    ...options,
    mounts: [{ type: 'bind', source: s.dir, target: '/probe' }, ...(options.mounts ?? [])],
  })
  return { exitCode: r.exitCode, signal: r.signal, stderr: r.stderr, lines: parseLines(r.stdout) }
}

test.before(async (t) => {
  const probe = ensureProbe((m) => t.log(m))
  t.log(`running as ${isRoot ? 'root' : `uid ${process.getuid!()} (rootless)`}; probe ${probe}`)

  // The probe's directory, bound read-only at /probe. Traversable by the sandbox's ids.
  const dir = tempDir('isolate-escape-')
  cleanups.push(() => removeDir(dir))
  chmodSync(dir, 0o755)
  copyFileSync(probe, join(dir, 'escape-probe'))
  chmodSync(join(dir, 'escape-probe'), 0o755)

  // A setuid-root copy of the probe: its --report-euid mode says what an execve of it gained.
  let fixtureArg = '/probe/setuid-probe'
  if (isRoot) {
    const fixture = join(dir, 'setuid-probe')
    copyFileSync(probe, fixture)
    chownSync(fixture, 0, 0)
    chmodSync(fixture, 0o4755)
  } else {
    fixtureArg = '/probe/setuid-fixture-unavailable'
    t.log('not root: no setuid-root fixture can be made; setuid_fixture runs against a missing one and must be contained on its own evidence (no_new_privs)')
  }

  // A device node in a directory handed to the sandbox: the twin of /dev/full (char 1:7), which
  // is harmless to write to (ENOSPC). Inside, it must be inert (the bind mounted nodev).
  let deviceArg = '/probe/dev-full'
  if (isRoot) {
    execFileSync('mknod', ['-m', '0666', join(dir, 'dev-full'), 'c', '1', '7'])
  } else {
    deviceArg = '/probe/dev-full-unavailable'
    t.log('not root: no device node can be made; device_node_in_bind judges the bind\'s nodev flag instead')
  }

  // A marker only the host has, in a world-readable place so the sandbox would see it if it could.
  const markerDir = tempDir('isolate-escape-marker-')
  cleanups.push(() => removeDir(markerDir))
  chmodSync(markerDir, 0o755)
  const marker = join(markerDir, 'host-marker')
  writeFileSync(marker, 'only on the host\n', { mode: 0o644 })

  const shmName = `isolate-escape-${process.pid}`
  writeFileSync(join('/dev/shm', shmName), 'host shm\n', { mode: 0o644 })
  cleanups.push(() => rmSync(join('/dev/shm', shmName), { force: true }))

  // An abstract unix socket of the host: reachable from anything in the host's network namespace.
  const abstractName = `isolate-escape-${process.pid}`
  const server = net.createServer((c) => c.destroy())
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ path: `\0${abstractName}` }, () => resolve())
  })
  cleanups.push(() => server.close())

  process.env[HOST_ENV] = `leak-${process.pid}`
  cleanups.push(() => delete process.env[HOST_ENV])

  // The caller's session keyring, as a child of this process sees it.
  const hostKeyring = execFileSync(probe, ['--report-keyring'], { encoding: 'utf8' }).trim()

  const listed = execFileSync(probe, ['--list'], { encoding: 'utf8' })
    .trim()
    .split('\n')
    .map((l) => {
      const [p, category] = l.split(' ')
      return { probe: p, category }
    })

  const partial = { probe, dir, markerDir, marker, shmName, abstractName, server, fixtureArg, deviceArg, hostKeyring }
  const run = await probeInSandbox(partial)
  const execRun = await probeByExec(partial)
  setup = { ...partial, listed, run, execRun }
  for (const [how, r] of [['spawned', run], ['exec\'d', execRun]] as const) {
    const escaped = r.lines.filter((l) => l.result !== 'contained').map((l) => `${l.probe}=${l.result}`)
    t.log(`${how}: ${r.lines.length} probes ran; not contained: ${escaped.length ? escaped.join(', ') : 'none'}`)
  }
})

test.after.always(() => {
  for (const c of cleanups.reverse()) {
    try {
      c()
    } catch {}
  }
})

function results(): Setup['run'] {
  if (!setup) throw new Error('the setup did not run')
  return setup.run
}

test('every probe ran once and reported', (t) => {
  const { lines, exitCode, signal, stderr } = results()
  const names = lines.map((l) => l.probe)
  t.deepEqual(names, setup!.listed.map((l) => l.probe), 'the sandbox run reports every listed probe, in order')
  t.is(new Set(names).size, names.length, 'no probe twice')
  t.is(signal, null)
  t.is(stderr, '')
  t.is(exitCode, lines.every((l) => l.result === 'contained') ? 0 : 1, 'exit code 0 exactly when everything is contained')
  for (const l of lines) t.true(CATEGORIES.includes(l.category as never) || l.category === 'control', `${l.probe}: unknown category ${l.category}`)
})

test('exec\'d into a long-lived sandbox: every probe ran and every one is contained', (t) => {
  const { lines, exitCode, signal, stderr } = setup!.execRun
  t.deepEqual(lines.map((l) => l.probe), setup!.listed.map((l) => l.probe))
  t.is(signal, null)
  t.is(stderr, '')
  for (const l of lines) t.is(l.result, 'contained', `exec'd: ${l.probe}: ${l.detail}`)
  t.is(exitCode, 0)
})

test('at least 40 attack probes, across every category', (t) => {
  const attacks = results().lines.filter((l) => l.category !== 'control')
  t.true(attacks.length >= 40, `only ${attacks.length} attack probes`)
  for (const c of CATEGORIES) t.true(attacks.some((l) => l.category === c), `no probe of category ${c}`)
})

for (const category of CATEGORIES) {
  test(`contained: ${category}`, (t) => {
    const probes = results().lines.filter((l) => l.category === category)
    t.true(probes.length > 0, `no probe of category ${category} ran`)
    for (const p of probes) t.is(p.result, 'contained', `${p.probe}: ${p.detail}`)
  })
}

test('controls: ordinary work keeps working', (t) => {
  const controls = results().lines.filter((l) => l.category === 'control')
  t.true(controls.length >= 7, `only ${controls.length} controls`)
  for (const c of ['fork_wait', 'thread', 'socketpair', 'tmp_files', 'tcp_loopback', 'os_release', 'mmap_mprotect']) {
    t.true(controls.some((l) => l.probe === c), `control ${c} did not run`)
  }
  for (const p of controls) t.is(p.result, 'contained', `${p.probe} is broken: ${p.detail}`)
})

test('the setuid fixture: executed as root, its own evidence otherwise', (t) => {
  const p = results().lines.find((l) => l.probe === 'setuid_fixture')
  t.truthy(p)
  if (isRoot) t.regex(p!.detail, /^fixture ran \(.*mode 4755/, 'as root the setuid-root fixture must really have been executed')
  else t.regex(p!.detail, /^fixture unavailable .*no_new_privs is 1/)
  t.is(p!.result, 'contained', p!.detail)
})

// Calibration: where a sandbox leaves the host reachable, the same probes say "escaped". Without
// these a probe that cannot see anything would pass for a contained one.

function byName(lines: ProbeLine[]): Record<string, ProbeLine> {
  return Object.fromEntries(lines.map((l) => [l.probe, l]))
}

test('calibration: on the host itself the host-facing probes see the host', (t) => {
  const s = setup!
  const names = ['host_env', 'kill_host', 'host_pid_invisible', 'host_marker_invisible', 'host_shm_invisible', 'abstract_unix_host', 'proc1_is_init']
  let out = ''
  try {
    out = execFileSync(s.probe, [...hostArgs(s), ...names], { encoding: 'utf8', env: { ...process.env } })
  } catch (e) {
    out = (e as { stdout?: string }).stdout ?? ''
  }
  const got = byName(parseLines(out))
  for (const n of names) t.is(got[n]?.result, 'escaped', `${n} on the host: ${got[n]?.detail}`)
})

test('calibration: network host, inherited env and no seccomp are seen through the sandbox', async (t) => {
  const s = setup!
  const hostNet = await probeInSandbox(s, ['abstract_unix_host', 'net_interfaces'], { network: 'host' })
  const n = byName(hostNet.lines)
  t.is(n.abstract_unix_host?.result, 'escaped', `network host: ${n.abstract_unix_host?.detail}`)
  const hostIfaces = readFileSync('/proc/net/dev', 'utf8').split('\n').slice(2).filter((l) => l.includes(':')).map((l) => l.split(':')[0].trim())
  if (hostIfaces.some((i) => i !== 'lo')) t.is(n.net_interfaces?.result, 'escaped', `network host: ${n.net_interfaces?.detail}`)

  const env = byName((await probeInSandbox(s, ['host_env', 'proc_environ_scan'], { inheritEnv: [HOST_ENV] })).lines)
  t.is(env.host_env?.result, 'escaped', env.host_env?.detail)
  t.is(env.proc_environ_scan?.result, 'escaped', env.proc_environ_scan?.detail)

  const bare = byName((await probeInSandbox(s, ['unshare_user', 'clone3', 'personality_addr_no_randomize', 'keyctl_user_keyring'], { seccomp: 'none' })).lines)
  for (const p of ['unshare_user', 'clone3', 'personality_addr_no_randomize', 'keyctl_user_keyring']) {
    t.is(bare[p]?.result, 'escaped', `seccomp none: ${p}: ${bare[p]?.detail}`)
  }
})
