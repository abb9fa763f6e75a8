/**
 * The output of a command run to its end (`runIsolated`, `sb.exec`), collected in Node up to a
 * bound: without one, a command that writes without end would grow the caller until the host
 * kills it, and a sandbox's memory limit does not count what Node holds.
 */
import type { Readable } from 'node:stream'
import { finished } from 'node:stream/promises'
import { isArrayOption, optionError, ownOptions, shown, withoutKeys } from './errors.js'

/** stdout and stderr together; `child_process.execFile`'s 1 MiB is too small for a code runner. */
const DEFAULT_MAX_BUFFER = 64 << 20

/** `maxBuffer` of runIsolated and sb.exec. */
function maxBufferOption(v: unknown): number {
  if (v === undefined) return DEFAULT_MAX_BUFFER
  if (v === Infinity || (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0)) return v
  throw optionError('maxBuffer', `must be a whole number of bytes (stdout and stderr together) or Infinity for no bound, got ${shown(v)}`)
}

export interface RunOutput {
  input: string | Uint8Array
  encoding: BufferEncoding | 'buffer'
  maxBuffer: number
}

/**
 * The options of runIsolated and sb.exec that say what goes in and how the output comes back,
 * split from those of the spawn they make and checked before it: a bad one found after the
 * spawn would leave its sandbox running.
 */
export function splitRunOptions<T extends object>(options: unknown): { run: RunOutput; rest: T } {
  if (options === undefined) options = {}
  if (typeof options !== 'object' || options === null || isArrayOption('', options)) throw optionError('', 'must be an object')
  options = ownOptions(options)
  const { input = '', encoding = 'utf8', maxBuffer } = options as Record<string, unknown>
  // Without a prototype, as ownOptions made it (an object rest would get Object.prototype again
  // and lose what a class's getters gave).
  const rest = withoutKeys(options as object, ['input', 'encoding', 'maxBuffer'])
  // A Uint8Array of another realm (a vm context's) is one too; it is written as this realm's.
  const foreign = !(input instanceof Uint8Array) && ArrayBuffer.isView(input) && Object.prototype.toString.call(input) === '[object Uint8Array]'
  if (typeof input !== 'string' && !(input instanceof Uint8Array) && !foreign) throw optionError('input', `must be a string, a Buffer or a Uint8Array, got ${typeof input}`)
  if (encoding !== 'buffer' && !(typeof encoding === 'string' && Buffer.isEncoding(encoding))) throw optionError('encoding', `must be 'buffer' or a Buffer encoding such as 'utf8', got ${shown(encoding)}`)
  // A caller who bounds the output in the helper (limits.outputBytes, exact) gets no second,
  // smaller bound here unless asking for one.
  const stdio = rest.stdio as unknown
  const stdin = Array.isArray(stdio) ? stdio[0] : stdio
  if ((options as { input?: unknown }).input !== undefined && stdin !== undefined && stdin !== 'pipe') {
    throw optionError('input', `is written to the command's stdin, which needs stdio[0] 'pipe', not ${shown(stdin)}`)
  }
  const bounded = maxBuffer === undefined && typeof (rest.limits as { outputBytes?: unknown } | undefined)?.outputBytes === 'number'
  const bytes = foreign ? Buffer.from((input as Uint8Array).buffer, (input as Uint8Array).byteOffset, (input as Uint8Array).byteLength) : (input as string | Uint8Array)
  return { run: { input: bytes, encoding, maxBuffer: bounded ? Infinity : maxBufferOption(maxBuffer) }, rest: rest as T }
}

/** What the command wrote, as the caller asked for it. */
export function decode(b: Buffer, encoding: RunOutput['encoding']): string | Buffer {
  return encoding === 'buffer' ? b : b.toString(encoding)
}

/** The largest block {@link Bytes} copies into. */
const BLOCK = 64 << 10

/**
 * The bytes of one stream, copied into blocks as they come. Each chunk Node reads is an object of
 * its own, some 400 bytes of Node's memory whatever its length: kept as they came, the chunks of a
 * command that writes a byte at a time made Node hold hundreds of times what `maxBuffer` counts
 * (gigabytes for its default). Blocks grow from 256 bytes to 64 KiB, so a short output stays small
 * and at most one block is part empty.
 */
class Bytes {
  private readonly full: Buffer[] = []
  private block = Buffer.alloc(0)
  private used = 0
  private next = 256
  length = 0

  push(c: Buffer): void {
    for (let at = 0; at < c.length; ) {
      if (this.used === this.block.length) {
        if (this.used > 0) this.full.push(this.block)
        this.block = Buffer.allocUnsafe(this.next)
        this.used = 0
        this.next = Math.min(this.next * 2, BLOCK)
      }
      const n = c.copy(this.block, this.used, at)
      this.used += n
      at += n
    }
    this.length += c.length
  }

  concat(): Buffer {
    return Buffer.concat([...this.full, this.block.subarray(0, this.used)], this.length)
  }
}

export interface Collected {
  stdout: Buffer
  stderr: Buffer
  /** More than the bound came: what is kept is its first `maxBuffer` bytes, both streams together. */
  overflowed: boolean
  /** `cutAt` came first: what is kept is what came before it. */
  cut: boolean
}

/**
 * Read both streams to their end, keeping at most `maxBuffer` bytes of the two together. The
 * first byte past it calls `overflow` once: the caller kills the command, and the promise it
 * returns settles when the command has ended. What comes meanwhile is read and dropped; then
 * both streams are closed: a process the command left behind that holds them dies of SIGPIPE
 * when it writes again, and Node does not wait for it to close them. (Closed at once, they let
 * the command itself die of SIGPIPE before the kill landed, and end as if it had exited so.)
 */
export function collectOutput(stdout: Readable | null, stderr: Readable | null, maxBuffer: number, overflow: () => Promise<unknown>, cutAt?: Promise<unknown>): Promise<Collected> {
  let left = maxBuffer
  let overflowed = false
  let cut = false
  const streams = [stdout, stderr].filter((s): s is Readable => s !== null)
  // Streams still open then are closed, as at the bound: whoever holds them gets SIGPIPE.
  void cutAt?.then(() => {
    if (overflowed || streams.every((s) => s.readableEnded || s.destroyed)) return
    cut = true
    for (const s of streams) s.destroy()
  }, () => {})
  const take = async (stream: Readable | null): Promise<Buffer> => {
    const chunks = new Bytes()
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
      const close = () => {
        for (const s of streams) s.destroy()
      }
      overflow().then(close, close)
    })
    // finished() also settles for a stream that ended before this was called.
    await finished(stream).catch((e: unknown) => {
      if (!overflowed && !cut) throw e
    })
    return chunks.concat()
  }
  return Promise.all([take(stdout), take(stderr)]).then(([out, err]) => ({ stdout: out, stderr: err, overflowed, cut }))
}
