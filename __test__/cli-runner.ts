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
  return limited(
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
