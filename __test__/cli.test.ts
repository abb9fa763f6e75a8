/**
 * The `isolate` command as a user runs it: a real process, real exit codes, real stdio.
 * (Tests may use child_process; only the library must not.)
 */
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DEFAULT_PATH } from '../lib/options.js'
import { ROOTS_OWN_UIDS, unseenAccountSources } from '../lib/probe.js'
import { cli, cliUnderTerminal } from './cli-runner.js'
import { root } from './helpers.js'

test('run: the default hostname is sandbox', async (t) => {
  const r = await cli(['run', '--', '/bin/sh', '-c', 'hostname'])
  t.is(r.status, 0, r.stderr)
  t.is(r.stdout, 'sandbox\n')
})

test('run: --hostname sets the hostname', async (t) => {
  const r = await cli(['run', '--hostname', 'box', '--', '/bin/sh', '-c', 'hostname'])
  t.is(r.status, 0, r.stderr)
  t.is(r.stdout, 'box\n')
})

test('run: options end at the first non-option argument, without --', async (t) => {
  const r = await cli(['run', '--hostname', 'box2', '/bin/sh', '-c', 'hostname'])
  t.is(r.status, 0, r.stderr)
  t.is(r.stdout, 'box2\n')
})

test("run: exits with the command's own exit code", async (t) => {
  const r = await cli(['run', '--', '/bin/sh', '-c', 'exit 7'])
  t.is(r.status, 7)
  t.is(r.stderr, '')
})

test('run: a command killed by signal N exits 128+N', async (t) => {
  const r = await cli(['run', '--', '/bin/sh', '-c', 'kill -TERM $$'])
  t.is(r.status, 143)
})

test('run: --timeout ends the sandbox and exits 124', async (t) => {
  const r = await cli(['run', '--timeout', '200ms', '--', '/bin/sleep', '10'])
  t.is(r.status, 124)
  // The sandbox's own clock, not the test's: CLI start-up time under load does not count.
  const j = await cli(['run', '--json', '--timeout', '200ms', '--', '/bin/sleep', '10'])
  t.is(j.status, 124)
  const o = JSON.parse(j.stdout) as { reason: string; durationMs: number }
  t.is(o.reason, 'timeout')
  t.true(o.durationMs >= 150 && o.durationMs < 5000, `durationMs ${o.durationMs}`)
})

test('run: --grace sends the command SIGTERM (or --stop-signal) at --timeout and kills the sandbox only after it; still 124', async (t) => {
  const trap = (sig: string) => `trap "echo got-${sig}; exit 4" ${sig}; while :; do sleep 0.05; done`
  // Timeouts of 1 s: the shell has set its trap by then, on a loaded host too.
  const r = await cli(['run', '--timeout', '1s', '--grace', '5s', '--', '/bin/sh', '-c', trap('TERM')])
  t.is(r.status, 124, r.stderr)
  t.is(r.stdout, 'got-TERM\n')
  for (const name of ['SIGINT', 'INT', '2']) {
    const i = await cli(['run', '--timeout', '1s', '--grace', '5s', '--stop-signal', name, '--', '/bin/sh', '-c', trap('INT')])
    t.is(i.status, 124, i.stderr)
    t.is(i.stdout, 'got-INT\n', name)
  }
  const alone = await cli(['run', '--stop-signal', 'SIGINT', '--', '/bin/true'])
  t.is(alone.status, 125)
  t.regex(alone.stderr, /--stop-signal needs --grace/)
  const untimed = await cli(['run', '--grace', '1s', '--', '/bin/true'])
  t.is(untimed.status, 125)
  t.regex(untimed.stderr, /--grace needs --timeout/)
  const kill = await cli(['run', '--timeout', '1s', '--grace', '1s', '--stop-signal', 'SIGKILL', '--', '/bin/true'])
  t.is(kill.status, 125)
  t.regex(kill.stderr, /option: stop\.signal \(--stop-signal\)/)
  // --stop-group: the shell's child gets it too (the shell ignores it and waits for the child).
  const parent = `/bin/sh -c 'trap "echo child-term; exit 0" TERM; while :; do sleep 0.05; done' & trap "" TERM; wait`
  const group = await cli(['run', '--timeout', '1s', '--grace', '5s', '--stop-group', '--', '/bin/sh', '-c', parent])
  t.is(group.status, 124, group.stderr)
  t.is(group.stdout, 'child-term\n')
  const lone = await cli(['run', '--stop-group', '--', '/bin/true'])
  t.is(lone.status, 125)
  t.regex(lone.stderr, /--stop-group needs --grace/)
})

test('run: a bad --timeout is a usage error (125)', async (t) => {
  const r = await cli(['run', '--timeout', '5 parsecs', '--', '/bin/true'])
  t.is(r.status, 125)
  t.regex(r.stderr, /^isolate: --timeout: invalid duration/)
  const long = await cli(['run', '--timeout', '99999999999999999ms', '--memory', '1', '--', '/bin/true'])
  t.is(long.status, 125)
  t.regex(long.stderr, /^isolate: --timeout: the duration is too long/)
  // A bare number: timeout(1) reads seconds, and as milliseconds every command was ended at once.
  const bare = await cli(['run', '--timeout', '5', '--', '/bin/true'])
  t.is(bare.status, 125)
  t.regex(bare.stderr, /^isolate: --timeout: "5" needs a unit: 5s for seconds, 5ms for milliseconds/)
})

test('run: a missing command exits 127 (126: one that cannot be run) with the failing step and errno, as env(1) and docker', async (t) => {
  const cannot = await cli(['run', '--', '/etc/passwd'])
  t.is(cannot.status, 126, cannot.stderr)
  t.regex(cannot.stderr, /^ {2}errno: EACCES$/m)
  // Hints name what a CLI user types, not the library's calls and options.
  t.regex(cannot.stderr, /host ids of its own \('isolate doctor' names them\)/)
  t.notRegex(cannot.stderr, /probe\(\)/)
  // A helper override that is no helper: the hint names the override, not a bug to report.
  const wrong = await cli(['run', '--', '/bin/true'], { env: { ...process.env, ISOLATE_HELPER_PATH: '/bin/true' } })
  t.is(wrong.status, 125)
  t.regex(wrong.stderr, /^ {2}hint: .*ISOLATE_HELPER_PATH names "\/bin\/true": is that this version's isolate-helper\?$/m)
  // A path that holds 'options.env' is shown as typed, not as a flag.
  const named = await cli(['run', '--', '/opt/options.env'])
  t.is(named.status, 127)
  t.regex(named.stderr, /^isolate: sandbox setup failed at execve \(\/opt\/options\.env\)/)
  const relative = await cli(['run', '--cwd', 'work', '--', '/bin/pwd'])
  t.is(relative.status, 125)
  t.regex(relative.stderr, /^isolate: --cwd: must be an absolute path inside the sandbox, got "work"$/m)
  const r = await cli(['run', '--', '/no/such'])
  t.is(r.status, 127)
  t.regex(r.stderr, /^isolate: /)
  t.regex(r.stderr, /^ {2}step: execve$/m)
  t.regex(r.stderr, /^ {2}errno: ENOENT$/m)
  t.regex(r.stderr, /^ {2}path: \/no\/such$/m)
  t.regex(r.stderr, /^ {2}hint: /m)
})

test("an unknown option says so, names the command that takes it, or the nearest one, never parseArgs's text about positional arguments", async (t) => {
  for (const [args, said] of [
    [['create', '--output', '1M'], /^isolate: create: unknown option '--output' \(--output is an option of 'isolate run'\)\nRun 'isolate create --help'/],
    [['exec', '-f', 'x', '--', 'true'], /^isolate: exec: unknown option '-f' \(-f is an option of 'isolate rm'\)/],
    [['rm', '--json', 'x'], /^isolate: rm: unknown option '--json' \(--json is an option of 'isolate run', 'isolate exec', 'isolate rootfs unpack\/import' and 'isolate ps\/doctor'\)/],
    [['run', '--memroy', '1M', '--', 'true'], /^isolate: run: unknown option '--memroy' \(did you mean --memory\?\)/],
    [['run', '--nme', 'x', '--', 'true'], /^isolate: run: unknown option '--nme' \(did you mean --net\?\)/],
    [['ps', '--all'], /^isolate: ps: unknown option '--all'\n/],
  ] as const) {
    const r = await cli([...args])
    t.is(r.status, 125, args.join(' '))
    t.regex(r.stderr, said)
    t.notRegex(r.stderr, /positional/)
    t.is(r.stdout, '', `${args.join(' ')}: no JSON where --json is no option`)
  }
})

test('run: a missing bind source exits 125 with ENOENT; messages and hints name the flags, not the library\'s options (mounts[1].source, limits.memoryBytes, env.PATH)', async (t) => {
  const r = await cli(['run', '--tmpfs', '/scratch', '--bind', '/nonexistent:/x', '--', '/bin/true'])
  t.is(r.status, 125)
  t.regex(r.stderr, /^ {2}errno: ENOENT$/m)
  t.regex(r.stderr, /^ {2}path: \/nonexistent$/m)
  t.regex(r.stderr, /^ {2}hint: the source of '--bind \/nonexistent:\/x' does not exist on the host; create it or fix the source of '--bind \/nonexistent:\/x'$/m)
  const small = await cli(['run', '--memory', '1k', '--', '/bin/true'])
  t.regex(small.stderr, /^isolate: --memory: must be at least 1 MiB/)
  const bare = await cli(['run', '--', 'no-such-command'])
  t.regex(bare.stderr, /^ {2}hint: .*set -e PATH=\.\.\., /m)
  // The option line names both, on purpose.
  const told = `${r.stderr}${small.stderr}${bare.stderr}`.split('\n').filter((l) => !l.startsWith('  option: '))
  t.notRegex(told.join('\n'), /mounts\[|limits\.|env\.PATH/)
})

test('run: --bind is read-only by default and writable with :rw', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'isolate-cli-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  // The sandbox's root is an unprivileged host uid: let it write here when the mount allows.
  chmodSync(dir, 0o777)
  const ro = await cli(['run', '--bind', `${dir}:/data`, '--', '/bin/sh', '-c', 'echo x > /data/ro'])
  t.not(ro.status, 0)
  t.regex(ro.stderr, /Read-only file system/)
  t.false(existsSync(join(dir, 'ro')))
  const rw = await cli(['run', '--bind', `${dir}:/data:rw`, '--', '/bin/sh', '-c', 'echo written > /data/rw'])
  t.is(rw.status, 0, rw.stderr)
  t.is(readFileSync(join(dir, 'rw'), 'utf8'), 'written\n')
})

test("run: a ':' of a path is written '\\:' in --bind and --tmpfs", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'isolate-cli-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  // The sandbox's root is an unprivileged host uid: let it in.
  chmodSync(dir, 0o755)
  mkdirSync(join(dir, 'a:b'))
  writeFileSync(join(dir, 'a:b', 'f'), 'through the colon\n')
  const esc = (p: string) => p.replaceAll(':', '\\:')
  // A backslash not before a ':' is the path's own, as before; one that ends a path before the ':' is doubled.
  mkdirSync(join(dir, 'back\\slash\\'))
  writeFileSync(join(dir, 'back\\slash\\', 'g'), 'through the backslash\n')
  const r = await cli(['run', '--bind', `${esc(join(dir, 'a:b'))}:${esc('/in:side')}`, '--tmpfs', `${esc('/t:mp')}:1M`,
    '--bind', `${join(dir, 'back\\slash\\\\')}:/bs`, '--', '/bin/sh', '-c', 'cat /in:side/f; df -k /t:mp | tail -n 1; cat /bs/g'])
  t.is(r.status, 0, r.stderr)
  t.regex(r.stdout, /^through the colon\ntmpfs\s+1024\s.*\nthrough the backslash\n$/)
  const plain = await cli(['run', '--bind', `${join(dir, 'a:b')}:/x`, '--', '/bin/true'])
  t.is(plain.status, 125, 'unescaped, the path has too many parts')
  t.regex(plain.stderr, /too many ':'.*'\\:' for a ':' in a path/)
  const mode = await cli(['run', '--bind', `${dir}:/x:rx`, '--', '/bin/true'])
  t.is(mode.status, 125)
  t.regex(mode.stderr, /the mode "rx", which is neither ro nor rw/)
  const twice = await cli(['run', '--bind', `${dir}:/x:ro:rw`, '--', '/bin/true'])
  t.is(twice.status, 125)
  t.regex(twice.stderr, /gives two modes; use SRC:DST\[:ro\|:rw\]/)
})

test('run: --tmpfs DST:SIZE mounts a tmpfs of that size', async (t) => {
  const r = await cli(['run', '--tmpfs', '/scratch:2M', '--', '/bin/sh', '-c', 'df -k /scratch | tail -n 1'])
  t.is(r.status, 0, r.stderr)
  const fields = r.stdout.trim().split(/\s+/)
  t.is(fields[0], 'tmpfs')
  t.is(fields[1], '2048')
})

test('run: --json prints one JSON object and nothing else on stdout', async (t) => {
  const r = await cli(['run', '--json', '--', '/bin/sh', '-c', 'echo out; echo err >&2; exit 3'])
  t.is(r.status, 3)
  t.is(r.stdout.trim().split('\n').length, 1)
  const o = JSON.parse(r.stdout) as Record<string, unknown>
  t.is(o.exitCode, 3)
  t.is(o.reason, 'exited')
  t.is(o.signal, null)
  t.is(typeof o.durationMs, 'number')
  // The command's own output went to stderr instead.
  t.regex(r.stderr, /^out$/m)
  t.regex(r.stderr, /^err$/m)
})

test('run: --json reports a setup failure as {error} on stdout', async (t) => {
  const r = await cli(['run', '--json', '--', '/no/such'])
  t.is(r.status, 127)
  const o = JSON.parse(r.stdout) as { error: Record<string, unknown> }
  t.is(o.error.step, 'execve')
  t.is(o.error.errno, 'ENOENT')
})

test('--json: a usage error or an option the library refused is {error} on stdout too, once (it printed nothing there)', async (t) => {
  for (const [args, name] of [
    [['run', '--json', '--timeout', '5', '--', '/bin/true'], 'UsageError'],
    [['run', '--json', '--bogus', '--', '/bin/true'], 'UsageError'],
    [['run', '--json'], 'UsageError'],
    [['run', '-t', '--json', '--', '/bin/true'], 'UsageError'],
    [['rootfs', 'import', '--json', '/nonexistent', '/'], 'IsolateError'],
    [['run', '--json', '--cwd', 'relative', '--', '/bin/true'], 'IsolateError'],
  ] as const) {
    const r = await cli([...args])
    t.is(r.status, 125, `${args.join(' ')}: ${r.stderr}`)
    t.is(r.stdout.trim().split('\n').length, 1, `${args.join(' ')}: one line`)
    t.is((JSON.parse(r.stdout) as { error: { name: string } }).error.name, name, args.join(' '))
    t.regex(r.stderr, /^isolate: /, 'and the message on stderr, as without --json')
  }
})

test('run: -e gives exactly those variables plus the default PATH', async (t) => {
  const r = await cli(['run', '-e', 'FOO=bar', '--', '/usr/bin/env'], { env: { ...process.env, LEAKY: 'host-secret' } })
  t.is(r.status, 0, r.stderr)
  t.deepEqual(r.stdout.trim().split('\n').sort(), ['FOO=bar', `PATH=${DEFAULT_PATH}`])
})

test('run: -e PATH=... replaces the default PATH, and -e NAME copies a host variable', async (t) => {
  const r = await cli(['run', '-e', 'PATH=/bin', '-e', 'FROM_HOST', '--', '/usr/bin/env'], { env: { ...process.env, FROM_HOST: 'yes' } })
  t.is(r.status, 0, r.stderr)
  t.deepEqual(r.stdout.trim().split('\n').sort(), ['FROM_HOST=yes', 'PATH=/bin'])
})

test('run: without -e no host variable leaks in', async (t) => {
  const r = await cli(['run', '--', '/usr/bin/env'], { env: { ...process.env, LEAKY: 'host-secret' } })
  t.is(r.status, 0, r.stderr)
  t.deepEqual(r.stdout.trim().split('\n'), [`PATH=${DEFAULT_PATH}`])
})

test('run: stdin passes through to the command', async (t) => {
  const r = await cli(['run', '--', '/bin/cat'], { input: 'hello' })
  t.is(r.status, 0, r.stderr)
  t.is(r.stdout, 'hello')
})

test('run: --cwd, --uid and --gid apply inside', async (t) => {
  const r = await cli(['run', '--cwd', '/tmp', '--uid', '1000', '--gid', '1001', '--', '/bin/sh', '-c', 'pwd; id -u; id -g'])
  t.is(r.status, 0, r.stderr)
  t.is(r.stdout, '/tmp\n1000\n1001\n')
})

test('run: limit flags reach the sandbox (--memory, --pids, --output, --stack, --json usage)', async (t) => {
  const r = await cli(['run', '--json', '--memory', '64M', '--pids', '32', '--output', '1K', '--', '/bin/sh', '-c', 'head -c 5000 /dev/zero'])
  const result = JSON.parse(r.stdout)
  t.is(result.reason, 'output-limit')
  t.is(r.status, 137)
  t.true(typeof result.usage.cpuUserMs === 'number')
  t.is(result.usage.pidsLimitHits, 0, 'with --pids, the forks it refused')
  const bad = await cli(['run', '--memory', 'lots', '--', '/bin/true'])
  t.is(bad.status, 125)
  t.regex(bad.stderr, /--memory/)
  const stack = await cli(['run', '--stack', '256M', '--', '/bin/sh', '-c', 'ulimit -s'])
  t.is(stack.stdout, '262144\n', stack.stderr)
  const small = await cli(['run', '--stack', '4K', '--', '/bin/true'])
  t.is(small.status, 125)
  t.regex(small.stderr, /--stack.*at least 262144/)
})

test('run: --pids unlimited lifts the default process bound (2100 threads start); a word that is no number is refused', async (t) => {
  const threads = 'import threading\nthreading.stack_size(65536)\nev = threading.Event()\nfor _ in range(2100): threading.Thread(target=ev.wait, daemon=True).start()\nev.set()\nprint("started")'
  const r = await cli(['run', '--pids', 'unlimited', '--', '/usr/bin/python3', '-c', threads])
  t.is(r.status, 0, r.stderr)
  t.is(r.stdout, 'started\n')
  const bad = await cli(['run', '--pids', 'lots', '--', '/bin/true'])
  t.is(bad.status, 125)
  t.regex(bad.stderr, /--pids: expected a positive whole number or unlimited/)
})

test('run: output cut by --output exits 137 even when the command had ended (with 0) before the cut', async (t) => {
  for (let i = 0; i < 5; i++) {
    const r = await cli(['run', '--output', '1', '--', '/bin/echo', 'hello'])
    t.is(r.stdout, 'h')
    t.is(r.status, 137, 'it was 0 or 137 by the race between echo and the helper')
  }
})

test("run -t in a terminal: each line ends as the sandbox's terminal ended it (\\r\\n, not \\r\\r\\n), the last one too, before the terminal's modes go back", async (t) => {
  const r = await cliUnderTerminal(['run', '-t', '--', '/bin/sh', '-c', 'printf "one\\ntwo\\n"; exit 3'])
  t.is(r.status, 3)
  t.is(r.bytes.toString('latin1'), 'one\r\ntwo\r\n')
})

test('run: -t with --json is a usage error (125)', async (t) => {
  const r = await cli(['run', '-t', '--json', '--', '/bin/true'])
  t.is(r.status, 125)
  t.regex(r.stderr, /-t and --json/)
})

test('run: SIGTERM sent to isolate is forwarded to the command', async (t) => {
  const r = await cli(['run', '--', '/bin/sh', '-c', 'echo ready; exec /bin/sleep 30'], {
    onStdout: { text: 'ready', then: (child) => child.kill('SIGTERM') },
  })
  // Forwarded: the command dies of SIGTERM and isolate exits 128+15 itself (not killed by it).
  t.is(r.signal, null)
  t.is(r.status, 143)
})

/** `isolate run -- sh -c SCRIPT`, where SCRIPT echoes `ready`; then `signals`, each `after` ms after the one before. */
const signaled = (script: string, signals: Array<[after: number, signal: NodeJS.Signals]>) =>
  cli(['run', '--', '/bin/sh', '-c', script], {
    onStdout: {
      text: 'ready',
      then: (child) => {
        let at = 0
        for (const [after, signal] of signals) setTimeout(() => child.kill(signal), (at += after))
      },
    },
  })

test('run: a command that stopped itself still gets the SIGTERM sent to isolate (SIGCONT follows it); one that ignores it is killed by a second', async (t) => {
  const stopped = await signaled('echo ready; kill -STOP $$', [[300, 'SIGTERM']])
  t.is(stopped.status, 143, stopped.stderr)
  const ignoring = await signaled('trap "" TERM; echo ready; while :; do /bin/sleep 1; done', [[0, 'SIGTERM'], [500, 'SIGTERM']])
  t.is(ignoring.status, 137, ignoring.stderr)
  // A command that takes Ctrl-C (a REPL) keeps taking it: two SIGINTs are forwarded, not a kill.
  const taking = await signaled('n=0; trap \'n=$((n+1)); [ $n -ge 2 ] && exit 7\' INT; echo ready; while :; do /bin/sleep 0.1; done', [[0, 'SIGINT'], [500, 'SIGINT']])
  t.is(taking.status, 7, taking.stderr)
})

test('run: no command is a usage error', async (t) => {
  const r = await cli(['run'])
  t.is(r.status, 125)
  t.regex(r.stderr, /no command given/)
})

test('run --help prints the options and exits 0', async (t) => {
  const r = await cli(['run', '--help'])
  t.is(r.status, 0)
  t.regex(r.stdout, /^Usage: isolate run/)
  t.regex(r.stdout, /--json/)
})

test('no subcommand: usage on stderr, exit 125; --help: exit 0', async (t) => {
  const none = await cli([])
  t.is(none.status, 125)
  t.regex(none.stderr, /Usage: isolate/)
  t.is(none.stdout, '')
  const unknown = await cli(['frobnicate'])
  t.is(unknown.status, 125)
  t.regex(unknown.stderr, /unknown command "frobnicate"/)
  const help = await cli(['--help'])
  t.is(help.status, 0)
  t.regex(help.stdout, /Usage: isolate/)
  const helpRun = await cli(['help', 'run'])
  t.is(helpRun.status, 0)
  t.regex(helpRun.stdout, /^Usage: isolate run/)
  const helpUnknown = await cli(['help', 'frobnicate'])
  t.is(helpUnknown.status, 125)
  t.regex(helpUnknown.stderr, /help: unknown command "frobnicate"/)
})

test('an error quoting a name with a terminal escape prints it escaped; a command killed by signal 32 exits 160', async (t) => {
  const r = await cli(['run', '--bind', '/no\x1b]0;title\x07such:/x', '--', '/bin/true'])
  t.is(r.status, 125)
  t.notRegex(r.stderr, /[\x07\x1b]/, 'no control character reaches the terminal')
  t.regex(r.stderr, /\/no\\x1b\]0;title\\x07such/)
  const sig = await cli(['run', '--', '/bin/sh', '-c', 'kill -32 $$'])
  t.is(sig.status, 128 + 32)
})

test("doctor warns an account without root that its supplementary groups keep their access inside its sandboxes", async (t) => {
  if (process.getuid?.() !== 0) {
    console.log('cli.test: not root, so no process with other groups can be started here; the root suite runs the doctor groups test')
    return t.pass()
  }
  // As nobody, with one supplementary group (a gid no account needs to have).
  const asNobody = 'import os, sys; os.setgroups([4242]); os.setgid(65534); os.setuid(65534); os.execv(sys.argv[1], sys.argv[1:])'
  const r = spawnSync('python3', ['-c', asNobody, process.execPath, '--import=tsx', join(root, 'cli.ts'), 'doctor'], { cwd: root, encoding: 'utf8', env: { PATH: process.env.PATH, HOME: '/tmp' } })
  t.teardown(() => rmSync('/tmp/tsx-65534', { recursive: true, force: true }))
  t.is(r.status, 0, r.stderr)
  t.regex(r.stdout, /problem: this account's supplementary groups \(4242\) keep their access inside its sandboxes/)
})

test('doctor exits 0 and describes cgroups', async (t) => {
  const r = await cli(['doctor'])
  t.is(r.status, 0, r.stdout + r.stderr)
  t.regex(r.stdout, /cgroup/)
  t.regex(r.stdout, /user namespaces:\s+allowed/)
  const p = JSON.parse((await cli(['doctor', '--json'])).stdout) as { defaultPids: number | null }
  t.regex(r.stdout, p.defaultPids === 2048 ? /pids default:\s+2048 processes and threads/ : /pids default:\s+none here/, 'says whether the default pids bound holds')
})

test('doctor warns where accounts come from a directory and root has no ids of its own (the fallback ids were checked against /etc/passwd only)', async (t) => {
  const sssd = 'passwd:     files sss systemd\ngroup: files sss\n'
  t.deepEqual(unseenAccountSources(sssd, false), ['sss'])
  t.deepEqual(unseenAccountSources('passwd: compat ldap [NOTFOUND=return] winbind # comment\n', false), ['ldap', 'winbind'])
  // Root's own ranges are set aside for it: no directory user holds them.
  t.deepEqual(unseenAccountSources(sssd, true), [])
  // Local accounts only.
  t.deepEqual(unseenAccountSources('passwd: files systemd\n', false), [])
  t.deepEqual(unseenAccountSources('', false), [])
  // This host: the probe's word on where the ids came from, and what the doctor prints from it.
  const p = JSON.parse((await cli(['doctor', '--json'])).stdout) as { sandboxIdsRootsOwn: boolean; rootless: boolean }
  const rootsRange = (file: string, ids: number) => {
    const m = /^(root|0):[1-9]\d*:(\d+)\s*$/m.exec(existsSync(file) ? readFileSync(file, 'utf8') : '')
    return m !== null && Number(m[2]) >= ids
  }
  if (!p.rootless) t.is(p.sandboxIdsRootsOwn, rootsRange('/etc/subuid', ROOTS_OWN_UIDS) && rootsRange('/etc/subgid', 65536))
  const doctor = await cli(['doctor'])
  const here = unseenAccountSources(existsSync('/etc/nsswitch.conf') ? readFileSync('/etc/nsswitch.conf', 'utf8') : '', p.sandboxIdsRootsOwn)
  t.is(/accounts also come from/.test(doctor.stdout), !p.rootless && here.length > 0, doctor.stdout)
})

test('doctor --json prints the probe as JSON', async (t) => {
  const r = await cli(['doctor', '--json'])
  t.is(r.status, 0, r.stderr)
  const p = JSON.parse(r.stdout) as { userNamespaces: { allowed: boolean }; cgroup: { mode: string }; native: { helperPath: string } }
  t.true(p.userNamespaces.allowed)
  t.true(['v1', 'v2', 'hybrid', 'none'].includes(p.cgroup.mode))
  t.true(existsSync(p.native.helperPath))
})

test('rootfs unpack of a missing tarball fails naming the step', async (t) => {
  const r = await cli(['rootfs', 'unpack', '/no/such/x.tar.gz', '/tmp/isolate-cli-never-made'])
  t.is(r.status, 1)
  t.regex(r.stderr, /step: open_archive/)
})
