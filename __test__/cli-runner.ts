/** Runs the `isolate` command as a user does, for the CLI suites: a real process, real stdio. */
import { spawn } from 'node:child_process'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { root } from './helpers.js'

export interface CliResult {
  status: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

export interface CliOptions {
  input?: string
  env?: NodeJS.ProcessEnv
  /** Called with the child once it has printed `text` on stdout. */
  onStdout?: { text: string; then: (child: ReturnType<typeof spawn>) => void }
  /**
   * Started from another run's `onStdout`, which waits for it while holding a slot: it takes
   * none (two runs each waiting on such a one would hold both slots forever).
   */
  nested?: boolean
}

// Each run starts Node with tsx (hundreds of ms of CPU); a few at a time keeps them all quick
// (shell pipelines of the CLI suites take the same slots).
let running = 0
const queue: Array<() => void> = []
export async function limited<T>(fn: () => Promise<T>): Promise<T> {
  // A finishing run hands its slot straight to the next waiter, so the count never overshoots.
  if (running >= Math.max(2, availableParallelism())) await new Promise<void>((r) => queue.push(r))
  else running++
  try {
    return await fn()
  } finally {
    const next = queue.shift()
    if (next) next()
    else running--
  }
}

/** `isolate ARGS...` from the repository's cli.ts, its stdin fed `opts.input`. */
export function cli(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  return (opts.nested ? (run: () => Promise<CliResult>) => run() : limited<CliResult>)(
    () =>
      new Promise((resolve, reject) => {
        const child = spawn(process.execPath, ['--import=tsx', join(root, 'cli.ts'), ...args], { cwd: root, env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] })
        let stdout = ''
        let stderr = ''
        let fired = false
        child.stdout.setEncoding('utf8').on('data', (d: string) => {
          stdout += d
          if (opts.onStdout && !fired && stdout.includes(opts.onStdout.text)) {
            fired = true
            opts.onStdout.then(child)
          }
        })
        child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
        child.on('error', reject)
        child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr }))
        child.stdin.on('error', () => {})
        child.stdin.end(opts.input ?? '')
      }),
  )
}

/**
 * `isolate ARGS...` with a terminal of its own for stdin, stdout and stderr (a pseudo-terminal a
 * Python launcher opens with pty.fork): every byte that terminal shows, and the exit status.
 */
export function cliUnderTerminal(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ status: number; bytes: Buffer }> {
  const launcher = [
    'import os, pty, sys',
    'pid, fd = pty.fork()',
    'if pid == 0: os.execv(sys.argv[1], sys.argv[1:])',
    'out = b""',
    'while True:',
    '  try: chunk = os.read(fd, 4096)',
    '  except OSError: chunk = b""',
    '  if not chunk: break',
    '  out += chunk',
    '_, status = os.waitpid(pid, 0)',
    'sys.stdout.write(str(os.waitstatus_to_exitcode(status)) + "\\n" + out.hex())',
  ].join('\n')
  return limited(
    () =>
      new Promise((resolve, reject) => {
        const child = spawn('python3', ['-c', launcher, process.execPath, '--import=tsx', join(root, 'cli.ts'), ...args], { cwd: root, env, stdio: ['ignore', 'pipe', 'inherit'] })
        let text = ''
        child.stdout.setEncoding('utf8').on('data', (d: string) => (text += d))
        child.on('error', reject)
        child.on('close', () => {
          const [status, hex] = text.split('\n')
          resolve({ status: Number(status), bytes: Buffer.from(hex ?? '', 'hex') })
        })
      }),
  )
}
