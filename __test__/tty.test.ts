/** Terminals: the sandbox's own pty, sized and resized, Ctrl-C to the foreground job; and a
 * person's shell through `isolate run -t`, driven by tmux in a real terminal. */
import test, { type ExecutionContext } from 'ava'
import { execFile, spawnSync } from 'node:child_process'
import { chmodSync, closeSync, constants, openSync, readFileSync } from 'node:fs'
import { promisify } from 'node:util'
import { join } from 'node:path'
import { createSandbox, runIsolated, spawnIsolated } from '../index.js'
import { driveShellInTmux, ended, hasTmux, isRoot, removeDir, root, tempDir, waitUntil } from './helpers.js'

const rootOnly = isRoot ? test : test.skip

/** Run on a terminal of its own with `input` typed (at most 20 s): the command ends by itself, and
 * what the terminal showed ends as `end` says. */
async function endsOnItsOwn(t: ExecutionContext, file: string, args: string[], input: string, end: RegExp): Promise<void> {
  const r = await runIsolated(file, args, { tty: true, input, timeoutMs: 20_000 })
  t.is(r.reason, 'exited', r.stdout)
  t.regex(r.stdout, end)
}

test('tty: the command runs on a terminal of the given size, inside the sandbox', async (t) => {
  const r = await runIsolated('/bin/sh', ['-c', 'test -t 0 && test -t 1 && test -t 2 && echo on-a-tty; stty size; tty'], { tty: { rows: 30, cols: 100 } })
  t.is(r.exitCode, 0, r.stdout)
  t.is(r.stdout, 'on-a-tty\r\n30 100\r\n/dev/pts/0\r\n', 'its own devpts: the first terminal there')
})

test('resize without a tty says so (false), for a sandbox and for an exec', async (t) => {
  const sb = await spawnIsolated('/bin/sleep', ['10'], { stdio: 'ignore' })
  t.false(sb.resize(80, 24))
  sb.cancel()
  await sb.wait()
  const box = await createSandbox()
  t.teardown(() => box.destroy())
  const p = await box.spawn('/bin/sleep', ['10'], { stdio: 'ignore' })
  t.false(p.resize(80, 24))
  const q = await box.spawn('/bin/sleep', ['10'], { tty: true })
  t.true(q.resize(80, 24))
})

test('tty: resize reaches the command, Ctrl-C interrupts the foreground job only', async (t) => {
  const sb = await spawnIsolated('/bin/sh', ['-c', 'trap "echo caught" INT; read x; stty size; sleep 100; echo after'], { tty: true })
  let out = ''
  sb.stdout!.on('data', (d) => (out += d))
  t.true(sb.resize(120, 50))
  sb.stdin!.write('go\n')
  t.true(await waitUntil(() => out.includes('50 120'), 5000), out)
  sb.stdin!.write('\x03')
  const r = await sb.wait()
  await waitUntil(() => out.includes('after'), 2000)
  t.is(r.exitCode, 0)
  t.regex(out, /\^Ccaught\r\nafter\r\n$/)
})

test('tty: the command cannot push input into a terminal with TIOCSTI', async (t) => {
  const r = await runIsolated('/usr/bin/python3', ['-c', 'import fcntl, termios, errno\ntry:\n  fcntl.ioctl(0, termios.TIOCSTI, b"x"); print("injected")\nexcept OSError as e: print(errno.errorcode[e.errno])'], { tty: true })
  t.is(r.stdout.trim(), 'EPERM')
})

if (!hasTmux) console.log('tty.test: tmux is not installed (.ci/run installs it); the interactive shell test cannot run without it')
const withTmux = hasTmux ? test : test.skip

withTmux('isolate run -t: an interactive shell in a real terminal', async (t) => {
  const cmd = `${process.execPath} --import=tsx ${join(root, 'cli.ts')} run -t -- /bin/sh; echo EXIT=$?; sleep 60`
  await driveShellInTmux(t, cmd, async (keys, seen, screen) => {
    keys('echo hi-$((1+1)); hostname')
    t.true(await seen(/^hi-2$/m), screen())
    t.true(await seen(/^sandbox$/m), screen())
  })
})

/** The file status flags of one of this process's descriptors, as the kernel holds them. */
function fdFlags(fd: number): number {
  return Number.parseInt(/^flags:\s+(\d+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1], 8)
}

test('tty: the caller\'s own descriptors keep their flags (never left nonblocking): a file, a FIFO', async (t) => {
  const dir = tempDir()
  t.teardown(() => removeDir(dir))
  const fifo = join(dir, 'in')
  t.is(spawnSync('mkfifo', [fifo]).status, 0)
  // O_RDWR: a FIFO opened so never waits for a peer (Linux), and its data stays unread here.
  const input = openSync(fifo, 'r+')
  const output = openSync(join(dir, 'out'), 'a')
  t.teardown(() => (closeSync(input), closeSync(output)))
  const before = [fdFlags(input), fdFlags(output)]
  t.is(before[0] & constants.O_NONBLOCK, 0)
  const r = await runIsolated('/bin/echo', ['through the terminal'], { tty: true, stdio: [input, output, 'ignore'] })
  t.is(r.exitCode, 0)
  const box = await createSandbox()
  t.teardown(() => box.destroy())
  await box.exec('/bin/echo', ['and an exec'], { tty: true, stdio: [input, output, 'ignore'] })
  t.deepEqual([fdFlags(input), fdFlags(output)], before, 'O_NONBLOCK was left on the shared file descriptions')
  t.regex(readFileSync(join(dir, 'out'), 'utf8'), /through the terminal\r\n[^]*and an exec\r\n/)
})

test('tty: the end of the input is the terminal\'s end of file (^D), so a command reading to the end finishes', async (t) => {
  // It hung: closing stdin said nothing to the terminal.
  const r = await runIsolated('/bin/cat', [], { tty: true, input: 'hello\n', timeoutMs: 20_000 })
  t.is(r.reason, 'exited')
  t.is(r.exitCode, 0)
  t.is(r.stdout, 'hello\r\nhello\r\n', 'the terminal echoes the line, then cat writes it')
  // A last line without its newline: the first ^D hands it over, the second ends the input.
  const open = await runIsolated('/bin/sh', ['-c', 'cat; echo " end"'], { tty: true, input: 'abc', timeoutMs: 20_000 })
  t.is(open.reason, 'exited')
  t.regex(open.stdout, /abc[^]*abc end\r\n$/)
  const box = await createSandbox()
  t.teardown(() => box.destroy())
  const e = await box.exec('/usr/bin/wc', ['-l'], { tty: true, input: 'a\nb\n', timeoutMs: 20_000 })
  t.is(e.reason, 'exited')
  t.regex(e.stdout, /^\s*2\r\n$/m)
})

test('tty: a command that lets go of its terminal before it ends is not hung up (no SIGHUP while it runs)', async (t) => {
  // The helper closed the master as soon as nobody held the terminal: the command, still
  // running, got SIGHUP (so did cat, which closes stdin at the end of its input).
  const script = 'exec </dev/null >/dev/null 2>&1; sleep 0.3; exit 3'
  const r = await runIsolated('/bin/sh', ['-c', script], { tty: true, timeoutMs: 20_000 })
  t.is(r.reason, 'exited', `${r.signal ?? ''}`)
  t.is(r.exitCode, 3)
  const box = await createSandbox()
  t.teardown(() => box.destroy())
  const e = await box.exec('/bin/sh', ['-c', script], { tty: true, timeoutMs: 20_000 })
  t.is(e.reason, 'exited', `${e.signal ?? ''}`)
  t.is(e.exitCode, 3)
})

test('tty: a command that closed its stdio can still prompt on /dev/tty and read the answer (as ssh, sudo and gpg do)', async (t) => {
  // The terminal was dead once nobody held it for a moment: the prompt was lost, the answer
  // never read, and the command waited for its timeout.
  const script = 'exec </dev/null >/dev/null 2>&1; sleep 0.2; printf "Password: " >/dev/tty; read p </dev/tty; echo "got $p" >/dev/tty'
  const run = async (sb: { stdout: NodeJS.ReadableStream | null; stdin: NodeJS.WritableStream | null; wait(): Promise<{ reason: string }> }) => {
    let out = ''
    let answered = false
    sb.stdout!.on('data', (d) => {
      out += d
      if (!answered && out.includes('Password: ')) (answered = true), sb.stdin!.write('secret\n')
    })
    const [r] = await Promise.all([sb.wait(), ended(sb.stdout)])
    return { reason: r.reason, out }
  }
  const one = await run(await spawnIsolated('/bin/sh', ['-c', script], { tty: true, timeoutMs: 20_000 }))
  t.is(one.reason, 'exited')
  t.regex(one.out, /Password: secret\r\ngot secret\r\n/)
  const box = await createSandbox()
  t.teardown(() => box.destroy())
  const two = await run(await box.spawn('/bin/sh', ['-c', script], { tty: true, timeoutMs: 20_000 }))
  t.is(two.reason, 'exited')
  t.regex(two.out, /Password: secret\r\ngot secret\r\n/)
})

test('tty: the end of input is told in the mode the program reads in: nothing to a raw reader, ^D to readline (bash -i, python -i), nothing when the EOF character is off', async (t) => {
  // Decided when stdin ended, before the program ran: a ^D queued in canonical mode became a NUL
  // byte of a program that then went raw, readline never heard of the end, and a terminal with
  // no EOF character got a NUL.
  const raw = await runIsolated('/usr/bin/python3', ['-c', 'import tty, os, time\ntime.sleep(0.3)\ntty.setraw(0, tty.TCSANOW)\nos.write(2, repr(os.read(0, 100)).encode())'], { tty: true, input: 'abc\n', timeoutMs: 20_000 })
  t.is(raw.reason, 'exited')
  t.regex(raw.stdout, /b'abc\\n'$/, 'the typed bytes, no NUL after them')
  await endsOnItsOwn(t, '/bin/bash', ['--norc', '-i'], 'echo hi\n', /\r\nhi\r\n[^]*exit\r\n$/)
  await endsOnItsOwn(t, '/usr/bin/python3', ['-q', '-i'], 'print(6 * 7)\n', /\r\n42\r\n/)
  const off = await runIsolated('/bin/sh', ['-c', 'stty eof undef; dd bs=1 count=4 2>/dev/null | od -An -c'], { tty: true, input: 'ab\n', timeoutMs: 1500 })
  t.is(off.reason, 'timeout', 'dd waits for its fourth byte')
  t.notRegex(off.stdout, /\\0/, 'no NUL was typed for it')
  // Input nobody read before the command ended: no ^D is typed after its end (it echoed back).
  // (Five at once: the echo raced the terminal's hang-up, about two runs in three showed it.)
  const notReading = 'import termios, time\nt = termios.tcgetattr(0)\nt[3] &= ~termios.ICANON\ntermios.tcsetattr(0, termios.TCSANOW, t)\ntime.sleep(0.5)\nprint("bye")'
  const unread = await Promise.all(Array.from({ length: 5 }, () => runIsolated('/usr/bin/python3', ['-c', notReading], { tty: true, input: 'ab', timeoutMs: 20_000 })))
  t.deepEqual(unread.map((r) => [r.reason, r.stdout]), Array(5).fill(['exited', 'abbye\r\n']))
})

test('tty: the end of input is typed when a process waits to read (read, select, poll, epoll), to each canonical read as from a pipe, and never queued for a program that goes raw later', async (t) => {
  // The mode was sampled: with no input, a program still starting up looked like one waiting in
  // read, so one that went raw later read the queued ^D as a NUL byte; and only one end of file
  // was typed, so a second reader (`cat; cat`) waited for its timeout.
  const lateRaw = 'import tty, os, time, select\ntime.sleep(0.3)\ntty.setraw(0, tty.TCSANOW)\nr, _, _ = select.select([0], [], [], 0.5)\nprint(repr(os.read(0, 100)) if r else "nothing typed")'
  const raw = await runIsolated('/usr/bin/python3', ['-c', lateRaw], { tty: true, input: '', timeoutMs: 20_000 })
  t.is(raw.reason, 'exited')
  t.is(raw.stdout, 'nothing typed\n', 'no NUL for a program that went raw 0.3 s after its start')
  const twice = await runIsolated('/bin/sh', ['-c', 'cat; cat; echo done'], { tty: true, input: 'a\n', timeoutMs: 20_000 })
  t.is(twice.reason, 'exited', twice.stdout)
  t.is(twice.stdout, 'a\r\na\r\ndone\r\n')
  const box = await createSandbox()
  t.teardown(() => box.destroy())
  const inBox = await box.exec('/bin/sh', ['-c', 'cat; cat; echo done'], { tty: true, input: 'b\n', timeoutMs: 20_000 })
  t.is(inBox.reason, 'exited', inBox.stdout)
  t.is(inBox.stdout, 'b\r\nb\r\ndone\r\n')
  // Each way a program waits for input, and one that starts reading long after the input ended.
  const waits: Record<string, string> = {
    read: '',
    select: 'select.select([0], [], [])',
    poll: 'p = select.poll()\np.register(0, select.POLLIN)\np.poll()',
    epoll: 'e = select.epoll()\ne.register(0, select.EPOLLIN)\ne.poll()',
    late: 'time.sleep(0.5)',
  }
  const runs = await Promise.all(Object.values(waits).map((wait) => runIsolated('/usr/bin/python3', ['-c', `import os, select, time\n${wait}\nprint(repr(os.read(0, 100)))`], { tty: true, input: '', timeoutMs: 20_000 })))
  t.deepEqual(Object.fromEntries(Object.keys(waits).map((k, i) => [k, [runs[i].reason, runs[i].stdout]])), Object.fromEntries(Object.keys(waits).map((k) => [k, ['exited', "b''\r\n"]])))
  // A prompt on /dev/tty once stdin was let go: its reads wait on the controlling terminal.
  await endsOnItsOwn(t, '/bin/sh', ['-c', 'exec </dev/null; read a </dev/tty; read b </dev/tty || echo "end after $a"'], 'x\n', /end after x\r\n$/)
  // More processes than a look reads (512): the end is typed once what came before was read.
  const crowd = await runIsolated('/bin/sh', ['-c', 'for i in $(seq 600); do sleep 60 & done; cat; echo done'], { tty: true, input: 'x\n', timeoutMs: 20_000 })
  t.is(crowd.reason, 'exited', crowd.stdout.slice(-200))
  t.regex(crowd.stdout, /x\r\nx\r\ndone\r\n$/)
})

test('tty: an epoll waiter that holds the terminal gets its end (a later reader gets its own); a task named with bytes that are not UTF-8, a splice and a poll restarted after a stop are still seen; a cbreak reader gets nothing', async (t) => {
  // Node waited in epoll without reading: the look could not tell (two epoll queries, then
  // unknown), typed one ^D the sampled way and stopped looking, so the second cat waited.
  await endsOnItsOwn(t, '/bin/sh', ['-c', `cat; echo A; ${process.execPath} -e 'setTimeout(() => {}, 300)'; cat; echo B; cat; echo C`], 'x\n', /A\r\nB\r\nC\r\n$/)
  // A name cut inside a UTF-8 character made /proc/PID/stat unreadable as text: every look unknown.
  await endsOnItsOwn(t, '/usr/bin/python3', ['-c', "import ctypes, os\nctypes.CDLL(None).prctl(15, b'\\xc3', 0, 0, 0)\nfor i in range(3): print(repr(os.read(0, 10)))"], 'x\n', /b'x\\n'\r\nb''\r\nb''\r\n$/)
  // A splice from the terminal waited for its timeout: splice was not a read.
  await endsOnItsOwn(t, '/usr/bin/python3', ['-c', 'import os\nr, w = os.pipe()\nwhile (n := os.splice(0, w, 4096)) > 0: os.read(r, n)\nprint("spliced to the end")'], 'ab\n', /spliced to the end\r\n$/)
  // A program reading key by key without readline (cbreak: `read -n1`) got ^D, a byte of its
  // data to it, every 160 ms (and a carriage return for the line left open).
  const keys = await runIsolated('/bin/bash', ['-c', 'while read -n1 c; do printf "[%q]" "$c"; done; echo END'], { tty: true, input: 'ab', timeoutMs: 1500 })
  t.is(keys.reason, 'timeout', 'it waits for keys, as in raw mode')
  t.regex(keys.stdout, /\[a\]\[b\]$/, 'the keys, nothing typed after them')
  t.notRegex(keys.stdout, /004|\x04|\[\$'\\r'\]/, 'no ^D, no carriage return')
  // After SIGSTOP and SIGCONT a poll shows as restart_syscall.
  const sb = await spawnIsolated('/usr/bin/python3', ['-c', 'import os, select\np = select.poll()\np.register(0, select.POLLIN)\nprint("polling", flush=True)\np.poll()\nprint(repr(os.read(0, 10)))'], { tty: true, timeoutMs: 20_000 })
  let out = ''
  sb.stdout!.on('data', (d) => (out += d))
  t.true(await waitUntil(() => out.includes('polling'), 10_000), out)
  await new Promise((r) => setTimeout(r, 100))
  sb.kill('SIGSTOP')
  await new Promise((r) => setTimeout(r, 100))
  sb.kill('SIGCONT')
  await new Promise((r) => setTimeout(r, 100))
  sb.stdin!.end()
  const [restarted] = await Promise.all([sb.wait(), ended(sb.stdout)])
  t.is(restarted.reason, 'exited', out)
  t.regex(out, /b''\r\n$/)
})

test('tty: the end of input is not typed to a stopped reader, reaches a reader whose thread group lost its leader, node and each readline prompt in turn; a sandbox that makes its epoll set huge still ends at its timeout', async (t) => {
  t.timeout(90_000)
  // A reader stopped in read (SIGSTOP, or SIGTTIN for a background job) counted as waiting: the
  // ^D typed for it stayed queued, and a program that went raw later read it as a NUL.
  const lateRaw = 'import tty, os, time, select\ntime.sleep(0.5)\ntty.setraw(0, tty.TCSANOW)\nr, _, _ = select.select([0], [], [], 0.5)\nprint(repr(os.read(0, 100)) if r else "nothing typed")'
  const sb = await spawnIsolated('/bin/sh', ['-c', `(exec cat 0</dev/tty >/dev/null) & sleep 0.2; kill -STOP $!; echo stopped; python3 -c '${lateRaw}'; kill -9 $!`], { tty: true, timeoutMs: 20_000 })
  let out = ''
  sb.stdout!.on('data', (d) => {
    out += d
    // The input ends once the reader is stopped in its read.
    if (out.includes('stopped')) sb.stdin!.end()
  })
  const [stopped] = await Promise.all([sb.wait(), ended(sb.stdout)])
  t.is(stopped.reason, 'exited', out)
  t.regex(out, /nothing typed\n$/, 'no NUL for the program that went raw after the stopped reader')
  // A thread group whose leader has exited has no descriptors at the process's path: the
  // reading thread's own were not looked at, and it waited for its timeout.
  const leaderGone = 'import threading, os, time, ctypes\ndef reader():\n  time.sleep(0.2)\n  n = 0\n  while True:\n    b = os.read(0, 100)\n    if not b: break\n    n += len(b)\n  os.write(1, b"read %d\\n" % n)\n  os._exit(0)\nthreading.Thread(target=reader).start()\nctypes.CDLL(None).pthread_exit(None)'
  await endsOnItsOwn(t, '/usr/bin/python3', ['-c', leaderGone], 'hello\n', /read 6\r\n$/)
  // Node reopens its terminal (libuv) and waits in epoll on that descriptor.
  await endsOnItsOwn(t, process.execPath, ['-e', "let n = 0; process.stdin.on('data', (d) => (n += d.length)); process.stdin.on('end', () => console.log('end', n))"], 'hello\n', /end 6\r\n$/)
  // Readline heard one ^D only: a shell after the python it ran, and a last line without its
  // newline (readline takes ^D on a line as a key) waited for their timeouts.
  await endsOnItsOwn(t, '/bin/bash', ['--norc', '-i'], 'python3 -q\nprint(6 * 7)\n', /\r\n42\r\n[^]*exit\r\n$/)
  await endsOnItsOwn(t, '/usr/bin/python3', ['-q', '-i'], 'print(6 * 7)', /\r\n42\r\n/)
  // 500000 entries in one epoll set, threads waiting on it: a look read each thread's epoll
  // fdinfo, which the kernel formats whole (~0.9 s each), and the helper's loop, which also
  // enforces the timeout, ended the sandbox after 14.6 s instead of 5 with 20 threads (here 40).
  // (kcmp, tried next, walks the set under a mutex the sandbox can hold: no query goes into an
  // epoll set now.)
  const huge = 'import os, select, resource, threading\nsoft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\nresource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))\nep = select.epoll()\nfor f in range(100):\n  e = os.eventfd(0)\n  for d in range(5000): ep.register(os.dup2(e, 1000 + d), select.EPOLLPRI)\n  for d in range(5000): os.close(1000 + d)\nprint("built", flush=True)\ndef wait():\n  while True: ep.poll()\nfor i in range(40): threading.Thread(target=wait, daemon=True).start()\nthreading.Event().wait()'
  const began = Date.now()
  const big = await runIsolated('/usr/bin/python3', ['-c', huge], { tty: true, input: '', timeoutMs: 5000 })
  const took = Date.now() - began
  t.is(big.reason, 'timeout', big.stdout)
  t.regex(big.stdout, /built/, 'the set was built before the timeout')
  t.true(took < 12_000, `ended ${took} ms after its start, with a timeout of 5000 ms`)
})

// Without a user namespace and with no seccomp filter, a kept CAP_SYS_PTRACE would be the host's
// and could make a userfaultfd that holds a read of the sandbox's memory: poll and select calls,
// which name their descriptors there, are not looked into, and the end is typed as where tasks
// cannot be seen (once what came before was read).
rootOnly('tty: a poll reader of a sandbox whose memory the helper does not read still hears the end of input', async (t) => {
  const code = 'import os, select\np = select.poll()\np.register(0, select.POLLIN)\np.poll()\nprint(repr(os.read(0, 100)))'
  const r = await runIsolated('/usr/bin/python3', ['-c', code], { tty: true, input: '', seccomp: 'none', namespaces: { user: false }, timeoutMs: 20_000 })
  t.is(r.reason, 'exited', r.stdout)
  t.is(r.stdout, "b''\r\n")
})

test('tty: an ended sandbox does not wait on a caller that stops reading its terminal, and a slow exec reader gets all of it', async (t) => {
  // A one-shot tty sandbox whose output was not read ignored its timeout, cancel() and kill().
  t.timeout(90_000)
  const within = <T>(p: Promise<T>, ms: number) => Promise.race([p, new Promise<'hung'>((r) => setTimeout(() => r('hung'), ms).unref())])
  const a = await spawnIsolated('/usr/bin/seq', ['1', '40000'], { tty: true, timeoutMs: 500 })
  t.not(await within(a.wait(), 30_000), 'hung', 'timeoutMs')
  a.stdout?.destroy()
  const b = await spawnIsolated('/usr/bin/seq', ['1', '40000'], { tty: true, timeoutMs: 60_000 })
  await new Promise((r) => setTimeout(r, 300))
  b.cancel()
  t.not(await within(b.wait(), 30_000), 'hung', 'cancel()')
  b.stdout?.destroy()
  // An exec's terminal output was cut 200 ms after its end while the caller had not read it.
  const box = await createSandbox()
  t.teardown(() => box.destroy())
  const sb = await box.spawn('/usr/bin/seq', ['1', '20000'], { tty: true, timeoutMs: 20_000 })
  sb.stdout!.pause()
  await new Promise((r) => setTimeout(r, 700))
  let out = ''
  sb.stdout!.on('data', (d) => (out += d))
  sb.stdout!.resume()
  t.is((await sb.wait()).reason, 'exited')
  await ended(sb.stdout)
  t.is(out.length, 128894, 'every line of seq 1 20000, with \r\n')
})

test.serial("a sandbox that keeps its memory's lock contended does not hold the helper's look at its terminal past its timeoutMs", async (t) => {
  const dir = tempDir('isolate-mmap-lock-')
  t.teardown(() => removeDir(dir))
  // The sandbox's root is no host root: it may enter and run what is there, not write it.
  chmodSync(dir, 0o755)
  try {
    await promisify(execFile)('gcc', ['-O1', '-pthread', '-o', join(dir, 'hold'), join(root, '__test__', 'fixtures', 'hold-mmap-lock.c')])
  } catch (e) {
    console.log(`tty.test: no C compiler here (${(e as Error).message}): the mmap-lock test runs on the host`)
    return t.pass()
  }
  // 64 GiB populated from the zero page: each pass holds the lock for about 2.7 s here, and a
  // look at a task in poll reads its memory. Before, the helper's read waited for the lock with
  // the deadline unenforced: the sandbox ended about 1.5 s late.
  const r = await runIsolated('/j/hold', ['64'], { tty: true, input: '', timeoutMs: 1500, mounts: [{ type: 'bind', source: dir, target: '/j' }] })
  // Its timeout ends it, unless it was told the end of input first (where the helper reads no
  // memory at all, as rootless, the relay's fallback types it: the poll then returns and it exits).
  t.true(r.reason === 'timeout' || (r.reason === 'exited' && r.exitCode === 0), `${r.reason} ${r.exitCode} ${r.stderr}`)
  t.true(r.durationMs < 2600, `ended ${Math.round(r.durationMs)} ms after the start, for a timeout of 1500 ms`)
})
