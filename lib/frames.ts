/**
 * The frames `isolate exec`, `rm` and `ps` exchange with a sandbox's keeper over its unix socket:
 * `[type u8][length u32 BE][payload]`. Control frames carry JSON; stdio frames carry raw bytes.
 */

export const Frame = {
  // client → keeper
  /** The one request of a connection (JSON `KeeperRequest`). */
  REQUEST: 0x01,
  STDIN: 0x02,
  /** The client's stdin ended (no payload). */
  STDIN_EOF: 0x03,
  /** JSON `{ cols, rows }`. */
  RESIZE: 0x04,
  /** A signal name (`SIGINT`) for the exec'd process. */
  SIGNAL: 0x05,
  // keeper → client
  /** The command runs: JSON `{ pid }`. */
  START: 0x11,
  STDOUT: 0x12,
  STDERR: 0x13,
  /** The command ended: JSON `ExecExit`. The last frame of an exec. */
  EXIT: 0x14,
  /** JSON of an `IsolateError` (`toJSON()`); the last frame of its request. */
  ERROR: 0x15,
  /** The answer to `info` or `rm` (JSON). */
  REPLY: 0x16,
  /**
   * How many bytes of STDIN the command's stdin took (u32 BE), for a client whose request asked
   * for them (`stdinAcks`): such a client keeps at most STDIN_WINDOW bytes unacknowledged, so the
   * keeper never stops reading the connection for a command that does not read its stdin, and
   * its signals and its end are always heard.
   */
  STDIN_ACK: 0x17,
} as const

/** The most stdin bytes a client sends ahead of the keeper's acknowledgements. */
export const STDIN_WINDOW = 1 << 20

export function ackFrame(bytes: number): Buffer {
  const n = Buffer.allocUnsafe(4)
  n.writeUInt32BE(bytes, 0)
  return encodeFrame(Frame.STDIN_ACK, n)
}

export type FrameType = (typeof Frame)[keyof typeof Frame]

/** Larger frames are a broken peer, not data: stdio is sent in chunks far below this. */
export const MAX_FRAME = 16 << 20

export function encodeFrame(type: number, payload: Uint8Array | string = Buffer.alloc(0)): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload
  const head = Buffer.allocUnsafe(5)
  head.writeUInt8(type, 0)
  head.writeUInt32BE(body.length, 1)
  return Buffer.concat([head, body])
}

export function jsonFrame(type: number, value: unknown): Buffer {
  return encodeFrame(type, JSON.stringify(value))
}

/** Cuts a byte stream into frames, however it was split into chunks. */
export class FrameDecoder {
  #pending: Buffer[] = []
  #size = 0

  /** Every whole frame that `chunk` completes, in order. Throws on a frame longer than MAX_FRAME. */
  push(chunk: Buffer): Array<{ type: number; payload: Buffer }> {
    this.#pending.push(chunk)
    this.#size += chunk.length
    const out: Array<{ type: number; payload: Buffer }> = []
    if (this.#size < 5) return out
    let buf = this.#pending.length === 1 ? this.#pending[0] : Buffer.concat(this.#pending, this.#size)
    let off = 0
    while (buf.length - off >= 5) {
      const len = buf.readUInt32BE(off + 1)
      if (len > MAX_FRAME) throw new Error(`frame of ${len} bytes is longer than the ${MAX_FRAME} allowed`)
      if (buf.length - off < 5 + len) break
      out.push({ type: buf[off], payload: buf.subarray(off + 5, off + 5 + len) })
      off += 5 + len
    }
    buf = buf.subarray(off)
    this.#pending = buf.length ? [buf] : []
    this.#size = buf.length
    return out
  }

  /** Bytes of an unfinished frame. */
  get buffered(): number {
    return this.#size
  }
}

/** Each frame arriving on `conn`, in order; a malformed stream ends the connection. */
export function onFrames(conn: import('node:net').Socket, fn: (type: number, payload: Buffer) => void): void {
  const decoder = new FrameDecoder()
  conn.on('data', (chunk: Buffer) => {
    let frames
    try {
      frames = decoder.push(chunk)
    } catch {
      conn.destroy()
      return
    }
    for (const { type, payload } of frames) {
      if (conn.destroyed) return
      fn(type, payload)
    }
  })
}
