#!/usr/bin/env node
/**
 * The `isolate` command: `isolate run`, `isolate create`/`exec`/`ps`/`rm`, `isolate doctor`,
 * `isolate rootfs unpack`.
 *
 * Arguments are parsed with `node:util` `parseArgs` only. Exit codes follow the conventions of
 * `timeout(1)`, `env(1)` and container runtimes: the command's own code; 128+N when the command was
 * killed by signal N; 124 when the wall-clock limit ended it; 127 when the command was not found
 * inside, 126 when it was found but could not be run (env(1)'s and docker's); 125 when the sandbox
 * could not be set up otherwise or the command line of `isolate` itself is wrong.
 *
 * `isolate run` never touches `process.stdin` (but with -t): the sandboxed command inherits fd 0
 * as it is, and a Node stream on it would steal the input the command is meant to read.
 * `isolate exec` has no fd to hand over (the command runs under a keeper process, see
 * lib/keeper.ts), so it relays its stdin over the keeper's socket instead.
 */
import { existsSync, readFileSync } from 'node:fs'
import { constants } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import type { Socket } from 'node:net'
import { configurePool, IsolateError, importImage, probe, spawnIsolated, unpackRootfs, type ExecProcess, type HostProbe, type Limits, type MountOption, type Sandbox, type SandboxOptions, type SandboxResult, type SpawnOptions, type Stop, type UnpackProgress } from './index.js'
import { nearest } from './lib/errors.js'
import { encodeFrame, Frame, jsonFrame, onFrames, STDIN_WINDOW } from './lib/frames.js'
import { connectKeeper, DESTROYED, errorFromJSON, killAllIn, removeSandbox, runKeeper, startKeeper, type ExecRequest } from './lib/keeper.js'
import { loadNative } from './lib/native.js'
import { DEFAULT_PATH } from './lib/options.js'
import { signalNumber, type SignalName } from './lib/sandbox.js'
import { cgroupLimitsHere, NAMESPACE_OWNER_IDS, ROOTS_OWN_UIDS, unseenAccountSources } from './lib/probe.js'
import { EndedError, ensureRuntimeDir, existingRuntimeDir, findSandbox, forgetEnded, ID_RE, listSandboxes, NAME_RE, NotFoundError, PREFIX_RE, RegistryError, type SandboxEntry } from './lib/registry.js'

const EXIT_TIMEOUT = 124
const EXIT_SETUP = 125

/** A mistake on the command line of `isolate` itself (exit 125). */
class UsageError extends Error {
  constructor(
    message: string,
    /** Printed after the message: the usage, or where to find it. */
    readonly help?: string,
  ) {
    super(message)
    this.name = 'UsageError'
  }
}

// ---------------------------------------------------------------------------------------------
// Help texts

const MAIN_HELP = `Usage: isolate <command> [options]

Run commands in lightweight Linux sandboxes (namespaces, cgroups, seccomp, Landlock, pivot_root).

Commands:
  run [options] -- CMD [ARGS...]   run CMD in a new sandbox
  create [options]                 make a sandbox that stays, and print its ID
  exec [options] ID -- CMD [ARGS...]
                                   run CMD inside the sandbox ID (made by create)
  ps [--json]                      list the sandboxes made by create that still run
  kill-all ID...                   kill every process in those sandboxes; they stay for exec
  rm [-f] ID...                    end those sandboxes and everything in them
  doctor [--json]                  show what this host allows, and how to fix what it does not
  rootfs unpack TARBALL DIR        unpack a root filesystem tarball (.tar, .tar.gz, .tar.xz, .tar.zst)
  rootfs import IMAGE DIR          turn an OCI image layout or a docker save archive into a rootfs
  help [COMMAND]                   show help for a command

Options:
  -h, --help      show this help
  -V, --version   print the version

Exit codes of 'isolate run': the command's own exit code; 128+N when it was killed by signal N;
124 when --timeout ended it; 137 when --output cut its output; 127 when the command was not found
inside, 126 when it could not be run (not executable); 125 when the sandbox could not be set up
otherwise or the isolate command line is wrong.
`

const RUN_HELP = `Usage: isolate run [options] -- CMD [ARGS...]

Run CMD in a new sandbox: all namespaces new (user, mount, pid, uts, ipc, net, cgroup), the host's
system directories read-only on a fresh root, a fresh /proc, a minimal /dev, no network but
loopback, no capabilities, and no host environment variables. Options end at '--' or at the first
argument that is not an option, so 'isolate run ls -l /' also works.

Filesystem:
  --rootfs DIR|host        the root filesystem: 'host' (default; the host's system directories
                           read-only) or a directory holding an unpacked root filesystem
  --overlay                a copy-on-write layer over the root, thrown away at the end
  --bind SRC[:DST][:ro|:rw]
                           bind-mount host path SRC at DST inside (default: the same path);
                           read-only unless ':rw' is given; repeatable. Files keep their
                           host owner and mode: as root, the sandbox runs as host ids of its
                           own ('isolate doctor' names them), which must be let in (chown, chmod)
  --tmpfs DST[:SIZE]       mount a fresh tmpfs at DST, SIZE like 64M, 1G, 512K or bytes; repeatable
                           (in --bind and --tmpfs, write a path's ':' as '\\:', and a '\\' of
                           one that comes before a ':' as '\\\\')

Process:
  -e, --env K=V            set a variable; repeatable. With any -e the command's environment is
                           exactly these, plus the default PATH unless PATH is given.
                           '-e K' copies K from isolate's own environment. Without -e the
                           environment is only the default PATH:
                           ${DEFAULT_PATH}
  --cwd DIR                working directory inside (default /)
  --uid N, --gid N         user and group ids inside (default 0, mapped to an unprivileged host id;
                           a missing one defaults to 0)
  --hostname H             the sandbox's hostname (default 'sandbox')
  --net none|host          'none' (default): own network namespace with only loopback;
                           'host': the host's network (and, with --rootfs DIR, the host's
                           /etc/resolv.conf, read-only, where DIR has one or --overlay)
  -t, --tty                give the command a terminal of its own (inside the sandbox), sized
                           as this one and following its resizes; Ctrl-C reaches the command
  -i, --interactive        accepted for docker-style -it (stdin is always passed)

Limits (durations with a unit: 500ms, 5s, 2m, 1h; sizes like 64M, 1G, 512K or bytes):
  --timeout DURATION       wall-clock limit, from the command's start; the whole sandbox is
                           killed and isolate exits 124
  --grace DURATION         at --timeout, send the command SIGTERM first and kill the sandbox
                           only after DURATION (at once if it ends before; still exit 124)
  --stop-signal SIG        that signal instead of SIGTERM (with --grace), e.g. SIGINT
  --stop-group             send it to the command's whole process group (with --grace): what a
                           shell started too
  --memory SIZE            memory limit, swap off (the sandbox's cgroup; reason oom)
  --pids N|unlimited       process/thread limit    (the sandbox's cgroup; without it 2048,
                           counted in the sandbox's user namespace, see isolate doctor)
  --cpus N                 CPU share, e.g. 0.5     (the sandbox's cgroup)
  --cpu-time DURATION      CPU time of the whole sandbox (reason cpu-time)
  --output SIZE            stdout + stderr bound   (reason output-limit; an ignored one is not counted)
  --stack SIZE             the command's stack limit (RLIMIT_STACK), e.g. 256M for deep recursion
  A limit given that cannot be enforced makes isolate fail with exit 125; it is never dropped silently.
  Only the process bound has a default (2048 per uid inside, where isolate doctor says it holds;
  --pids N or unlimited replace it): for code you do not trust, set at least --timeout and
  --memory too (without --memory a sandbox may use all the memory the host grants), and --pids
  where isolate doctor shows no default.

Output:
  --json                   after the command ends, print one JSON object on stdout:
                           {command, exitCode, signal, reason, durationMs, pid, usage: {cpuUserMs,
                           cpuSystemMs, peakMemoryBytes, wallMs, and with --pids pidsLimitHits:
                           the forks it refused}}, or {error} when the
                           sandbox could not be set up or the options were wrong (every
                           command's --json does so). The command's own stdout and stderr
                           then go to isolate's stderr, so stdout holds only that JSON.
                           Without --json the command's stdin, stdout and stderr are isolate's own.
  -h, --help               show this help

SIGINT, SIGTERM and SIGHUP received by isolate are forwarded to the command, each followed by
SIGCONT (a stopped command gets it too). A command that ignores them cannot keep isolate running:
a second SIGTERM, or a third SIGINT within 2 s, kills the sandbox (SIGKILL). Where nobody reads
isolate's output any more, the command gets SIGPIPE (and with -t, SIGKILL 1 s later).

Exit codes: the command's own exit code; 128+N when it was killed by signal N; 124 when --timeout
ended it; 137 (128+SIGKILL) when --output cut its output, even if it had ended by then; 127 when
the command was not found inside, 126 when it was found but could not be run (execve ENOENT,
EACCES: as env(1) and docker); 125 when the sandbox could not be set up otherwise or these
options are wrong (the failing setup step, path, errno and a hint are printed on stderr).
`

const CREATE_HELP = `Usage: isolate create [options]

Make a sandbox that stays after isolate exits, and print its ID (one line on stdout). Commands
run in it with 'isolate exec ID -- CMD'; files they write and processes they leave running are
still there for the next one. It lasts until 'isolate rm ID', or until --timeout ends it. A small
keeper process holds it (one per sandbox, detached from this terminal); if the keeper is killed,
the sandbox ends with it.

Options: those of 'isolate run' that make the sandbox (see 'isolate run --help'):
  --rootfs DIR|host, --overlay, --bind SRC[:DST][:ro|:rw], --tmpfs DST[:SIZE], --hostname H,
  --net none|host, -e/--env K=V (every exec's environment, to which exec's own -e add),
  --cwd DIR (every exec's default), --uid N, --gid N,
  --timeout DURATION (how long the sandbox may live), --memory SIZE, --pids N|unlimited, --cpus N,
  --cpu-time DURATION (for everything in it, together), --stack SIZE
  --grace DURATION         at rm and --timeout, send every process in it SIGTERM first and end
                           the sandbox only after DURATION (sooner, once none is left)
  --stop-signal SIG        that signal instead of SIGTERM (with --grace), e.g. SIGINT
  --name NAME              a name to use instead of the ID (letters, digits, '_', '.', '-';
                           not hex digits alone, which exec and rm take for the start of an ID)
  -h, --help               show this help

Sandboxes are registered in $ISOLATE_RUNTIME_DIR, else /run/isolate for root, else
$XDG_RUNTIME_DIR/isolate, else /tmp/isolate-<uid> (mode 0700; one socket and one .json each).

Exit codes: 0 and the ID on stdout; 125 when the sandbox could not be set up (the failing step,
path, errno and a hint are printed on stderr) or these options are wrong.
`

const EXEC_HELP = `Usage: isolate exec [options] ID [--] CMD [ARGS...]

Run CMD inside the sandbox ID (or NAME, or the start of an ID that only one ID has) made by
'isolate create': same root, files, processes, network and limits as every other command there.
Options come before ID. isolate's stdin goes to the command (its end too), the command's stdout
and stderr to isolate's own, kept apart.

Options:
  -t, --tty                give the command a terminal of the sandbox's own, sized as this one
                           and following its resizes (this terminal is in raw mode meanwhile)
  -i, --interactive        accepted for docker-style -it (stdin is always passed)
  -e, --env K=V            set a variable over the sandbox's environment; repeatable;
                           '-e K' copies K from isolate's own environment
  --cwd DIR                working directory inside (default: the sandbox's)
  --timeout DURATION       wall-clock limit for this command; isolate then exits 124
  --grace DURATION         at --timeout, send the command SIGTERM first and kill its process
                           group only after DURATION (at once if it ends before; still exit 124)
  --stop-signal SIG        that signal instead of SIGTERM (with --grace), e.g. SIGINT
  --stop-group             send it to the command's whole process group (with --grace)
  --json                   after the command ends, print one JSON object on stdout: {command,
                           exitCode, signal, reason (exited, signaled, timeout, oom, cpu-time,
                           canceled), durationMs, usage (absent when the sandbox's end cut it)},
                           or {error} when it could not be started; the command's stdout and
                           stderr then go to isolate's stderr
  -h, --help               show this help

SIGINT, SIGTERM and SIGHUP received by isolate are forwarded to the command, each followed by
SIGCONT (a stopped command gets it too); a second SIGTERM, or a third SIGINT within 2 s, kills
the command and its process group (SIGKILL), as --timeout does. Where nobody reads isolate's
output any more, the command gets SIGPIPE, and that kill 1 s later. If isolate itself dies, the
command and its process group are killed (what it started in the background, in a group of its
own, stays).

Exit codes: the command's own exit code; 128+N when it was killed by signal N; 124 when --timeout
ended it; 127 when the command was not found inside, 126 when it could not be run; 125 when
there is no such sandbox (any more), the command could not be started otherwise (the step, path,
errno and a hint are printed on stderr), or these options are wrong.
`

const PS_HELP = `Usage: isolate ps [--json]

List the sandboxes made by 'isolate create' that still run: ID, name, the host pid of its init,
when it was made, and its root filesystem. Entries whose keeper is gone (killed) are removed.

Options:
  --json       print them as a JSON array of {id, name, pid, keeperPid, created, rootfs, summary}
  -h, --help   show this help
`

const KILL_ALL_HELP = `Usage: isolate kill-all ID...

Kill every process in each sandbox ID (or NAME, or an ID's start) made by 'isolate create', but
its init: what 'isolate exec' ran and what that left running, a fork bomb too. The sandbox
stays, with its files, mounts and limits, and takes new 'isolate exec' commands. Prints each ID
once its processes are gone. An 'isolate exec' running in it ends as killed (exit code 137).

Options:
  -h, --help   show this help

Exit codes: 0 when every sandbox's processes were killed; 125 when one of them does not exist or
has ended, or these options are wrong.
`

const RM_HELP = `Usage: isolate rm [-f] ID...

End each sandbox ID (or NAME, or an ID's start) made by 'isolate create': every process in it
is killed, its mounts and files are gone, and its keeper has exited when isolate returns. Prints
each ID. A sandbox that has ended already (its --timeout) is gone as asked: its record of that
end goes, and its ID is printed too.

Options:
  -f, --force  an ID that does not exist (or has already ended) is not an error, and a keeper
               that has not ended its sandbox within 2 s (stopped, stuck) is killed, which
               ends the sandbox with it (without -f, rm waits 30 s for it, then fails)
  -h, --help   show this help

Exit codes: 0 when every sandbox was removed; 125 when one of them does not exist (without -f),
or these options are wrong.
`

const DOCTOR_HELP = `Usage: isolate doctor [--json]

Show what this host allows for sandboxes: kernel, user namespaces, cgroups, OverlayFS, Landlock,
seccomp, and where the native parts were loaded from. Each problem is followed by how to fix it.

Options:
  --json       print the probe result as one JSON object
  -h, --help   show this help

Exit code: 0 when sandboxes can run (user namespaces are allowed and, for root, unprivileged host ids are free), 1 otherwise.
`

const ROOTFS_HELP = `Usage: isolate rootfs unpack [options] TARBALL DIR
       isolate rootfs import [options] IMAGE DIR

unpack: unpack a root filesystem tarball (for example an Alpine minirootfs) into DIR, for use with
'isolate run --rootfs DIR'. Plain tar and tar compressed with gzip, xz or zstd are recognised by
their content, whatever the file is called. DIR is created if missing; it is never /. An
existing DIR (the caller's, writable by no one else) is unpacked over, as tar would: files of
the same name are replaced, others stay (rootfs import wants a new or empty DIR).

import: turn an OCI image layout directory (oci-layout, index.json, blobs/) or a 'docker save'
archive (optionally gzip/xz/zstd-compressed) into a root filesystem in DIR (new or empty). Layers
are applied in order with their whiteouts, and every digest the image gives is checked first.

Modes (but setuid/setgid bits of files, always dropped), symlinks, hard links and mtimes are
kept. Where the archive has an etc directory without resolv.conf, an empty one is added (as a
container engine's init layer has): 'isolate run --net host' binds the host's there. As root,
files get the uid/gid numbers of the archive; otherwise they belong to you, which is how a
rootless sandbox sees them (you are root inside). An archive that tries to write outside DIR
(absolute names, '..', writing through a symlink, hard links out) or holds device nodes or fifos
is refused, naming the entry.

Options:
  --progress            show progress on stderr even when it is not a terminal
  --skip-special        skip device nodes and fifos instead of refusing the archive
  --max-size SIZE       refuse an archive that would write more file content than this (64M,
                        2G; runs of zeros count at their size); default: no bound but the disk's
  --max-entries N       refuse an archive of more entries than this, the directories its paths
                        imply counted too (default: no bound)
  --json                print the result as one JSON object on stdout
  -h, --help            show this help
import only:
  --platform OS/ARCH[/VARIANT]
                        the image for this platform (default: this host's, e.g. linux/amd64)
  --ref NAME            the image with this name (ref.name annotation or docker tag), when the
                        layout or archive holds several
  --layers              keep one directory per layer, DIR/layers/<n>/ (0 = bottom), in overlayfs
                        form (whiteouts as char 0/0 devices, opaque directories marked with
                        user.overlay.opaque), and write DIR/layers.json listing them in lowerdir=
                        order, instead of merging them into DIR

Exit codes: 0 done; 1 the archive or image was refused or could not be unpacked (the step, the
entry and a hint are printed on stderr); 125 the command line is wrong.
`

/** What a usage error of a subcommand ends with: a pointer to its help, not the whole text. */
const MORE = {
  run: "Run 'isolate run --help' for the options.\n",
  doctor: "Run 'isolate doctor --help' for the options.\n",
  rootfs: "Run 'isolate rootfs --help' for the options.\n",
  create: "Run 'isolate create --help' for the options.\n",
  exec: "Run 'isolate exec --help' for the options.\n",
  ps: "Run 'isolate ps --help' for the options.\n",
  rm: "Run 'isolate rm --help' for the options.\n",
  'kill-all': "Run 'isolate kill-all --help' for the options.\n",
}

// ---------------------------------------------------------------------------------------------
// Value parsers

/** `500ms`, `5s`, `2m`, `1h`: a positive whole number of milliseconds. A bare number is refused:
 * `timeout 5` means seconds, and read as milliseconds it ended every command at once. */
function parseDuration(flag: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/i.exec(text.trim())
  if (!m) throw new UsageError(`${flag}: invalid duration ${JSON.stringify(text)}; use e.g. 500ms, 5s, 2m or 1h`)
  if (m[2] === undefined) throw new UsageError(`${flag}: ${JSON.stringify(text)} needs a unit: ${m[1]}s for seconds, ${m[1]}ms for milliseconds`)
  const scale = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2].toLowerCase() as 'ms' | 's' | 'm' | 'h']
  const ms = Math.round(Number(m[1]) * scale)
  if (!(ms > 0)) throw new UsageError(`${flag}: the duration must be at least 1ms, got ${JSON.stringify(text)}`)
  if (!Number.isSafeInteger(ms)) throw new UsageError(`${flag}: the duration is too long (at most ${Number.MAX_SAFE_INTEGER} ms), got ${JSON.stringify(text)}`)
  return ms
}

/** `64M`, `1G`, `512K` (powers of 1024; `MB`/`MiB` spellings too), or plain bytes. */
function parseSize(flag: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$/i.exec(text.trim())
  if (!m) throw new UsageError(`${flag}: invalid size ${JSON.stringify(text)}; use e.g. 64M, 1G, 512K or plain bytes`)
  const power = ['', 'k', 'm', 'g', 't'].indexOf(m[2].toLowerCase())
  const bytes = Math.floor(Number(m[1]) * 1024 ** power)
  if (!(bytes > 0)) throw new UsageError(`${flag}: the size must be at least 1 byte, got ${JSON.stringify(text)}`)
  if (!Number.isSafeInteger(bytes)) throw new UsageError(`${flag}: the size is too large (at most ${Number.MAX_SAFE_INTEGER} bytes), got ${JSON.stringify(text)}`)
  return bytes
}

function parseUint(flag: string, text: string, { positive = false } = {}): number {
  if (!/^\d+$/.test(text.trim())) throw new UsageError(`${flag}: expected a whole number, got ${JSON.stringify(text)}`)
  const n = Number(text.trim())
  if (!Number.isSafeInteger(n) || (positive && n === 0)) throw new UsageError(`${flag}: expected a ${positive ? 'positive ' : ''}whole number, got ${JSON.stringify(text)}`)
  return n
}

function parsePids(text: string): number {
  if (text.trim() === 'unlimited') return Infinity
  try {
    return parseUint('--pids', text, { positive: true })
  } catch {
    throw new UsageError(`--pids: expected a positive whole number or unlimited, got ${JSON.stringify(text)}`)
  }
}

function parseCpus(text: string): number {
  const n = Number(text.trim())
  if (!/^\d*\.?\d+$/.test(text.trim()) || !(n > 0)) throw new UsageError(`--cpus: expected a positive number such as 0.5 or 2, got ${JSON.stringify(text)}`)
  return n
}

/** `text` split at each ':' that no backslash escapes. Backslashes matter only before a ':' (as
 * Windows reads them before a quote): there each pair is one backslash of the path, and one left
 * over makes the ':' the path's; anywhere else a backslash is itself, as paths written before
 * this had them. `a\:b` is the path `a:b`; `a\\:b` the path `a\` and then `b`. */
function splitColons(text: string): string[] {
  const parts = ['']
  for (let i = 0; i < text.length; i++) {
    let run = 0
    while (text[i + run] === '\\') run++
    if (run > 0 && text[i + run] === ':') {
      parts[parts.length - 1] += '\\'.repeat(run >> 1)
      i += run
      if (run % 2) parts[parts.length - 1] += ':'
      else parts.push('')
    } else if (run > 0) {
      parts[parts.length - 1] += '\\'.repeat(run)
      i += run - 1
    } else if (text[i] === ':') parts.push('')
    else parts[parts.length - 1] += text[i]
  }
  return parts
}

/** `SRC[:DST][:ro|:rw]`; DST defaults to the absolute form of SRC. */
function parseBind(text: string): MountOption {
  const parts = splitColons(text)
  let readonly = true
  if (parts.length > 1 && (parts[parts.length - 1] === 'ro' || parts[parts.length - 1] === 'rw')) readonly = parts.pop() === 'ro'
  if (parts.length === 3 && (parts[2] === 'ro' || parts[2] === 'rw')) throw new UsageError(`--bind: ${JSON.stringify(text)} gives two modes; use SRC:DST[:ro|:rw], and '\\:' for a ':' in a path`)
  if (parts.length === 3 && !parts[2].includes('/')) throw new UsageError(`--bind: ${JSON.stringify(text)} ends in the mode ${JSON.stringify(parts[2])}, which is neither ro nor rw; use SRC:DST[:ro|:rw], and '\\:' for a ':' in a path`)
  if (parts.length > 2) throw new UsageError(`--bind: ${JSON.stringify(text)} has too many ':'; use SRC:DST[:ro|:rw], and '\\:' for a ':' in a path`)
  const [source, target = resolve(parts[0])] = parts
  if (!source) throw new UsageError(`--bind: ${JSON.stringify(text)} has no source; use SRC:DST[:ro|:rw]`)
  if (!target.startsWith('/')) throw new UsageError(`--bind: the target ${JSON.stringify(target)} must be an absolute path inside the sandbox`)
  return { type: 'bind', source, target, readonly }
}

/** `-e K=V` sets K; `-e K` copies K from our own environment (when it is set there). */
function parseEnv(list: string[]): Record<string, string> {
  const env: Record<string, string> = {}
  for (const kv of list) {
    const eq = kv.indexOf('=')
    const key = eq < 0 ? kv : kv.slice(0, eq)
    if (!key) throw new UsageError(`--env: ${JSON.stringify(kv)} has no name; use K=V`)
    if (eq >= 0) env[key] = kv.slice(eq + 1)
    else if (process.env[key] !== undefined) env[key] = process.env[key]
  }
  return env
}

/** `DST[:SIZE]`. */
function parseTmpfs(text: string): MountOption {
  const [target, size, ...more] = splitColons(text)
  if (more.length) throw new UsageError(`--tmpfs: ${JSON.stringify(text)} has too many ':'; use DST[:SIZE], and '\\:' for a ':' in DST`)
  if (!target.startsWith('/')) throw new UsageError(`--tmpfs: the target ${JSON.stringify(target)} must be an absolute path inside the sandbox`)
  return size === undefined ? { type: 'tmpfs', target } : { type: 'tmpfs', target, sizeBytes: parseSize('--tmpfs', size) }
}

// ---------------------------------------------------------------------------------------------
// isolate run

/** The flags that describe a sandbox, for run and for create. */
const SANDBOX_FLAGS = {
  rootfs: { type: 'string' },
  overlay: { type: 'boolean' },
  bind: { type: 'string', multiple: true },
  tmpfs: { type: 'string', multiple: true },
  hostname: { type: 'string' },
  net: { type: 'string' },
  timeout: { type: 'string' },
  env: { type: 'string', short: 'e', multiple: true },
  cwd: { type: 'string' },
  uid: { type: 'string' },
  gid: { type: 'string' },
  memory: { type: 'string' },
  pids: { type: 'string' },
  cpus: { type: 'string' },
  'cpu-time': { type: 'string' },
  stack: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const

/** A graceful stop at --timeout (run and exec). */
const STOP_FLAGS = {
  grace: { type: 'string' },
  'stop-signal': { type: 'string' },
  'stop-group': { type: 'boolean' },
} as const

const RUN_OPTIONS = {
  ...SANDBOX_FLAGS,
  json: { type: 'boolean' },
  tty: { type: 'boolean', short: 't' },
  interactive: { type: 'boolean', short: 'i' },
  output: { type: 'string' },
  ...STOP_FLAGS,
} as const

/** Library option names back to the flags that set them, for error messages. */
const FLAG_OF: Record<string, string> = {
  rootfs: '--rootfs',
  overlay: '--overlay',
  hostname: '--hostname',
  network: '--net',
  env: '--env',
  cwd: '--cwd',
  user: '--uid/--gid',
  tty: '--tty',
  'limits.timeoutMs': '--timeout',
  'limits.memoryBytes': '--memory',
  'limits.pids': '--pids',
  'limits.cpus': '--cpus',
  'limits.cpuTimeMs': '--cpu-time',
  'limits.outputBytes': '--output',
  'limits.stackBytes': '--stack',
  stop: '--grace',
  'stop.graceMs': '--grace',
  'stop.signal': '--stop-signal',
  'stop.group': '--stop-group',
}

interface RunPlan {
  file: string
  args: string[]
  options: SpawnOptions
  json: boolean
  tty: boolean
  /** `mounts[i]` → the flag that made it. */
  mountFlags: string[]
}

/** Which commands take which options, to tell an option given to the wrong command. */
type OptionTable = Record<string, { type: string; short?: string }>
const optionsOf = (): Record<string, OptionTable> => ({
  run: RUN_OPTIONS,
  create: CREATE_OPTIONS,
  exec: EXEC_OPTIONS,
  'rootfs unpack/import': ROOTFS_OPTIONS,
  'ps/doctor': { json: { type: 'boolean' } },
  rm: { force: { type: 'boolean', short: 'f' } },
})

function parseParsed<T>(fn: () => T, command: keyof typeof MORE): T {
  try {
    return fn()
  } catch (e) {
    const code = (e as { code?: string }).code
    if (!code?.startsWith('ERR_PARSE_ARGS')) throw e
    const unknown = code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && /^Unknown option '([^']+)'/.exec((e as Error).message)?.[1]
    if (!unknown) throw new UsageError((e as Error).message, MORE[command])
    // parseArgs's own text goes on about positional arguments, which is no help here.
    const name = unknown.replace(/^--?/, '').replace(/=.*$/, '')
    const takes = (options: OptionTable) => (unknown.startsWith('--') ? name in options : Object.values(options).some((o) => o.short === name))
    const tables = optionsOf()
    const owners = Object.keys(tables).filter((c) => takes(tables[c]) && !c.split(/[ /]/).includes(command))
    const listed = owners.map((c) => `'isolate ${c}'`)
    const elsewhere = listed.length > 0 ? ` (${unknown} is an option of ${listed.length > 1 ? `${listed.slice(0, -1).join(', ')} and ${listed.at(-1)}` : listed[0]})` : ''
    const own = command === 'ps' || command === 'doctor' ? tables['ps/doctor'] : command === 'rootfs' ? tables['rootfs unpack/import'] : tables[command]
    const near = unknown.startsWith('--') && !elsewhere ? nearest(name, Object.keys(own), 2) : undefined
    throw new UsageError(`${command}: unknown option '${unknown}'${elsewhere}${near ? ` (did you mean --${near}?)` : ''}`, MORE[command])
  }
}

/** Split `[options] [--] CMD ARGS...`: the options of isolate end at `--` or the first non-option. */
function splitCommand(argv: string[]): { optionArgs: string[]; command: string[] } {
  const { tokens } = parseParsed(() => parseArgs({ args: argv, options: RUN_OPTIONS, strict: false, allowPositionals: true, tokens: true }), 'run')
  const first = tokens.find((t) => t.kind === 'positional' || t.kind === 'option-terminator')
  if (!first) return { optionArgs: argv, command: [] }
  return { optionArgs: argv.slice(0, first.index), command: argv.slice(first.kind === 'option-terminator' ? first.index + 1 : first.index) }
}

/** The flags that make a sandbox, shared by `isolate run` and `isolate create`. */
interface SandboxFlags {
  rootfs?: string
  overlay?: boolean
  hostname?: string
  net?: string
  cwd?: string
  uid?: string
  gid?: string
  env?: string[]
  timeout?: string
  memory?: string
  pids?: string
  cpus?: string
  'cpu-time'?: string
  stack?: string
  output?: string
}

type ParsedToken = { kind: string; name?: string; value?: string }

/** The sandbox options those flags ask for; `mounts[i]` was made by `mountFlags[i]`. */
function sandboxOptions(values: SandboxFlags, tokens: ParsedToken[]): { options: SpawnOptions; mountFlags: string[] } {
  const options: SpawnOptions = {}
  if (values.rootfs !== undefined) options.rootfs = values.rootfs
  if (values.overlay) options.overlay = true
  if (values.hostname !== undefined) options.hostname = values.hostname
  if (values.net !== undefined) {
    if (values.net !== 'none' && values.net !== 'host') throw new UsageError(`--net: must be 'none' or 'host', got ${JSON.stringify(values.net)}`)
    options.network = values.net
  }
  if (values.cwd !== undefined) options.cwd = values.cwd
  if (values.uid !== undefined || values.gid !== undefined) {
    options.user = { uid: values.uid === undefined ? 0 : parseUint('--uid', values.uid), gid: values.gid === undefined ? 0 : parseUint('--gid', values.gid) }
  }

  // Mounts in command-line order, --bind and --tmpfs interleaved as written.
  const mounts: MountOption[] = []
  const mountFlags: string[] = []
  for (const t of tokens) {
    if (t.kind !== 'option' || (t.name !== 'bind' && t.name !== 'tmpfs') || t.value === undefined) continue
    mounts.push(t.name === 'bind' ? parseBind(t.value) : parseTmpfs(t.value))
    mountFlags.push(`--${t.name} ${t.value}`)
  }
  if (mounts.length > 0) options.mounts = mounts

  if (values.env !== undefined) {
    const env = parseEnv(values.env)
    if (env.PATH === undefined) env.PATH = DEFAULT_PATH
    options.env = env
  }

  const limits: Limits = {}
  if (values.timeout !== undefined) limits.timeoutMs = parseDuration('--timeout', values.timeout)
  if (values.memory !== undefined) limits.memoryBytes = parseSize('--memory', values.memory)
  if (values.pids !== undefined) limits.pids = parsePids(values.pids)
  if (values.cpus !== undefined) limits.cpus = parseCpus(values.cpus)
  if (values['cpu-time'] !== undefined) limits.cpuTimeMs = parseDuration('--cpu-time', values['cpu-time'])
  if (values.stack !== undefined) limits.stackBytes = parseSize('--stack', values.stack)
  if (values.output !== undefined) limits.outputBytes = parseSize('--output', values.output)
  if (Object.keys(limits).length > 0) options.limits = limits
  return { options, mountFlags }
}

/**
 * --grace, --stop-signal and --stop-group as a stop option; `what` is killed after the grace, which
 * follows --timeout (and, for a sandbox of isolate create, isolate rm: `atTimeoutOnly` false).
 */
function planStop(values: { timeout?: string; grace?: string; 'stop-signal'?: string; 'stop-group'?: boolean }, what: string, atTimeoutOnly = true): Stop | undefined {
  for (const flag of ['stop-signal', 'stop-group'] as const) {
    if (values[flag] !== undefined && values.grace === undefined) throw new UsageError(`--${flag} needs --grace: the time the command has after the signal before ${what} is killed`)
  }
  if (values.grace === undefined) return undefined
  if (atTimeoutOnly && values.timeout === undefined) throw new UsageError(`--grace needs --timeout: it is the time the command has after the timeout before ${what} is killed`)
  const sig = values['stop-signal']
  // As kill(1) and docker take it: SIGTERM, TERM or 15.
  const signal = sig === undefined ? undefined : /^\d+$/.test(sig) ? Number(sig) : ((sig.toUpperCase().startsWith('SIG') ? '' : 'SIG') + sig.toUpperCase()) as SignalName
  return { graceMs: parseDuration('--grace', values.grace), ...(signal !== undefined ? { signal } : {}), ...(values['stop-group'] ? { group: true } : {}) }
}

function planRun(argv: string[]): RunPlan | 'help' {
  const { optionArgs, command } = splitCommand(argv)
  const { values, tokens } = parseParsed(() => parseArgs({ args: optionArgs, options: RUN_OPTIONS, strict: true, allowPositionals: false, tokens: true }), 'run')
  if (values.help) return 'help'
  if (command.length === 0) throw new UsageError('run: no command given; use: isolate run [options] -- CMD [ARGS...]', MORE.run)
  const [file, ...args] = command
  const { options, mountFlags } = sandboxOptions(values, tokens)

  const stop = planStop(values, 'the sandbox')
  if (stop) options.stop = stop

  const json = values.json === true
  const tty = values.tty === true
  if (tty && json) throw new UsageError('-t and --json do not go together: a terminal\'s output cannot be kept apart from the result')
  if (tty) {
    // Relayed by us: the terminal is the sandbox's own, never ours.
    options.tty = { rows: process.stdout.rows || 24, cols: process.stdout.columns || 80 }
    options.stdio = ['pipe', 'pipe', 'pipe']
  } else {
    // With --json, stdout carries only the result; the command's output goes to our stderr (fd 2).
    options.stdio = json ? ['inherit', 2, 2] : ['inherit', 'inherit', 'inherit']
  }
  return { file, args, options, json, tty, mountFlags }
}

/** A result's signal name as a number (0 for one no name gives: `SIG32`). */
function signalNumberOr0(name: string): number {
  try {
    return signalNumber(name as SignalName)
  } catch {
    // The C library's own two (`SIG32`, `SIG33`), which kill() refuses but a command can die of.
    return Number(/^SIG(\d+)$/.exec(name)?.[1] ?? 0)
  }
}

/** The exit code of `isolate run` for a finished sandbox (and of `isolate exec` for a command). */
function exitCodeOf(r: Pick<SandboxResult, 'reason' | 'signal' | 'exitCode'>): number {
  if (r.reason === 'timeout') return EXIT_TIMEOUT
  // The helper kills the sandbox at the bound; a command that had ended before it was read past
  // the bound still lost output, which its own exit code (often 0) would hide.
  if (r.reason === 'output-limit') return 128 + constants.signals.SIGKILL
  if (r.signal) {
    return 128 + signalNumberOr0(r.signal)
  }
  if (r.exitCode !== null) return r.exitCode
  return EXIT_SETUP
}

const FORWARDED = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const

/** How long a command with a terminal may outlive the SIGPIPE for a reader that went away. */
const PIPE_GRACE_MS = 1000

/** SIGINTs within this long of each other that end a command which ignores them (Ctrl-C thrice). */
const INSIST_MS = 2000

/**
 * How the signals isolate receives reach the command (`send`): each one, then SIGCONT (a stopped
 * command takes a signal only once it runs again). A command that ignores them cannot keep
 * isolate from ending: a second SIGTERM, or a third SIGINT within 2 s of the first, sends
 * SIGKILL instead (a REPL that takes Ctrl-C keeps taking it; SIGHUP is only ever forwarded).
 */
function forwarder(send: (sig: NodeJS.Signals) => void): (sig: NodeJS.Signals) => void {
  let terms = 0
  let ints: number[] = []
  return (sig) => {
    if (sig === 'SIGTERM' && ++terms > 1) return send('SIGKILL')
    if (sig === 'SIGINT') {
      const now = Date.now()
      ints = [...ints.filter((at) => now - at < INSIST_MS), now]
      if (ints.length >= 3) return send('SIGKILL')
    }
    send(sig)
    send('SIGCONT')
  }
}

/** How a process that SIGPIPE ended exits: where nobody reads isolate's stdout any more. */
const EXIT_SIGPIPE = 128 + constants.signals.SIGPIPE

/**
 * Why isolate's stdout failed, if it did: EPIPE where its reader went away (`isolate ps | true`),
 * else a write error (ENOSPC: `> /dev/full`). What is written after is dropped, never an
 * unhandled 'error'. Looked at as isolate exits: unless it had a failure of its own to report,
 * it then exits as a tool SIGPIPE ended would (141), or says what failed (125).
 */
let stdoutFailed: string | undefined
const watched = new WeakSet<NodeJS.WriteStream>()

/**
 * isolate's stdout or stderr, watched for a reader that went away. Opened only once isolate
 * writes to it: Node makes a pipe non-blocking when it opens it, and a command that shares that
 * pipe (run without -t) would then see its own writes fail (EAGAIN).
 */
function out(name: 'stdout' | 'stderr'): NodeJS.WriteStream {
  const stream = process[name]
  if (!watched.has(stream)) {
    watched.add(stream)
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (name === 'stdout') stdoutFailed ??= e.code ?? 'EIO'
    })
  }
  return stream
}

// Looked at last: an EPIPE of the last write is heard only after main() settled.
process.on('exit', () => {
  if (stdoutFailed === undefined || process.exitCode) return
  if (stdoutFailed === 'EPIPE') {
    process.exitCode = EXIT_SIGPIPE
    return
  }
  out('stderr').write(`isolate: cannot write to stdout (${stdoutFailed})\n`)
  process.exitCode = EXIT_SETUP
})

/** Write `text` to stdout; resolves to whether it got there. */
function delivered(text: string): Promise<boolean> {
  return new Promise((resolve) => out('stdout').write(text, (e) => resolve(!e && stdoutFailed === undefined)))
}

async function run(argv: string[]): Promise<number> {
  const plan = planRun(argv)
  if (plan === 'help') {
    out('stdout').write(RUN_HELP)
    return 0
  }

  // Installed before the spawn so that a signal arriving meanwhile is not lost (nor kills us and
  // leaves the helper to notice through its lifeline); it is delivered once the command runs.
  let sb: Sandbox | undefined
  const pending: NodeJS.Signals[] = []
  const deliver = forwarder((sig) => sb!.kill(sig))
  const forward = (sig: NodeJS.Signals) => {
    if (sb) deliver(sig)
    else pending.push(sig)
  }
  for (const sig of FORWARDED) process.on(sig, forward)
  try {
    try {
      sb = await spawnIsolated(plan.file, plan.args, plan.options)
    } catch (e) {
      return setupFailed(e, plan)
    }
    for (const sig of pending.splice(0)) deliver(sig)
    const restoreTerminal = plan.tty ? attachTerminal(sb) : async () => {}
    let result: SandboxResult
    try {
      result = await sb.wait()
    } catch (e) {
      return setupFailed(e, plan)
    }
    await restoreTerminal()
    if (plan.json) out('stdout').write(`${JSON.stringify(result)}\n`)
    return exitCodeOf(result)
  } finally {
    for (const sig of FORWARDED) process.off(sig, forward)
  }
}

/**
 * Our terminal in raw mode, its keys to the sandbox's terminal (Ctrl-C included: it is the
 * command's to act on), the sandbox's output to our stdout, its size following ours. Returns
 * what puts our terminal back as it was.
 */
function attachTerminal(sb: Sandbox): () => Promise<void> {
  const stdin = process.stdin
  const wasRaw = stdin.isTTY ? stdin.isRaw : false
  if (stdin.isTTY) stdin.setRawMode(true)
  const restoreOutput = rawOutput()
  stdin.pipe(sb.stdin!)
  sb.stdout!.pipe(out('stdout'), { end: false })
  // Nobody reads our output any more (isolate run -t ... | head -1): the command gets SIGPIPE, as
  // it would writing to that pipe itself; what it still writes is read and dropped.
  const onBroken = () => {
    sb.stdout!.unpipe(process.stdout)
    sb.stdout!.resume()
    sb.kill('SIGPIPE')
    // It writes to its terminal, not to the pipe, so it never sees EPIPE: one that ignores
    // SIGPIPE would write on, unread, for ever.
    setTimeout(() => sb.kill('SIGKILL'), PIPE_GRACE_MS).unref()
  }
  process.stdout.once('error', onBroken)
  const onResize = () => sb.resize(process.stdout.columns || 80, process.stdout.rows || 24)
  process.stdout.on('resize', onResize)
  return async () => {
    process.stdout.off('error', onBroken)
    process.stdout.off('resize', onResize)
    stdin.unpipe(sb.stdin!)
    stdin.pause()
    // What the command wrote last reaches our terminal before its modes go back (our writes to a
    // terminal complete later; the sandbox's terminal output may still be on its way).
    await ended(sb.stdout!, 2000)
    await new Promise((resolve) => out('stdout').write('', resolve))
    if (stdin.isTTY) stdin.setRawMode(wasRaw)
    restoreOutput()
  }
}

/** Once `stream` has ended or closed, or `ms` passed. */
function ended(stream: NodeJS.ReadableStream & { readableEnded?: boolean; destroyed?: boolean }, ms: number): Promise<void> {
  if (stream.readableEnded || stream.destroyed) return Promise.resolve()
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer)
      resolve()
    }
    const timer = setTimeout(done, ms)
    stream.once('end', done)
    stream.once('close', done)
  })
}

/**
 * Our terminal's output passed through as it comes: the sandbox's terminal turned its newlines
 * into `\r\n` already (libuv's raw mode leaves that on, and each line would end `\r\r\n`).
 * Returns what turns it back on, if it was.
 */
function rawOutput(): () => void {
  if (!out('stdout').isTTY) return () => {}
  const { addon } = loadNative()
  const was = addon.setOutputProcessing(1, false)
  return () => void (was && addon.setOutputProcessing(1, true))
}

/** A sandbox that could not be set up: report it (and as JSON with --json), exit 125. */
function setupFailed(e: unknown, plan: RunPlan): number {
  if (!(e instanceof IsolateError)) throw e
  reportError(e, plan.mountFlags)
  if (plan.json) out('stdout').write(`${JSON.stringify({ error: e.toJSON() })}\n`)
  return exitCodeOfSetup(e)
}

/** A command that is not there (127) or cannot be run (126) is told apart from isolate's own failures (125), as env(1) and docker do. */
function exitCodeOfSetup(e: IsolateError): number {
  if (e.step !== 'execve') return EXIT_SETUP
  if (e.errno === 'ENOENT' || e.errno === 'ENOTDIR') return 127
  if (e.errno === 'EACCES' || e.errno === 'ENOEXEC' || e.errno === 'EISDIR' || e.errno === 'EPERM') return 126
  return EXIT_SETUP
}

/** The library's names for options, in a message or hint, as the flags that set them. */
function inFlags(text: string, mountFlags: string[]): string {
  const mount = (m: string, i: string, part?: string) => {
    const flag = mountFlags[Number(i)]
    return flag === undefined ? m : part ? `the ${part} of '${flag}'` : `'${flag}'`
  }
  return text
    .replace(/\bmounts\[(\d+)\](?:\.(source|target))?/g, mount)
    .replace(/\b(?:options\.)?(limits\.[a-zA-Z]+)/g, (m: string, key: string) => FLAG_OF[key] ?? m)
    .replace(/\benv\.PATH\b/g, '-e PATH=...')
    // Only an option error's own prefix: a path the user typed may hold 'options.env' too.
    .replace(/^options\.([a-zA-Z]+)(?=: )/, (m: string, key: string) => FLAG_OF[key] ?? m)
    .replace(/\(probe\(\)\.sandboxHostIds\)/g, "('isolate doctor' names them)")
}

/** `isolate: <message>` and the structured details, one per line. */
function reportError(e: IsolateError, mountFlags: string[] = []): void {
  let message = e.message
  if (e.hint && message.endsWith(` (hint: ${e.hint})`)) message = message.slice(0, -` (hint: ${e.hint})`.length)
  const lines = [`isolate: ${inFlags(message, mountFlags)}`]
  if (e.option) {
    const m = /^mounts\[(\d+)\]/.exec(e.option)
    const flag = m ? mountFlags[Number(m[1])] : FLAG_OF[e.option]
    lines.push(`  option: ${e.option}${flag ? ` (${flag})` : ''}`)
  }
  if (e.step) lines.push(`  step: ${e.step}`)
  if (e.path) lines.push(`  path: ${e.path}`)
  if (e.errno) lines.push(`  errno: ${e.errno}`)
  if (e.hint) lines.push(`  hint: ${inFlags(e.hint, mountFlags)}`)
  out('stderr').write(`${printable(lines.join('\n'))}\n`)
}

/**
 * Text for the terminal: control characters other than newline and tab escaped. An error may
 * quote what a sandbox or an archive chose (a path, an image's tag), and an escape sequence in
 * it must not reach the terminal.
 */
function printable(text: string): string {
  return text.replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
}

// ---------------------------------------------------------------------------------------------
// isolate create, exec, ps, rm: sandboxes that stay

/** How long rm waits for a keeper to end its sandbox, beyond the sandbox's --grace. */
const RM_WAIT_MS = 30_000

/** The --grace of a sandbox of isolate create, as its entry keeps it (0 without one). */
function graceOf(entry: SandboxEntry): number {
  const g = (entry.summary.stop as { graceMs?: unknown } | undefined)?.graceMs
  return typeof g === 'number' && Number.isSafeInteger(g) && g > 0 ? g : 0
}

const CREATE_OPTIONS = {
  ...SANDBOX_FLAGS,
  grace: STOP_FLAGS.grace,
  'stop-signal': STOP_FLAGS['stop-signal'],
  name: { type: 'string' },
} as const

/** This very file, which the keeper runs again (`isolate __keeper`). */
const CLI_FILE = fileURLToPath(import.meta.url)

async function create(argv: string[]): Promise<number> {
  const { values, tokens, positionals } = parseParsed(() => parseArgs({ args: argv, options: CREATE_OPTIONS, strict: true, allowPositionals: true, tokens: true }), 'create')
  if (values.help) {
    out('stdout').write(CREATE_HELP)
    return 0
  }
  if (positionals.length > 0) throw new UsageError(`create: takes no command (got ${JSON.stringify(positionals[0])}); run one in the sandbox with: isolate exec ID -- CMD`, MORE.create)
  const { options, mountFlags } = sandboxOptions(values, tokens)
  const stop = planStop(values, 'the sandbox', false)
  if (stop) options.stop = stop
  // The keeper works from /: host paths are made absolute here, against our cwd.
  if (typeof options.rootfs === 'string' && options.rootfs !== 'host') options.rootfs = resolve(options.rootfs)
  for (const m of options.mounts ?? []) if (m.type === 'bind' || m.type === 'overlay') m.source = resolve(m.source)
  const name = values.name
  if (name !== undefined) {
    if (!NAME_RE.test(name)) throw new UsageError(`--name: ${JSON.stringify(name)} is not a name; use letters, digits, '_', '.' and '-' (at most 63, not starting with '_', '.' or '-')`, MORE.create)
    // Not even a short one (3 to 5 hex digits): exec and rm take the start of an ID too, and a
    // name gone with its sandbox would then name another sandbox whose ID starts so.
    if (ID_RE.test(name) || PREFIX_RE.test(name)) throw new UsageError(`--name: ${JSON.stringify(name)} looks like a sandbox ID, or the start of one (which exec and rm take too); choose a name with a character other than 0-9 and a-f`, MORE.create)
  }

  ensureRuntimeDir()
  if (name !== undefined) {
    const taken = (await listSandboxes()).find((e) => e.name === name)
    if (taken) throw new RegistryError(`the name ${name} is taken by sandbox ${taken.id}`, "choose another --name, or 'isolate rm' that one first")
  }
  const summary: Record<string, unknown> = {
    rootfs: options.rootfs ?? 'host',
    hostname: options.hostname ?? 'sandbox',
    network: options.network ?? 'none',
    ...(options.overlay ? { overlay: true } : {}),
    ...(mountFlags.length ? { mounts: mountFlags } : {}),
    ...(options.user ? { user: options.user } : {}),
    ...(options.cwd ? { cwd: options.cwd } : {}),
    // Names only: values may be secrets.
    ...(options.env ? { env: Object.keys(options.env) } : {}),
    ...(options.limits ? { limits: { ...options.limits, ...(options.limits.pids === Infinity ? { pids: 'unlimited' } : {}) } } : {}),
    // rm waits that much longer.
    ...(stop ? { stop } : {}),
  }
  try {
    // create takes no --output: what sandboxOptions made has no limits.outputBytes.
    const { id } = await startKeeper(CLI_FILE, { options: options as SandboxOptions, name, summary })
    if (await delivered(`${id}\n`)) return 0
    // Nobody got its ID (isolate create | true, > /dev/full): a sandbox nobody knows of is
    // removed again.
    const { dir, entry } = await findSandbox(id)
    await removeSandbox(dir, entry, id)
    if (stdoutFailed === 'EPIPE') return EXIT_SIGPIPE
    out('stderr').write(`isolate: create: the ID could not be written to stdout (${stdoutFailed ?? 'EIO'}); the sandbox was removed again\n`)
    return EXIT_SETUP
  } catch (e) {
    if (!(e instanceof IsolateError)) throw e
    reportError(e, mountFlags)
    return EXIT_SETUP
  }
}

const EXEC_OPTIONS = {
  tty: { type: 'boolean', short: 't' },
  interactive: { type: 'boolean', short: 'i' },
  env: { type: 'string', short: 'e', multiple: true },
  cwd: { type: 'string' },
  timeout: { type: 'string' },
  ...STOP_FLAGS,
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const

/** `[options] ID [--] CMD ARGS...`: the options of isolate end at ID (or at a `--` before it). */
function planExec(argv: string[]): { ref: string; request: ExecRequest; json: boolean } | 'help' {
  const { tokens } = parseParsed(() => parseArgs({ args: argv, options: EXEC_OPTIONS, strict: false, allowPositionals: true, tokens: true }), 'exec')
  const first = tokens.find((t) => t.kind === 'positional' || t.kind === 'option-terminator')
  const optionArgs = first ? argv.slice(0, first.index) : argv
  const rest = first ? argv.slice(first.kind === 'option-terminator' ? first.index + 1 : first.index) : []
  const { values } = parseParsed(() => parseArgs({ args: optionArgs, options: EXEC_OPTIONS, strict: true, allowPositionals: false }), 'exec')
  if (values.help) return 'help'
  const [ref, ...after] = rest
  if (ref === undefined) throw new UsageError('exec: no sandbox ID given; use: isolate exec [options] ID -- CMD [ARGS...]', MORE.exec)
  // An option after the ID (isolate exec ID --cwd /tmp -- pwd) would be run as the command.
  if (after[0] !== undefined && after[0] !== '--' && after[0].startsWith('-')) {
    throw new UsageError(`exec: ${JSON.stringify(after[0])} after the sandbox ID: options come before it, the command after it (isolate exec [options] ID -- CMD [ARGS...])`, MORE.exec)
  }
  const command = after[0] === '--' ? after.slice(1) : after
  if (command.length === 0) throw new UsageError('exec: no command given; use: isolate exec [options] ID -- CMD [ARGS...]', MORE.exec)
  const [file, ...args] = command
  const request: ExecRequest = { op: 'exec', file, args, stdinAcks: true }
  if (values.env !== undefined) request.env = parseEnv(values.env)
  if (values.cwd !== undefined) {
    if (!values.cwd.startsWith('/')) throw new UsageError(`--cwd: ${JSON.stringify(values.cwd)} must be an absolute path inside the sandbox`, MORE.exec)
    request.cwd = values.cwd
  }
  if (values.timeout !== undefined) request.timeoutMs = parseDuration('--timeout', values.timeout)
  const stop = planStop(values, 'its process group')
  if (stop) request.stop = stop
  if (values.tty) request.tty = { rows: process.stdout.rows || 24, cols: process.stdout.columns || 80 }
  const json = values.json === true
  if (json && values.tty) throw new UsageError('-t and --json do not go together: a terminal\'s output cannot be kept apart from the result', MORE.exec)
  return { ref, request, json }
}

type ExecExit = Awaited<ReturnType<ExecProcess['wait']>>

async function exec(argv: string[]): Promise<number> {
  const plan = planExec(argv)
  if (plan === 'help') {
    out('stdout').write(EXEC_HELP)
    return 0
  }
  const { ref, request, json } = plan

  // As in run: installed first, so that a signal arriving meanwhile is delivered, not lost.
  let conn: Socket | undefined
  const pending: NodeJS.Signals[] = []
  const deliver = forwarder((sig) => void (conn!.destroyed || conn!.write(encodeFrame(Frame.SIGNAL, sig))))
  const forward = (sig: NodeJS.Signals) => {
    if (conn && !conn.destroyed) deliver(sig)
    else pending.push(sig)
  }
  for (const sig of FORWARDED) process.on(sig, forward)
  try {
    const { dir, entry } = await findSandbox(ref)
    conn = await connectKeeper(dir, entry.id, ref)
    conn.write(jsonFrame(Frame.REQUEST, request))
    for (const sig of pending.splice(0)) deliver(sig)
    const outcome = await execSession(conn, request.tty !== undefined, json)
    if ('exit' in outcome) {
      if (json) out('stdout').write(`${JSON.stringify(outcome.exit)}\n`)
      return exitCodeOf(outcome.exit)
    }
    if ('lost' in outcome) {
      const message = `lost the connection to sandbox ${entry.id} before the command ended (its keeper was killed?)`
      out('stderr').write(`isolate: ${message}\n`)
      if (json) out('stdout').write(`${JSON.stringify({ error: { name: 'Error', message } })}\n`)
      return EXIT_SETUP
    }
    const e = errorFromJSON(outcome.error)
    if ((e as IsolateError).code === DESTROYED) throw new NotFoundError(ref, 'the sandbox has ended')
    if (e instanceof IsolateError) reportError(e)
    else throw e
    if (json) out('stdout').write(`${JSON.stringify({ error: e.toJSON() })}\n`)
    return exitCodeOfSetup(e)
  } finally {
    for (const sig of FORWARDED) process.off(sig, forward)
    conn?.destroy()
  }
}

/**
 * Relay one exec over its connection: our stdin to it (raw, with -t), its stdout and stderr to
 * ours, our terminal's size. Ends with its exit, its error, or a lost connection.
 */
function execSession(conn: Socket, tty: boolean, json = false): Promise<{ exit: ExecExit } | { error: Record<string, unknown> } | { lost: true }> {
  return new Promise((resolve) => {
    const stdin = process.stdin
    const wasRaw = stdin.isTTY ? stdin.isRaw : false
    if (tty && stdin.isTTY) stdin.setRawMode(true)
    const restoreOutput = tty ? rawOutput() : () => {}
    // Our stdin waits while the connection is full, and, once the keeper said it acknowledges
    // (its START), while STDIN_WINDOW bytes are unacknowledged: a command that does not read
    // them then holds them here, not in the keeper's reading of our signals and our end.
    let finished = false
    let connFull = false
    let acks = false
    let unacked = 0
    const flow = () => {
      if (finished) return
      if (connFull || (acks && unacked >= STDIN_WINDOW)) stdin.pause()
      else stdin.resume()
    }
    const onData = (d: Buffer) => {
      unacked += d.length
      if (!conn.write(encodeFrame(Frame.STDIN, d)) && !connFull) {
        connFull = true
        conn.once('drain', () => {
          connFull = false
          flow()
        })
      }
      flow()
    }
    const onEnd = () => {
      if (!conn.destroyed) conn.write(encodeFrame(Frame.STDIN_EOF))
    }
    stdin.on('data', onData)
    stdin.once('end', onEnd)
    stdin.on('error', onEnd)
    const onResize = () => {
      if (!conn.destroyed) conn.write(jsonFrame(Frame.RESIZE, { cols: process.stdout.columns || 80, rows: process.stdout.rows || 24 }))
    }
    if (tty) process.stdout.on('resize', onResize)

    const finish = (outcome: { exit: ExecExit } | { error: Record<string, unknown> } | { lost: true }) => {
      if (finished) return
      finished = true
      if (tty) process.stdout.off('resize', onResize)
      process.stdout.off('error', onStdoutError)
      process.stderr.off('error', onStderrError)
      stdin.off('data', onData)
      stdin.off('end', onEnd)
      stdin.off('error', onEnd)
      // Stop reading: a terminal stays ours (paused), anything else is done with.
      if (stdin.isTTY) stdin.pause()
      else stdin.destroy()
      // What came last reaches our terminal before its modes go back (writes to a terminal
      // complete later).
      out('stdout').write('', () => {
        if (tty && stdin.isTTY) stdin.setRawMode(wasRaw)
        restoreOutput()
        resolve(outcome)
      })
    }

    // Where nobody reads our output any more (isolate exec ... | head -1), the command gets
    // SIGPIPE, as it would writing to that pipe itself; what it still sends is dropped. It writes
    // to its keeper, not to that pipe, so it never sees EPIPE: one that ignores SIGPIPE is killed
    // a moment later, else it would write on, unread, for ever.
    const broken = new Set<NodeJS.WriteStream>()
    const onBroken = (stream: NodeJS.WriteStream) => (e: NodeJS.ErrnoException) => {
      if (broken.has(stream)) return
      broken.add(stream)
      if (e.code === 'EPIPE' && !conn.destroyed) {
        conn.write(encodeFrame(Frame.SIGNAL, 'SIGPIPE'))
        setTimeout(() => void (conn.destroyed || conn.write(encodeFrame(Frame.SIGNAL, 'SIGKILL'))), PIPE_GRACE_MS).unref()
      }
      conn.resume()
    }
    const onStdoutError = onBroken(out('stdout'))
    const onStderrError = onBroken(out('stderr'))
    process.stdout.on('error', onStdoutError)
    process.stderr.on('error', onStderrError)
    // One wait for 'drain' per stream: frames of one read may each find it full.
    const draining = new Set<NodeJS.WriteStream>()
    const write = (stream: NodeJS.WriteStream, d: Buffer) => {
      if (broken.has(stream)) return
      if (!stream.write(d) && !draining.has(stream)) {
        draining.add(stream)
        conn.pause()
        stream.once('drain', () => {
          draining.delete(stream)
          conn.resume()
        })
      }
    }
    const started = (payload: Buffer) => {
      try {
        acks = (JSON.parse(payload.toString('utf8')) as { stdinAcks?: unknown }).stdinAcks === true
      } catch {}
      flow()
    }
    const acknowledged = (payload: Buffer) => {
      if (payload.length !== 4) return
      unacked = Math.max(0, unacked - payload.readUInt32BE(0))
      flow()
    }
    onFrames(conn, (type, payload) => {
      // With --json our stdout carries only the result.
      if (type === Frame.STDOUT) write(json ? process.stderr : process.stdout, payload)
      else if (type === Frame.STDERR) write(process.stderr, payload)
      else if (type === Frame.STDIN_ACK) acknowledged(payload)
      else if (type === Frame.START) started(payload)
      else if (type === Frame.EXIT) finish({ exit: JSON.parse(payload.toString('utf8')) as ExecExit })
      else if (type === Frame.ERROR) finish({ error: JSON.parse(payload.toString('utf8')) as Record<string, unknown> })
    })
    conn.on('error', () => {})
    conn.on('close', () => finish({ lost: true }))
  })
}

async function ps(argv: string[]): Promise<number> {
  const { values, positionals } = parseParsed(() => parseArgs({ args: argv, options: { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: true }), 'ps')
  if (values.help) {
    out('stdout').write(PS_HELP)
    return 0
  }
  if (positionals.length > 0) throw new UsageError(`ps: unexpected argument ${JSON.stringify(positionals[0])}`, MORE.ps)
  const list = await listSandboxes()
  if (values.json) {
    out('stdout').write(`${JSON.stringify(list, null, 2)}\n`)
    return 0
  }
  const when = (iso: string) => {
    const d = new Date(iso)
    const p = (n: number) => String(n).padStart(2, '0')
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`
  }
  const rows = [['ID', 'NAME', 'PID', 'CREATED', 'ROOTFS'], ...list.map((e) => [e.id, e.name ?? '-', String(e.pid), when(e.created), e.rootfs])]
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)))
  out('stdout').write(rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('   ')).join('\n') + '\n')
  return 0
}

async function rm(argv: string[]): Promise<number> {
  const { values, positionals } = parseParsed(
    () => parseArgs({ args: argv, options: { force: { type: 'boolean', short: 'f' }, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: true }),
    'rm',
  )
  if (values.help) {
    out('stdout').write(RM_HELP)
    return 0
  }
  if (positionals.length === 0) throw new UsageError('rm: no sandbox ID given; use: isolate rm [-f] ID...', MORE.rm)
  // Every one at once; reported in the order given.
  const outcomes = await Promise.all(
    positionals.map(async (ref) => {
      try {
        const { dir, entry } = await findSandbox(ref)
        await removeSandbox(dir, entry, ref, { force: values.force === true, timeoutMs: RM_WAIT_MS + graceOf(entry) })
        return { id: entry.id }
      } catch (e) {
        // Ended of itself (its --timeout): gone already, as asked; its record goes too.
        if (e instanceof EndedError) {
          const dir = existingRuntimeDir()
          if (dir !== undefined) forgetEnded(dir, ref)
          return { id: e.ended.id }
        }
        if (e instanceof NotFoundError && values.force) return {}
        if (e instanceof RegistryError) return { error: e }
        throw e
      }
    }),
  )
  let failed = false
  for (const o of outcomes) {
    if (o.id) out('stdout').write(`${o.id}\n`)
    if (o.error) {
      reportRegistryError(o.error)
      failed = true
    }
  }
  return failed ? EXIT_SETUP : 0
}

async function killAll(argv: string[]): Promise<number> {
  const { values, positionals } = parseParsed(() => parseArgs({ args: argv, options: { help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: true }), 'kill-all')
  if (values.help) {
    out('stdout').write(KILL_ALL_HELP)
    return 0
  }
  if (positionals.length === 0) throw new UsageError('kill-all: no sandbox ID given; use: isolate kill-all ID...', MORE['kill-all'])
  // Every one at once; reported in the order given.
  const outcomes = await Promise.all(
    positionals.map(async (ref) => {
      try {
        const { dir, entry } = await findSandbox(ref)
        try {
          await killAllIn(dir, entry, ref)
        } catch (e) {
          if ((e as IsolateError).code === DESTROYED) throw new NotFoundError(ref, 'the sandbox has ended')
          throw e
        }
        return { id: entry.id }
      } catch (e) {
        if (e instanceof RegistryError || e instanceof IsolateError) return { error: e }
        throw e
      }
    }),
  )
  let failed = false
  for (const o of outcomes) {
    if (o.id) out('stdout').write(`${o.id}\n`)
    if (o.error instanceof RegistryError) reportRegistryError(o.error)
    else if (o.error) reportError(o.error)
    failed ||= o.error !== undefined
  }
  return failed ? EXIT_SETUP : 0
}

/** `isolate: <message>` and its hint. */
function reportRegistryError(e: RegistryError): void {
  // The message may quote what another user made (a symlink's target in /tmp): never raw to a terminal.
  out('stderr').write(printable(`isolate: ${e.message}\n${e.hint ? `  hint: ${e.hint}\n` : ''}`))
}

// ---------------------------------------------------------------------------------------------
// isolate doctor

function doctorText(p: HostProbe): string {
  const out: string[] = []
  const row = (label: string, value: string) => out.push(`${`${label}:`.padEnd(18)}${value}`)
  const fix = (text: string) => out.push(`${''.padEnd(18)}fix: ${text}`)
  const problem = (text: string) => out.push(`${''.padEnd(18)}problem: ${text}`)

  row('kernel', `${p.kernel} (${p.arch})`)
  row('running as', p.rootless ? `uid ${p.uid}, rootless (unprivileged user namespaces are needed)` : p.sandboxHostIds ? `root (uid 0); the sandbox root is mapped to unprivileged host uid ${p.sandboxHostIds.uid}, gid ${p.sandboxHostIds.gid}` : 'root (uid 0)')
  if (!p.rootless && p.sandboxHostIds) {
    row('  namespaces', p.namespaceOwners !== null ? `owned by host uids ${p.namespaceOwners}-${p.namespaceOwners + NAMESPACE_OWNER_IDS - 1}, one per sandbox (per-user kernel counts are each sandbox's own)` : 'owned by root: a sandbox counts its inotify instances, user namespaces and queued signals against root\'s own')
    if (p.namespaceOwners === null) fix(`give this process CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_KILL, CAP_SETUID and CAP_SETPCAP, and root ${NAMESPACE_OWNER_IDS} more ids after its 65536 (root:<first id>:${ROOTS_OWN_UIDS} in /etc/subuid) or ${NAMESPACE_OWNER_IDS} free ones above 1879048192, mapped in its user namespace`)
    const read = (path: string) => (existsSync(path) ? readFileSync(path, 'utf8') : '')
    const unseen = unseenAccountSources(read('/etc/nsswitch.conf'), p.sandboxIdsRootsOwn)
    if (unseen.length > 0) {
      problem(`accounts also come from ${unseen.join(', ')} (/etc/nsswitch.conf), but the sandbox ids and namespace owners were checked against /etc/passwd and /etc/subuid only: a directory user may hold them, and could then signal or trace what the sandboxes run, or hold a sandbox namespace's capabilities`)
      fix(`give root ids of its own that no directory user holds: root:<first id>:${ROOTS_OWN_UIDS} in /etc/subuid and root:<first id>:65536 in /etc/subgid, then restart the Node process`)
    }
  }
  if (p.rootless) {
    const groups = (process.getgroups?.() ?? []).filter((g) => g !== process.getegid?.())
    if (groups.length > 0) {
      problem(`this account's supplementary groups (${groups.join(', ')}) keep their access inside its sandboxes: an unprivileged user namespace cannot drop them, so host files only those groups may read stay readable there`)
      fix('run untrusted code from an account of its own with no supplementary groups, or as root (root sandboxes have none)')
    }
  }
  if (!p.rootless && !p.sandboxHostIds) {
    problem('no unprivileged host ids for the sandbox root: root has no range in /etc/subuid and /etc/subgid, and every 65536-id block from 1879048192 up is taken')
    fix('add root:<first id>:65536 to /etc/subuid and /etc/subgid, on a block no range or account uses; then restart the Node process (it reads them once)')
  }

  const u = p.userNamespaces
  if (u.allowed) {
    row('user namespaces', `allowed${u.maxUserNamespaces !== null ? ` (user.max_user_namespaces = ${u.maxUserNamespaces})` : ''}`)
  } else {
    row('user namespaces', 'NOT allowed: sandboxes cannot be created')
    if (u.reason) problem(u.reason)
    if (u.maxUserNamespaces === 0) fix('sudo sysctl -w user.max_user_namespaces=15000 (persist it in /etc/sysctl.d/)')
    else if (u.unprivilegedUsernsClone === 0) fix('sudo sysctl -w kernel.unprivileged_userns_clone=1 (persist it in /etc/sysctl.d/), or run as root')
    else if (u.apparmorRestricted) fix("add an AppArmor profile that grants 'userns' to the node binary (see Ubuntu's apparmor userns docs), or sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0")
    else fix('allow unprivileged user namespaces on this host, or run as root')
  }

  const c = p.cgroup
  const modeText = { v1: 'v1 (legacy)', v2: 'v2 (unified)', hybrid: 'hybrid (v1 controllers plus a v2 mount)', none: 'none mounted' }[c.mode] ?? c.mode
  row('cgroup mode', modeText)
  if (c.mode === 'none') {
    problem('no cgroup hierarchy is mounted: memory, pids and cpu limits cannot be enforced')
    fix('mount cgroup2: sudo mount -t cgroup2 none /sys/fs/cgroup')
  } else {
    if (c.mode !== 'v2') row('  v1 controllers', c.v1Controllers.length ? c.v1Controllers.join(', ') : '(none)')
    row('  v2 controllers', c.v2Controllers.length ? c.v2Controllers.join(', ') : '(none)')
    const v2Own = c.own.find((l) => l.startsWith('0::'))
    if (v2Own) row('  own v2 cgroup', v2Own.slice(3) || '/')
    const h = p.cgroupHost
    if (h?.unified?.fromEnv) row('  sandboxes in', `${h.unified.ownPath} (ISOLATE_CGROUP_PARENT)`)
    const parentRefused = h?.parentRefused === true
    const { canCreate, held, refused } = cgroupLimitsHere(p)
    if (!canCreate) {
      row('  may create', `no${h?.reason ? `: ${h.reason}` : ''}`)
      problem('limits that need a cgroup (memoryBytes, pids, cpus, cpuTimeMs) fail closed here')
      if (parentRefused) fix(c.mode === 'v2' ? "name this process's cgroup or one above it in ISOLATE_CGROUP_PARENT, as /proc/self/cgroup writes it, or unset it" : 'unset ISOLATE_CGROUP_PARENT: it names a cgroup v2 parent, and limits here are cgroup v1\'s')
      else if (c.mode === 'v2' && p.rootless) fix('for cpuTimeMs, run under a delegated cgroup, e.g. systemd-run --user --scope -p Delegate=yes isolate run ...; memoryBytes, pids and cpus also need a cgroup that holds no process: the hierarchy\'s root (a VM or a machine of its own), or one above the caller\'s, delegated to it, named in ISOLATE_CGROUP_PARENT (isolate neither moves the caller nor restructures its cgroup)')
      else if (c.mode === 'v2') fix('mount the cgroup2 hierarchy writable where this process sees its own cgroup (a container: a private cgroup namespace and a writable /sys/fs/cgroup)')
      else if (p.rootless) fix("run as root: cgroup v1 delegates nothing to another user (on a cgroup v2 host, a delegated cgroup would do: systemd-run --user --scope -p Delegate=yes)")
      else fix('run as root')
    } else if (refused.length === 0) {
      row('  may create', 'yes: memory, pids, cpu and cpu-time limits are enforced')
    } else {
      row('  may create', `yes: ${held.length ? `${held.join(', ')} enforced` : 'but no limit holds'}; ${refused.map((r) => r.option).join(', ')} fail closed`)
      for (const r of refused) problem(`${r.option}: ${r.message}`)
      // One fix: where a parent would hold every limit, the general hints (which weigh the
      // caller's own cgroup) would only contradict it.
      if (h?.parentWouldHold) fix(`every limit holds beneath ${h.parentWouldHold}, a cgroup delegated to this process above its own that holds no process: set ISOLATE_CGROUP_PARENT=${h.parentWouldHold}`)
      else for (const hint of new Set(refused.map((r) => r.hint).filter((x) => x !== undefined))) fix(hint)
    }
  }

  row(
    'pids default',
    p.defaultPids !== null
      ? `${p.defaultPids} processes and threads per uid of a sandbox that names no limits.pids (its RLIMIT_NPROC, counted in its own user namespace; --pids unlimited for none)`
      : 'none here: this kernel (older than 5.14, or its version unreadable) counts RLIMIT_NPROC per host user, so a sandbox that names no limits.pids may start processes until the host has no pid left',
  )
  if (p.defaultPids === null) fix('give code you do not trust --pids (limits.pids) where a cgroup can hold it (see may create above)')

  row(
    'OOM killer',
    p.oomFloorHeld
      ? 'takes sandboxes first (oom_score_adj 1000, which they cannot lower), the largest first: memory they hold apart from any process (tmpfs files) goes with them'
      : 'takes sandboxes first (oom_score_adj 1000), but they may lower it as far as this process itself may (it lacks CAP_SYS_RESOURCE)',
  )
  if (!p.oomFloorHeld) fix('give code you do not trust limits.memoryBytes: its tmpfs files count too')

  if (p.coreSocket !== null) {
    row('core dumps', `handed to the socket ${p.coreSocket} (kernel.core_pattern @): the kernel connects to it for each crash in a sandbox too, whatever its RLIMIT_CORE`)
    fix('a coredump server that starts work per crash runs it for code you do not trust too: bound it there, or give kernel.core_pattern a file name')
  } else if (p.corePipe === null) row('core dumps', 'none from sandboxes unless limits.coreDumps (RLIMIT_CORE 1 byte); this host pipes them to no program')
  else {
    row('core dumps', `piped to ${p.corePipe.split(/\s+/)[0]}: not for a crash in a sandbox (its RLIMIT_CORE is 1 byte, the one limit the kernel keeps for a pipe, and the default seccomp profile keeps it there); for one given limits.coreDumps, seccomp 'none' or a profile of its own, or whose caller's hard RLIMIT_CORE is 0, the kernel starts it on the host, as root, for each crash`)
    fix('give limits.coreDumps only to code you trust, or bound the programs run at once with sysctl kernel.core_pipe_limit')
  }

  row('overlayfs', p.overlay ? 'available' : 'not available')
  if (!p.overlay) fix('sudo modprobe overlay (rootless overlay mounts need Linux 5.11 or newer)')

  row('Landlock', p.landlockAbi !== null ? `ABI ${p.landlockAbi}` : 'not available')
  if (p.landlockAbi === null) fix("enable it at boot: add 'landlock' to the kernel's lsm= list (Linux 5.13 or newer built with CONFIG_SECURITY_LANDLOCK)")

  row('seccomp', p.seccomp ? 'available' : 'not available')
  if (!p.seccomp) fix('use a kernel built with CONFIG_SECCOMP_FILTER')

  const mode = p.seccompMode
  row('this process', mode === 2 ? 'runs under a seccomp filter (e.g. a container runtime\'s default profile)' : mode === 1 ? 'runs in seccomp strict mode' : mode === 0 ? 'is not under a seccomp filter' : 'seccomp mode unknown')
  if (mode === 2) {
    problem('the filter may refuse unshare/clone of namespaces, mount or pivot_root, and sandbox setup then fails with EPERM')
    fix('run the container with a profile that allows them (docker run --security-opt seccomp=unconfined, or a custom profile)')
  }

  const tried = p.attempt.allNamespaces
  row('namespaces', tried === null ? 'created (user, mount, pid, uts, ipc, net)' : `refused: ${tried}`)
  if (tried !== null) fix('see the user namespaces line above; a container needs --security-opt seccomp=unconfined or a profile allowing clone/unshare')

  row('native parts', p.native.from)
  row('  helper', p.native.helperPath)
  return `${out.join('\n')}\n`
}

async function doctor(argv: string[]): Promise<number> {
  const { values } = parseParsed(
    () => parseArgs({ args: argv, options: { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false }),
    'doctor',
  )
  if (values.help) {
    out('stdout').write(DOCTOR_HELP)
    return 0
  }
  const p = await probe()
  out('stdout').write(values.json ? `${JSON.stringify(p, null, 2)}\n` : doctorText(p))
  return p.userNamespaces.allowed && (p.rootless || p.sandboxHostIds !== null) ? 0 : 1
}

// ---------------------------------------------------------------------------------------------
// isolate rootfs

const ROOTFS_OPTIONS = {
  progress: { type: 'boolean' },
  'skip-special': { type: 'boolean' },
  'max-size': { type: 'string' },
  'max-entries': { type: 'string' },
  json: { type: 'boolean' },
  platform: { type: 'string' },
  ref: { type: 'string' },
  layers: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const

function mib(bytes: number): string {
  return `${(bytes / (1 << 20)).toFixed(1)} MiB`
}

/** Progress on stderr: one rewritten line on a terminal, else (with --progress) a line a second. */
function progressReporter(verb: string, force: boolean): { update: (p: UnpackProgress) => void; end: () => void } | undefined {
  const tty = process.stderr.isTTY === true
  if (!tty && !force) return undefined
  let lastLine = 0
  let shown = false
  const phases = { decompress: 'decompressing', verify: 'verifying', unpack: verb }
  const text = (p: UnpackProgress) => {
    const layer = p.layers !== undefined && p.layer !== undefined ? ` layer ${p.layer + 1}/${p.layers}` : ''
    // Bytes of the archive read (compressed, as its size on disk), not of the files made.
    const amount = p.totalBytes > 0 ? `${mib(p.bytes)} / ${mib(p.totalBytes)} read (${Math.min(100, Math.floor((p.bytes / p.totalBytes) * 100))}%)` : `${mib(p.bytes)} read`
    const entries = p.phase === 'unpack' ? `, ${p.entries} entries` : ''
    return `${phases[p.phase]}${layer}: ${amount}${entries}`
  }
  return {
    update(p) {
      if (tty) {
        out('stderr').write(`\r\x1b[K${text(p)}`)
        shown = true
      } else if (Date.now() - lastLine >= 1000 || (p.totalBytes > 0 && p.bytes >= p.totalBytes)) {
        lastLine = Date.now()
        out('stderr').write(`${text(p)}\n`)
      }
    },
    end() {
      if (tty && shown) out('stderr').write('\r\x1b[K')
    },
  }
}

async function rootfs(argv: string[]): Promise<number> {
  const { values, positionals } = parseParsed(() => parseArgs({ args: argv, options: ROOTFS_OPTIONS, strict: true, allowPositionals: true }), 'rootfs')
  if (values.help) {
    out('stdout').write(ROOTFS_HELP)
    return 0
  }
  const [sub, ...rest] = positionals
  if (sub !== 'unpack' && sub !== 'import') throw new UsageError(sub === undefined ? 'rootfs: no subcommand given; use unpack or import' : `rootfs: unknown subcommand ${JSON.stringify(sub)}; use unpack or import`, MORE.rootfs)
  if (rest.length !== 2) throw new UsageError(sub === 'unpack' ? 'rootfs unpack: expected TARBALL and DIR' : 'rootfs import: expected IMAGE and DIR', MORE.rootfs)
  if (sub === 'unpack') {
    for (const flag of ['platform', 'ref', 'layers'] as const) {
      if (values[flag] !== undefined) throw new UsageError(`rootfs unpack: --${flag} is an option of 'rootfs import'`, MORE.rootfs)
    }
  }
  const [input, dir] = rest
  const bounds = {
    ...(values['max-size'] !== undefined ? { maxBytes: parseSize('--max-size', values['max-size']) } : {}),
    ...(values['max-entries'] !== undefined ? { maxEntries: parseUint('--max-entries', values['max-entries'], { positive: true }) } : {}),
  }
  const progress = progressReporter(sub === 'unpack' ? 'unpacking' : 'importing', values.progress === true)
  const common = { onProgress: progress?.update, ...(values['skip-special'] ? { specialFiles: 'skip' as const } : {}), ...bounds }
  try {
    const result =
      sub === 'unpack'
        ? await unpackRootfs(input, dir, common)
        : await importImage(input, dir, { ...common, platform: values.platform, ref: values.ref, layout: values.layers ? 'layers' : 'flat' })
    progress?.end()
    if (values.json) {
      out('stdout').write(`${JSON.stringify(result)}\n`)
    } else {
      const extra = [result.setidDropped ? `${result.setidDropped} setuid/setgid bits dropped` : '', result.skipped ? `${result.skipped} special files skipped` : ''].filter(Boolean)
      const what = 'layers' in result ? `${result.layers.length} layer${result.layers.length === 1 ? '' : 's'} of ${result.platform}, ${result.entries} entries` : `${result.entries} entries`
      out('stdout').write(`${sub === 'unpack' ? 'unpacked' : 'imported'} ${what} (${mib(result.bytes)}) into ${result.dir}${extra.length ? `; ${extra.join(', ')}` : ''}\n`)
      if ('lowerDirs' in result && result.lowerDirs) out('stdout').write(`layers: ${result.dir}/layers.json\n`)
    }
    return 0
  } catch (e) {
    progress?.end()
    if (!(e instanceof IsolateError) || e.code === 'ERR_ISOLATE_NATIVE' || e.code === 'ERR_ISOLATE_OPTION') throw e
    reportError(e)
    if (values.json) out('stdout').write(`${JSON.stringify({ error: e.toJSON() })}\n`)
    return 1
  }
}

// ---------------------------------------------------------------------------------------------
// main

function version(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); dir !== dirname(dir); dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string }
      if (pkg.name === '@isolate/core') return pkg.version ?? 'unknown'
    } catch {
      // not here; look further up
    }
  }
  return 'unknown'
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv
  // Each isolate process starts one sandbox at most: warm helpers made ahead would go unused.
  configurePool({ size: 0 })
  switch (cmd) {
    case 'run':
      return run(rest)
    case 'doctor':
      return doctor(rest)
    case 'rootfs':
      return rootfs(rest)
    case 'create':
      return create(rest)
    case 'exec':
      return exec(rest)
    case 'ps':
      return ps(rest)
    case 'rm':
      return rm(rest)
    case 'kill-all':
      return killAll(rest)
    case '__keeper':
      // Not for people: the process `isolate create` leaves behind to hold the sandbox.
      return runKeeper()
    case 'help': {
      const helps: Record<string, string> = { help: MAIN_HELP, run: RUN_HELP, create: CREATE_HELP, exec: EXEC_HELP, ps: PS_HELP, 'kill-all': KILL_ALL_HELP, rm: RM_HELP, doctor: DOCTOR_HELP, rootfs: ROOTFS_HELP }
      if (rest[0] !== undefined && !Object.hasOwn(helps, rest[0])) throw new UsageError(`help: unknown command ${JSON.stringify(rest[0])}`, MAIN_HELP)
      out('stdout').write(rest[0] === undefined ? MAIN_HELP : helps[rest[0]])
      return 0
    }
    case '-h':
    case '--help':
      out('stdout').write(MAIN_HELP)
      return 0
    case '-V':
    case '--version':
      out('stdout').write(`${version()}\n`)
      return 0
    case undefined:
      throw new UsageError('no command given', MAIN_HELP)
    default:
      throw new UsageError(`unknown command ${JSON.stringify(cmd)}`, MAIN_HELP)
  }
}

/**
 * Whether the command line asks for --json (before any `--`): then a failure that reaches the top
 * (a usage error, an option the library refused) is also one JSON object on stdout, `{error}`, as
 * a sandbox's setup failure is, so a caller that parses stdout always gets JSON.
 */
function wantsJson(argv: string[]): boolean {
  const end = argv.indexOf('--')
  // Only where --json is an option: `create --json` is an unknown option, told as text.
  return ['run', 'exec', 'ps', 'doctor', 'rootfs'].includes(argv[0]) && (end < 0 ? argv : argv.slice(0, end)).includes('--json')
}

function errorJson(e: unknown): Record<string, unknown> {
  if (e instanceof IsolateError) return e.toJSON()
  if (e instanceof RegistryError) return { name: e.name, message: e.message, hint: e.hint }
  if (e instanceof Error) return { name: e.name, message: e.message }
  return { name: 'Error', message: String(e) }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (e: unknown) => {
    if (wantsJson(process.argv.slice(2))) out('stdout').write(`${JSON.stringify({ error: errorJson(e) })}\n`)
    if (e instanceof UsageError) {
      out('stderr').write(printable(`isolate: ${e.message}\n${e.help === undefined ? '' : e.help === MAIN_HELP ? `\n${e.help}` : e.help}`))
    } else if (e instanceof IsolateError) {
      reportError(e)
    } else if (e instanceof RegistryError) {
      reportRegistryError(e)
    } else {
      out('stderr').write(printable(`isolate: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`))
    }
    process.exitCode = EXIT_SETUP
  },
)
