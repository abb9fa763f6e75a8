/**
 * The output of a command run to its end (`runIsolated`, `sb.exec`), collected in Node up to a
 * bound: without one, a command that writes without end would grow the caller until the host
 * kills it, and a sandbox's memory limit does not count what Node holds.
 */
import type { Readable } from 'node:stream'
import { finished } from 'node:stream/promises'
import { optionError } from './errors.js'

/** stdout and stderr together; `child_process.execFile`'s 1 MiB is too small for a code runner. */
export const DEFAULT_MAX_BUFFER = 64 << 20

/** `maxBuffer` of runIsolated and sb.exec, checked before anything starts. */
export function maxBufferOption(v: unknown): number {
  if (v === undefined) return DEFAULT_MAX_BUFFER
  if (v === Infinity || (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0)) return v
  throw optionError('maxBuffer', `must be a whole number of bytes (stdout and stderr together) or Infinity for no bound, got ${String(v)}`)
}

export interface Collected {
  stdout: Buffer
  stderr: Buffer
  /** More than the bound came: what is kept is its first `maxBuffer` bytes, both streams together. */
  overflowed: boolean
}

/**
 * Read both streams to their end, keeping at most `maxBuffer` bytes of the two together. The
 * first byte past it calls `overflow` (the caller kills the command) once and closes both
 * streams: a process the command left behind that holds them dies of SIGPIPE when it writes
 * again, and Node does not wait for it to close them.
 */
export function collectOutput(stdout: Readable | null, stderr: Readable | null, maxBuffer: number, overflow: () => void): Promise<Collected> {
  let left = maxBuffer
  let overflowed = false
  const streams = [stdout, stderr].filter((s): s is Readable => s !== null)
  const take = async (stream: Readable | null): Promise<Buffer> => {
    const chunks: Buffer[] = []
    if (!stream) return Buffer.alloc(0)
    stream.on('data', (c: Buffer) => {
      if (overflowed) return
      if (c.length <= left) {
        chunks.push(c)
        left -= c.length
        return
      }
      if (left > 0) chunks.push(c.subarray(0, left))
      left = 0
      overflowed = true
      overflow()
      for (const s of streams) s.destroy()
    })
    // finished() also settles for a stream that ended before this was called.
    await finished(stream).catch((e: unknown) => {
      if (!overflowed) throw e
    })
    return Buffer.concat(chunks)
  }
  return Promise.all([take(stdout), take(stderr)]).then(([out, err]) => ({ stdout: out, stderr: err, overflowed }))
}
