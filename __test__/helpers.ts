/** Shared by the tests: what a process inside sees, and what the host has left afterwards. */
import type { ExecutionContext } from 'ava'
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { probe, runIsolated, spawnIsolated, type RunOptions, type RunResult, type SpawnOptions } from '../index.js'

export const root = join(dirname(fileURLToPath(import.meta.url)), '..')
export const isRoot = process.getuid?.() === 0

/** CI runs this suite twice: as root, and as an unprivileged user with ISOLATE_TEST_ROOTLESS=1. */
if (process.env.ISOLATE_TEST_ROOTLESS === '1' && isRoot) throw new Error('ISOLATE_TEST_ROOTLESS=1 but running as root')

export function sh(script: string, options: RunOptions & { encoding: 'buffer' }): Promise<RunResult<Buffer>>
export function sh(script: string, options?: RunOptions & { encoding?: BufferEncoding }): Promise<RunResult<string>>
export function sh(script: string, options: RunOptions = {}): Promise<RunResult<string | Buffer>> {
  return runIsolated('/bin/sh', ['-c', script], options)
}

/** The host ids the sandbox's root runs as, as the library reports them (sandbox.test checks its choice). */
export async function expectedOutsideIds(): Promise<{ uid: number; gid: number }> {
  if (!isRoot) return { uid: process.getuid!(), gid: process.getgid!() }
  const ids = (await probe()).sandboxHostIds
  if (!ids) throw new Error('this host has no free ids for a root caller\'s sandboxes (isolate doctor says why)')
  return ids
}

export function tempDir(prefix = 'isolate-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix))
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true })
}

/**
 * The counter of a sandbox cgroup name that a test makes as another helper's (the same pid as a
 * helper it kills, another start time), to see that the sweep leaves it: cgroup.test's check for
 * leftovers, running beside that test, does not count it (the test removes it itself).
 */
export const STAND_IN_N = 424242424242

/** When a process started, in clock ticks after boot (/proc/PID/stat's 22nd field): with its pid, which process it is. */
export const startOf = (pid: number) => Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ').pop()!.split(' ')[19])

/**
 * Another helper's sandbox cgroup as a sweep of `helper`'s sees it: beneath `parent`, named after
 * the same pid with another start time (a helper of another pid namespace, or a process given
 * that pid once reaped), holding a process of its own. `untouched()`, once the sweep of
 * `helper`'s cgroups is done (given 300 ms to reach this one too): it and its process are still
 * there. `remove()`: its process ended, the cgroup removed.
 */
export function standInCgroup(parent: string, helper: number): { untouched: () => Promise<boolean>; remove: () => Promise<void> } {
  const dir = join(parent, `isolate-${helper}-${startOf(helper) + 1}-${STAND_IN_N}`)
  const held = spawn('/bin/sleep', ['30'], { stdio: 'ignore' })
  const ended = new Promise((r) => held.once('exit', r))
  const gone = (e: unknown) => (e as NodeJS.ErrnoException).code === 'ENOENT'
  const remove = async () => {
    held.kill('SIGKILL')
    await ended
    // Once empty it is any helper server's to sweep (another test file's may start meanwhile).
    await waitUntil(() => {
      try {
        return readFileSync(join(dir, 'cgroup.procs'), 'utf8').trim() === ''
      } catch (e) {
        if (gone(e)) return true
        throw e
      }
    }, 5000)
    try {
      rmdirSync(dir)
    } catch (e) {
      if (!gone(e)) throw e
    }
  }
  // While it is empty, a helper server starting in another test file rightly removes it (a pid
  // now held by a process of another start): make it again until the process is in.
  for (let tries = 0; ; tries++) {
    try {
      if (!existsSync(dir)) mkdirSync(dir)
      writeFileSync(join(dir, 'cgroup.procs'), String(held.pid))
      break
    } catch (e) {
      if (gone(e) && tries < 20) continue
      void remove()
      throw e
    }
  }
  return {
    untouched: async () => {
      await new Promise((r) => setTimeout(r, 300))
      return existsSync(dir) && pidAlive(held.pid!)
    },
    remove,
  }
}

export function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return !/^\d+ \(.*\) [ZX]/.test(stat)
  } catch {
    return false
  }
}

export function parentOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
}

/** Every pid on this host with its comm and its parent; processes that vanish meanwhile are left out. */
function processes(): Array<{ pid: number; comm: string; ppid: number }> {
  const found = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      found.push({ pid: Number(name), comm: readFileSync(`/proc/${name}/comm`, 'utf8').trim(), ppid: parentOf(Number(name)) })
    } catch {}
  }
  return found
}

/** Whether `pid` was started as a warm helper (or the helper server, which forks them: its comm is isolate-server). */
function startedWarm(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('--warm')
  } catch {
    return false
  }
}

/** `node`'s helper servers: its children that fork its warm helpers. */
export function helperServersOf(node: number, all = processes()): number[] {
  return all.filter((p) => p.ppid === node && p.comm === 'isolate-server' && startedWarm(p.pid)).map((p) => p.pid)
}

/** Whether `helper` is `node`'s: its child, or a child of its helper server (which forks the warm ones). */
export function isHelperOf(helper: number, node: number): boolean {
  const parent = parentOf(helper)
  return parent === node || helperServersOf(node).includes(parent)
}

/** `node`'s warm helpers (started with --warm: its children, or its helper server's), with their zygotes (cgroup v1 only) and the inits they made ahead. */
export function warmHelpersOf(node: number): { helpers: number[]; zygotes: Array<{ helper: number; zygote: number }>; inits: number[] } {
  const all = processes()
  const parents = [node, ...helperServersOf(node, all)]
  const helpers = all.filter((p) => parents.includes(p.ppid) && p.comm !== 'isolate-server' && startedWarm(p.pid)).map((p) => p.pid)
  const ofHelper = (comm: string) => all.filter((p) => p.comm === comm && helpers.includes(p.ppid))
  const zygotes = ofHelper('isolate-zygote')
  return {
    helpers,
    zygotes: zygotes.map((p) => ({ helper: p.ppid, zygote: p.pid })),
    // Named so until their birth: not the init of a sandbox, running or on its way out.
    inits: ofHelper('isolate-ahead').map((p) => p.pid),
  }
}

/** Host pids of every process in the pid namespace `nsLink` (as from readlink /proc/PID/ns/pid). */
export function pidsInNamespace(nsLink: string): number[] {
  const pids: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      if (readlinkSync(`/proc/${name}/ns/pid`) === nsLink) pids.push(Number(name))
    } catch {}
  }
  return pids
}

/**
 * Host pids that are in the namespace `nsLink` (as from readlink /proc/PID/ns/mnt) or hold an fd
 * on it: everything that keeps it alive, as far as this process may look.
 */
export function namespaceHolders(kind: string, nsLink: string): number[] {
  const pids: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      if (readlinkSync(`/proc/${name}/ns/${kind}`) === nsLink) {
        pids.push(Number(name))
        continue
      }
      for (const fd of readdirSync(`/proc/${name}/fd`)) {
        try {
          if (readlinkSync(`/proc/${name}/fd/${fd}`) === nsLink) {
            pids.push(Number(name))
            break
          }
        } catch {}
      }
    } catch {}
  }
  return pids
}

/** Our own children that are zombies (a helper nobody reaped). */
export function zombieChildren(): number[] {
  const me = process.pid
  const found: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (rest[0] === 'Z' && Number(rest[1]) === me) found.push(Number(name))
    } catch {}
  }
  return found
}

export function openFds(): string[] {
  return readdirSync('/proc/self/fd')
}

export async function waitUntil(cond: () => boolean, ms: number, step = 20): Promise<boolean> {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (cond()) return true
    await new Promise((r) => setTimeout(r, step))
  }
  return cond()
}

/** Once `stream` has ended: a sandbox's end can be reported before the last of its output is read. */
export function ended(stream: NodeJS.ReadableStream | null | undefined): Promise<void> {
  return new Promise((res) => (!stream || (stream as { readableEnded?: boolean }).readableEnded ? res() : stream.once('end', () => res())))
}

/**
 * `fn`'s first result that `ok` accepts, or its last of `tries`. An init a warm helper made ahead
 * is, rightly, not used once this host's mount table changed after it was made (tests in other
 * files mount things meanwhile); each try takes a newer one, so a quiet moment gives a fair try.
 */
export async function untilQuietMounts<T>(fn: () => Promise<T>, ok: (r: T) => boolean, tries = 5): Promise<T> {
  for (let i = 1; ; i++) {
    const r = await fn()
    if (ok(r) || i >= tries) return r
  }
}

export const fixturesDir = process.env.ISOLATE_FIXTURES ?? join(root, '..', 'shared', 'fixtures')
export const alpineTarball = join(fixturesDir, 'alpine-minirootfs-3.22.1-x86_64.tar.gz')

/** Unpack the Alpine minirootfs fixture into a fresh directory (the caller removes it). */
export function unpackAlpine(): string {
  const dir = tempDir('isolate-alpine-')
  execFileSync('tar', ['-xzf', alpineTarball, '-C', dir, '--no-same-owner'])
  return dir
}

/** A minimal rootfs: the host's /bin/sh and its libraries under usr/, with bin -> usr/bin. */
export function buildMiniRootfs(): string {
  const dir = tempDir('isolate-rootfs-')
  mkdirSync(join(dir, 'usr', 'bin'), { recursive: true })
  symlinkSync('usr/bin', join(dir, 'bin'))
  const sh = statSync('/bin/sh').isFile() ? '/bin/sh' : '/usr/bin/sh'
  const libs = execFileSync('ldd', [sh], { encoding: 'utf8' })
  for (const file of [sh, '/bin/cat', ...[...libs.matchAll(/(\/[^\s]+)/g)].map((m) => m[1])]) {
    if (!existsSync(file)) continue
    const dest = join(dir, file.startsWith('/bin/') ? `/usr${file}` : file)
    mkdirSync(join(dest, '..'), { recursive: true })
    copyFileSync(file, dest)
  }
  execFileSync('chmod', ['-R', 'a+rX', dir])
  return dir
}

/**
 * Start `__test__/fixtures/NAME` in a Node process of its own; resolves with its first line of
 * stdout. It is killed when the test ends, however the test ends.
 */
export async function startFixture(t: ExecutionContext, name: string, args: string[] = []): Promise<{ child: ChildProcess; line: string }> {
  const child = spawn(process.execPath, ['--import=tsx', join(root, '__test__', 'fixtures', name), ...args], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => void child.kill('SIGKILL'))
  const line = await new Promise<string>((resolve, reject) => {
    let buf = ''
    child.stdout!.on('data', (d) => {
      buf += d
      if (buf.includes('\n')) resolve(buf.split('\n')[0])
    })
    // 'close', not 'exit': a fixture that prints its line and exits at once may be seen to exit
    // before its line is read (a loaded machine).
    child.on('close', (code) => reject(new Error(`fixture ${name} exited early with ${code}`)))
  })
  return { child, line }
}

/** Whether tmux can drive a real terminal here (.ci/run installs it). */
export const hasTmux = spawnSync('tmux', ['-V']).status === 0

/**
 * Run `cmd` (which starts `/bin/sh` on a sandbox's terminal, then prints `EXIT=$?`) in a tmux
 * session of a 100x30 terminal, its server socket in a directory of its own, and drive it as a
 * person would: the prompt, `stty size`, a resize, Ctrl-C ending only the foreground `sleep`,
 * `exit 3` coming back. `probe` adds checks right after the prompt.
 */
export async function driveShellInTmux(t: ExecutionContext, cmd: string, probe?: (keys: (k: string) => void, seen: (re: RegExp) => Promise<boolean>, screen: () => string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'isolate-tmux-'))
  const sock = join(dir, 'sock')
  const end = () => {
    spawnSync('tmux', ['-S', sock, 'kill-server'])
    removeDir(dir)
  }
  t.teardown(end)
  const tm = (...args: string[]) => execFileSync('tmux', ['-S', sock, '-f', '/dev/null', ...args], { encoding: 'utf8' })
  const screen = () => tm('capture-pane', '-p', '-t', 'sb')
  const keys = (k: string) => void tm('send-keys', '-t', 'sb', k, 'Enter')
  const seen = (re: RegExp, ms = 20_000) => waitUntil(() => re.test(screen()), ms, 100)
  tm('new-session', '-d', '-s', 'sb', '-c', root, '-x', '100', '-y', '30', cmd)
  t.true(await seen(/^[#$] ?$/m), `a prompt: ${screen()}`)
  if (probe) await probe(keys, seen, screen)
  keys('stty size')
  t.true(await seen(/^30 100$/m), screen())
  tm('resize-window', '-t', 'sb', '-x', '120', '-y', '40')
  keys('stty size')
  t.true(await seen(/^40 120$/m), screen())
  keys('sleep 100')
  await new Promise((r) => setTimeout(r, 700))
  tm('send-keys', '-t', 'sb', 'C-c')
  // The shell's next prompt first: a line typed ahead would be echoed before it, and its output
  // would then follow the prompt on one line.
  t.true(await seen(/\^C\s*\n[#$] ?$/m), `a prompt after Ctrl-C: ${screen()}`)
  keys('echo still-$((40+2))')
  t.true(await seen(/^still-42$/m), `Ctrl-C ended only the sleep: ${screen()}`)
  keys('exit 3')
  t.true(await seen(/^EXIT=3$/m), screen())
  end()
}

/**
 * The mount points of process `pid`'s mount namespace, with their filesystem types; `root`: the
 * directory of its filesystem that the mount shows ('/' unless a bind of one below).
 */
export function mountsOf(pid: number): Array<{ at: string; type: string; root: string }> {
  return readFileSync(`/proc/${pid}/mountinfo`, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => ({ at: l.split(' ')[4], root: l.split(' ')[3], type: l.split(' - ')[1]?.split(' ')[0] ?? '' }))
}

/**
 * Whether init `pid`, made ahead, has its root built already, with a mount at `at` (with `bound`:
 * a bind of a directory below its filesystem's root there): seen from the host, its / is the
 * staging tmpfs.
 */
export function rootBuiltAhead(pid: number, at = '/proc/sys', bound = false): boolean {
  try {
    const mounts = mountsOf(pid)
    return mounts.some((m) => m.at === '/' && m.type === 'tmpfs') && mounts.some((m) => m.at === at && (!bound || m.root !== '/'))
  } catch {
    return false
  }
}

/**
 * Start sandboxes with `options` until every init this process's pool made ahead (two at least)
 * has its root built for them (the pool builds ahead the commonest root of its last sandboxes),
 * as told by a mount at `at` that only that root has. False if that never happens.
 */
const SCHED_IDLE = 5

/** A process's scheduling policy (field 41 of /proc/PID/stat), or -1 once it is gone. */
export function schedPolicy(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[38])
  } catch {
    return -1
  }
}

/**
 * Whether this process's pool holds two warm helpers whose inits made ahead pass `initOk`, each
 * helper done with its work ahead (it then leaves idle priority and says so: an init made ahead
 * exists before its helper is ready, and a sandbox started then finds the pool empty).
 */
export function poolReady(initOk: (init: number) => boolean = () => true): boolean {
  const { helpers, inits } = warmHelpersOf(process.pid)
  return inits.length >= 2 && inits.every(initOk) && helpers.every((p) => schedPolicy(p) !== SCHED_IDLE && waitingForSpec(p))
}

/**
 * Whether a warm helper waits for its spec: in the poll of its last step, after it said `warm`
 * (during its warm phase it waits on its zygote's socket instead). A caller who cannot step back
 * to idle priority has no other sign of it.
 */
export function waitingForSpec(pid: number): boolean {
  try {
    return /^(poll_schedule_timeout|do_sys_poll|do_poll)/.test(readFileSync(`/proc/${pid}/wchan`, 'utf8'))
  } catch {
    return false
  }
}

/** Once {@link poolReady} holds: its helpers' word that they are ready reaches the pool on the next turns of the event loop. */
export const poolHeard = () => new Promise((r) => setTimeout(r, 50))

export async function poolBuiltFor(options: RunOptions, at: string, bound = false): Promise<boolean> {
  for (let i = 1; i <= 10; i++) {
    await runIsolated('/bin/true', [], options)
    if (i >= 4 && (await waitUntil(() => poolReady((p) => rootBuiltAhead(p, at, bound)), 3000))) {
      await poolHeard()
      return true
    }
  }
  return false
}

/**
 * Run `script` with `sh -c` in a sandbox of `options`: whether it took an init made ahead (one of
 * `inits()` at the call; by default this process's warm helpers'), its exit code and its stdout.
 */
export async function startFromPool(script: string, options: SpawnOptions, inits = () => warmHelpersOf(process.pid).inits) {
  const before = new Set(inits())
  const sb = await spawnIsolated('/bin/sh', ['-c', `${script}; read x`], { ...options, stdio: ['pipe', 'pipe', 'pipe'] })
  const took = before.has(parentOf(sb.pid))
  const out: Buffer[] = []
  sb.stdout!.on('data', (d: Buffer) => out.push(d))
  sb.stderr!.resume()
  sb.stdin!.end('\n')
  const r = await sb.wait()
  await ended(sb.stdout)
  return { took, code: r.exitCode, out: Buffer.concat(out).toString() }
}

/** Fields of /proc/PID/stat that place a process in its session: its process group, its session and its controlling terminal (0: none). */
export function sessionOf(pid: number): { pgrp: number; sid: number; tty: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return { pgrp: Number(f[2]), sid: Number(f[3]), tty: Number(f[4]) }
}

/** Every descendant of `pid` on this host (processes that vanish meanwhile are left out). */
export function descendantsOf(pid: number): number[] {
  const all = processes()
  const found: number[] = []
  for (let next = [pid]; next.length; ) {
    next = all.filter((p) => next.includes(p.ppid)).map((p) => p.pid)
    found.push(...next)
  }
  return found
}

/**
 * Run `fixtures/terminal-caller.ts` as the session leader of a pseudo-terminal of its own (a
 * Python launcher opens it with pty.fork and stays its only master): `node` is that process, and
 * `command` the pid of the sandbox it started; `hangUp()` closes the terminal's master, as a
 * terminal window closing does, and resolves to how `node` ended (`signal 1`: SIGHUP).
 */
export async function underTerminal(limits?: object): Promise<{ node: number; command: number; hangUp(): Promise<string>; kill(): void }> {
  const launcher = [
    'import os, pty, sys',
    'pid, fd = pty.fork()',
    'if pid == 0: os.execv(sys.argv[1], sys.argv[1:])',
    'print(pid, flush=True)',
    'out = b""',
    'while b"}" not in out:',
    '  try: chunk = os.read(fd, 4096)',
    '  except OSError: chunk = b""',
    '  if not chunk: break',
    '  out += chunk',
    'print(out.decode(errors="replace").replace("\\r", ""), flush=True)',
    'sys.stdin.read()',
    'os.close(fd)',
    '_, status = os.waitpid(pid, 0)',
    'print("signal", os.WTERMSIG(status)) if os.WIFSIGNALED(status) else print("exit", os.WEXITSTATUS(status))',
  ].join('\n')
  const fixture = join(root, '__test__', 'fixtures', 'terminal-caller.ts')
  const child = spawn('python3', ['-c', launcher, process.execPath, '--import=tsx', fixture, ...(limits ? [JSON.stringify(limits)] : [])], { cwd: root, stdio: ['pipe', 'pipe', 'inherit'] })
  let out = ''
  child.stdout!.on('data', (d) => (out += d))
  const ended = new Promise<void>((r) => child.once('exit', () => r()))
  await Promise.race([waitUntil(() => /\{.*\}/.test(out), 30_000, 20), ended])
  const node = Number(out.split('\n')[0])
  const line = /\{.*\}/.exec(out)
  if (!line) {
    child.kill('SIGKILL')
    throw new Error(`the terminal's caller printed no line: ${JSON.stringify(out)}`)
  }
  const { command } = JSON.parse(line[0]) as { command: number }
  return {
    node,
    command,
    hangUp: async () => {
      child.stdin!.end()
      await ended
      return out.trim().split('\n').pop() ?? ''
    },
    kill: () => {
      if (pidAlive(node)) process.kill(node, 'SIGKILL')
      child.kill('SIGKILL')
    },
  }
}

/** The directory of a /proc/PID/cgroup line's cgroup (`ID:CONTROLLERS:PATH`; v2 when CONTROLLERS is empty). */
export function cgroupDirOf(line: string): { dir: string; path: string } {
  const [, controllers, path] = line.split(':')
  const hierarchy = controllers === '' ? '' : (controllers.split(',').find((c) => !c.startsWith('name=')) ?? controllers)
  return { dir: join('/sys/fs/cgroup', hierarchy, path), path }
}

/** The directories of the sandbox cgroups (named isolate-*) that `pid` is in, one per hierarchy. */
export function sandboxCgroupsOf(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n').map(cgroupDirOf)
    .filter(({ path }) => path.split('/').some((part) => part.startsWith('isolate-')))
    .map(({ dir }) => dir)
}

/**
 * Run `script` in a Node of its own (ESM, tsx, the repository as its cwd) without blocking this
 * one: tests of a file run side by side on one event loop. `timedOut` when it had to be killed.
 */
export function nodeScript(script: string, timeoutMs: number): Promise<{ status: number | null; stdout: string; stderr: string; timedOut: boolean }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import=tsx', '-e', script], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, timeoutMs)
    child.on('close', (status) => {
      clearTimeout(timer)
      resolve({ status, stdout, stderr, timedOut })
    })
  })
}
