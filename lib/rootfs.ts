/**
 * Root filesystems from tarballs (`unpackRootfs`) and OCI/Docker images (`importImage`).
 *
 * The work happens in the `isolate-image` executable that ships beside the helper, started with
 * posix_spawn by the addon (never a fork of Node, no libuv pool thread held for the minutes a
 * large image can take). That process opens the archive and the target directory, confines itself
 * with Landlock to writing beneath that directory, and only then decompresses and unpacks, so the
 * C decompressors (liblzma, zstd) parse hostile input outside Node's address space and outside
 * the rest of the filesystem. It reports progress and its result as JSON lines on a pipe, which
 * this module reads on the event loop. Aborting kills it.
 *
 * Failures are `IsolateError`s with `code` `ERR_ISOLATE_SETUP` and `step` one of: `open_archive`
 * (the archive, image or target directory could not be opened, or is of an unsupported kind),
 * `read_archive` (decompression or tar parsing failed), `check_entry` (an entry was refused for
 * what it is: `path` is its name as written in the archive and the message names the trick),
 * `write_entry` (a syscall creating an entry failed; `errno` says which), `read_image` (index,
 * manifest or config unreadable, or no image matches `platform`/`ref`), `verify_digest` (a blob or
 * a layer's uncompressed content does not match its sha256).
 *
 * Ownership: as root, files get the uid/gid numbers recorded in the archive. Without root,
 * ownership cannot be set: every file is owned by the caller, which is exactly how a rootless
 * sandbox sees it (the caller's uid is root inside). Setuid/setgid bits are dropped from every
 * regular file either way: the tree is on the host, where a root-owned setuid file from an
 * archive would make root of any local user who can reach it (inside a sandbox they grant nothing). Extended attributes (file capabilities included)
 * are not restored: sandboxes run with no_new_privs, where they would have no effect.
 */
import { accessSync, constants, lstatSync, realpathSync } from 'node:fs'
import { rmdir } from 'node:fs/promises'
import { Socket } from 'node:net'
import { dirname, join, resolve } from 'node:path'
import { abortReason, isAbortSignal, isAborted, whenAborted } from './abort.js'
import { callersOptions, IsolateError, optionError, shown } from './errors.js'
import { loadNative, type Addon, type Native, type SpawnedHelper } from './native.js'
import { LONE_SURROGATE } from './options.js'

export interface UnpackProgress {
  /** `decompress`: a compressed image archive is decompressed first; `verify`: layer digests are checked before anything is written; `unpack`: entries are written. */
  phase: 'decompress' | 'verify' | 'unpack'
  /** Bytes of the archive (as stored, i.e. compressed) consumed in this phase. */
  bytes: number
  /** The phase's total; 0 when unknown (the archive is a pipe). */
  totalBytes: number
  /** Entries unpacked so far. */
  entries: number
  /** Image imports: the layer being verified or unpacked (0 = bottom), and how many there are. */
  layer?: number
  layers?: number
}

export interface UnpackOptions {
  /** Called at most about ten times a second, and once at the end. */
  onProgress?: (progress: UnpackProgress) => void
  /** Character/block devices and fifos: `'refuse'` the archive (default) or `'skip'` them. A sandbox gets its own minimal /dev either way. */
  specialFiles?: 'refuse' | 'skip'
  /** `'archive'`: the uid/gid numbers recorded in the archive (root only; the default as root). `'caller'`: the caller's own ids (the default, and the only choice, without root). */
  ownership?: 'archive' | 'caller'
  /**
   * The most bytes of file content the call may write, all layers together (each regular file at
   * its size, runs of zeros written as holes included; also the importer's own layers.json): past
   * it the call fails at `write_entry` with `EFBIG`, and a DIR it made is removed. A compressed
   * image archive is first decompressed to a copy in DIR, which may then hold at most twice this,
   * 2 KiB per `maxEntries` and 64 MiB (else `read_archive`, `EFBIG`). Default: none but the
   * filesystem's (a few KiB of zstd hold gigabytes of one repeated byte): set it, with
   * `maxEntries` and a `signal`, for archives you do not trust. Decompression to check an image's
   * digests before anything is written is bounded in time by the `signal` only.
   */
  maxBytes?: number
  /**
   * The most entries the call may read and directories it may make, all layers together: each
   * entry, each directory an entry's path implies (an archive that names `a/b/c/f` alone makes
   * four), and the importer's own (`layers/<n>`); past it the call fails at `check_entry` with
   * `EFBIG` (at most one entry's directories past it), and a DIR it made is removed. Default:
   * none (a gzip of millions of empty files takes a filesystem's inodes).
   */
  maxEntries?: number
  /** Stops the unpacker (killed if it has not stopped within 2 s); the promise rejects with `ABORT_ERR` (a DIR the call made is removed, unless the unpacker had to be killed; one that was there may hold a partial tree). */
  signal?: AbortSignal
}

export interface UnpackStats {
  /** Entries read from the archive (all layers). */
  entries: number
  files: number
  directories: number
  symlinks: number
  hardlinks: number
  /** Image layers: `.wh.` entries applied (flat) or converted to overlayfs whiteouts (layers). */
  whiteouts: number
  /** Bytes of file content written. */
  bytes: number
  /** Regular files whose setuid/setgid bits were dropped. */
  setidDropped: number
  /** Special files skipped (`specialFiles: 'skip'`). */
  skipped: number
  /** Directories made that no entry named (an entry's missing parents; an import's `layers/<n>`): `maxEntries` counts them with `entries`. */
  impliedDirectories: number
}

export interface UnpackResult extends UnpackStats {
  /** The target directory, absolute. */
  dir: string
  /** The compression, told by the archive's first bytes. */
  format: 'tar' | 'gzip' | 'xz' | 'zstd'
  ownership: 'archive' | 'caller'
  /** How the unpacker was confined: `landlock (ABI n)`, or `none: <why>`. */
  confinement: string
}

export interface ImportOptions extends UnpackOptions {
  /** `os/arch[/variant]` (`linux/arm64`); default: this host's. */
  platform?: string
  /** Which image, when the layout or archive holds several: an OCI `org.opencontainers.image.ref.name` annotation or a docker `RepoTags` entry. */
  ref?: string
  /**
   * `'flat'` (default): all layers merged into DIR, a plain rootfs.
   * `'layers'`: each layer in DIR/layers/<n>/ (0 = bottom) in overlayfs form (`.wh.` entries
   * become char 0/0 devices, opaque directories get `user.overlay.opaque=y`, and as root also
   * `trusted.overlay.opaque=y`), plus DIR/layers.json naming the lower directories in `lowerdir=`
   * order; mount them with the `userxattr` option. Nothing is copied into an upper layer.
   */
  layout?: 'flat' | 'layers'
}

export interface ImageLayer {
  /** 0 = bottom. */
  index: number
  /** sha256 of the blob as stored, when the format names it (OCI, Docker 25+). */
  digest?: string
  /** sha256 of the uncompressed tar (the config's `rootfs.diff_ids`). */
  diffId?: string
  mediaType?: string
  size: number
  compression: 'tar' | 'gzip' | 'xz' | 'zstd'
  entries: number
  /** Layout `'layers'`: the layer's directory (absolute). */
  dir?: string
}

/** What the image says a container runs with (empty when it says nothing). */
export interface ImageConfig {
  env: string[]
  entrypoint: string[]
  cmd: string[]
  workingDir: string
  user: string
}

export interface ImportResult extends UnpackStats {
  dir: string
  format: 'oci' | 'docker'
  layout: 'flat' | 'layers'
  /** The image's platform, as its config states it. */
  platform: string
  /** OCI: the digest of the manifest imported. */
  manifestDigest?: string
  layers: ImageLayer[]
  config: ImageConfig
  /** Layout `'layers'`: the layer directories, absolute, topmost first (overlayfs `lowerdir=` order). */
  lowerDirs?: string[]
  ownership: 'archive' | 'caller'
  confinement: string
}

type ToolEvent =
  | ({ event: 'progress' } & UnpackProgress)
  | { event: 'locked'; made: boolean }
  | { event: 'emptied' }
  | { event: 'done'; result: Record<string, unknown> }
  | { event: 'error'; error: { step: string; path?: string; errno?: string; message: string; hint?: string } }

const TOOL_FILE = 'isolate-image'

type ImageAddon = Addon & {
  spawnImageTool?: (toolPath: string, args: string[], made?: string) => SpawnedHelper
  settleMade?: (dir: string) => void
  endUnreaped?: () => void
}

/** `isolate-image`, shipped beside the helper and the addon (`ISOLATE_IMAGE_TOOL_PATH` overrides). */
function toolPath(native: Native): string {
  const env = process.env.ISOLATE_IMAGE_TOOL_PATH
  const candidates = env ? [resolve(env)] : [...new Set([join(dirname(native.helperPath), TOOL_FILE), join(dirname(native.addonPath), TOOL_FILE)])]
  let errno: string | undefined
  for (const path of candidates) {
    try {
      accessSync(path, constants.X_OK)
      return path
    } catch (e) {
      errno ??= (e as NodeJS.ErrnoException).code
    }
  }
  throw new IsolateError(`the image tool is missing or not executable: looked for ${candidates.join(' and ')}`, {
    code: 'ERR_ISOLATE_NATIVE',
    path: candidates[0],
    errno,
    hint: env ? 'ISOLATE_IMAGE_TOOL_PATH must name the isolate-image executable' : 'reinstall @isolate/core, or build it here with `npm run build:native` (isolate-image ships beside isolate-helper)',
  })
}

function abortError(signal: AbortSignal): IsolateError {
  return new IsolateError('the unpack was aborted', { code: 'ABORT_ERR', cause: abortReason(signal) })
}

let endsAtExit = false

/**
 * The tool run into `target`. A target its tool made is emptied by the tool when the call fails
 * (by descriptors, symlinks the archive left unlinked, never followed), and removed here (the
 * tool, confined beneath it, cannot remove the directory itself). Should this thread be torn
 * down, or the process exit, before the call settles, the addon asks the tool to stop, which
 * cleans up the same way, and removes that target if empty (crates/napi/src/unreaped.rs).
 */
async function runInto(target: string, what: string, args: string[], options: UnpackOptions): Promise<Record<string, unknown>> {
  const exists = (p: string) => {
    try {
      lstatSync(p)
      return true
    } catch {
      return false
    }
  }
  const existed = exists(target)
  // The directories above it the tool will make (mkdir -p), nearest first.
  const above: string[] = []
  for (let p = dirname(target); !existed && p !== dirname(p) && !exists(p); p = dirname(p)) above.push(p)
  const addon = loadNative().addon as ImageAddon
  if (!endsAtExit) {
    // Node runs no cleanup hook of the main thread's at an exit.
    process.once('exit', () => addon.endUnreaped?.())
    endsAtExit = true
  }
  const seen = { made: false, emptied: false }
  try {
    return await runTool(what, args, options, existed ? undefined : target, seen)
  } catch (e) {
    // Only a directory this call's tool made is this call's to remove, and the tool emptied it
    // itself while it held it (by descriptors: no path too deep); what is left is an empty
    // directory, and those above it that the call made. A tool that had to be killed left its
    // tree, named in the error. The tool's error is the one that counts.
    if (seen.made) {
      const removed = await rmdir(target).then(() => true, (r: NodeJS.ErrnoException) => r.code === 'ENOENT')
      if (!removed && e instanceof Error) e.message += ` (and ${target}, which this call made, holds what was unpacked: ${seen.emptied ? 'something else wrote into it meanwhile' : 'the unpacker was killed before it could remove it'})`
      // Those above it too, while empty (anything another process put there meanwhile stays).
      if (removed) for (const dir of above) if (!(await rmdir(dir).then(() => true, () => false))) break
    }
    throw e
  } finally {
    if (!existed) addon.settleMade?.(target)
  }
}

/** How long an image tool asked to stop (SIGTERM) has before it is killed. */
const KILL_AFTER_MS = 2_000

/**
 * The longest report line of the image tool that is read: its `done` line holds the image's
 * runtime config, from a config blob of at most 16 MiB (crates/image/src/source.rs SMALL_LIMIT),
 * which JSON may write up to 6 times as long (`\u0001`); the other lines are short.
 */
const MAX_REPORT_LINE = 7 * (16 << 20)

/** Run the tool with `args`; resolves with its `done` result. */
function runTool(what: string, args: string[], options: UnpackOptions, made: string | undefined, seen: { made: boolean; emptied: boolean }): Promise<Record<string, unknown>> {
  const { onProgress, signal } = options
  if (isAborted(signal)) return Promise.reject(abortError(signal!))
  const native = loadNative()
  const addon = native.addon as ImageAddon
  if (typeof addon.spawnImageTool !== 'function') {
    return Promise.reject(new IsolateError('this build of the addon cannot start the image tool', { code: 'ERR_ISOLATE_NATIVE', hint: 'rebuild it with `npm run build:native`' }))
  }
  const path = toolPath(native)
  let h: SpawnedHelper
  try {
    h = addon.spawnImageTool(path, args, made)
  } catch (e) {
    return Promise.reject(new IsolateError(`could not start the image tool: ${(e as Error).message}`, { code: 'ERR_ISOLATE_NATIVE', path, cause: e }))
  }
  const pid = h.pid
  return new Promise((resolvePromise, rejectPromise) => {
    const socket = new Socket({ fd: h.control, readable: true, writable: false })
    let buffered = ''
    let result: Record<string, unknown> | undefined
    let failure: IsolateError | undefined
    let last: UnpackProgress | undefined
    const stray: string[] = []
    let reaped = false
    // SIGTERM first: the tool stops at its next read and empties a target it made while it still
    // holds it; one that does not end within KILL_AFTER_MS (a read stuck on a hung filesystem) is
    // killed, its tree left.
    const send = (name: NodeJS.Signals) => {
      if (reaped) return
      try {
        process.kill(pid, name)
      } catch {
        // already gone
      }
    }
    const kill = () => {
      send('SIGTERM')
      setTimeout(() => send('SIGKILL'), KILL_AFTER_MS).unref()
    }
    const reap = (delay = 0): void => {
      if ((reaped = addon.reapHelper(pid, false))) return
      setTimeout(() => reap(Math.min(delay * 2 + 1, 100)), delay).unref()
    }
    const onAbort = () => {
      failure ??= abortError(signal!)
      kill()
    }
    const forgetAbort = signal ? whenAborted(signal, onAbort) : () => {}

    const handle = (line: string) => {
      let ev: ToolEvent
      try {
        ev = JSON.parse(line) as ToolEvent
      } catch {
        if (line.trim()) stray.push(line)
        return
      }
      if (ev.event === 'progress') {
        const { event: _, ...p } = ev
        last = p
        if (onProgress && !failure) {
          try {
            onProgress(p)
          } catch (e) {
            // The caller's callback failed: stop, and hand that error back.
            failure = e instanceof IsolateError ? e : new IsolateError(`onProgress threw: ${(e as Error)?.message ?? String(e)}`, { code: 'ERR_ISOLATE_OPTION', option: 'onProgress', cause: e })
            kill()
          }
        }
      } else if (ev.event === 'locked') {
        seen.made = ev.made === true
      } else if (ev.event === 'emptied') {
        seen.emptied = true
      } else if (ev.event === 'done') {
        result = ev.result
      } else if (ev.event === 'error') {
        const { step, path: entry, errno, message, hint } = ev.error
        failure ??= new IsolateError(`${what}: ${message}`, { code: 'ERR_ISOLATE_SETUP', step, path: entry, errno, hint })
      }
    }

    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => {
      // Only the new chunk is searched: a line the tool draws out (an entry's name is any length
      // an archive gives) costs its length once, not once per chunk.
      let start = 0
      for (let nl = chunk.indexOf('\n'); nl >= 0; nl = chunk.indexOf('\n', start)) {
        handle(buffered + chunk.slice(start, nl))
        buffered = ''
        start = nl + 1
      }
      buffered += chunk.slice(start)
      if (buffered.length > MAX_REPORT_LINE) {
        buffered = ''
        failure ??= new IsolateError(`${what}: the image tool wrote a report line of more than ${MAX_REPORT_LINE} bytes`, { code: 'ERR_ISOLATE_HELPER', path })
        kill()
      }
    })
    socket.on('error', () => {})
    socket.on('close', () => {
      if (buffered) handle(buffered)
      reap()
      forgetAbort()
      if (failure) return rejectPromise(failure)
      if (!result) {
        const said = stray.length ? `: ${stray.join('\n').slice(0, 2000)}` : ''
        return rejectPromise(new IsolateError(`${what}: the image tool ended without reporting${said}`, { code: 'ERR_ISOLATE_HELPER', path }))
      }
      if (onProgress) {
        const total = last?.totalBytes ?? 0
        try {
          onProgress({ phase: 'unpack', bytes: total, totalBytes: total, entries: Number(result.entries ?? 0), ...(last?.layers === undefined ? {} : { layer: last.layers - 1, layers: last.layers }) })
        } catch (e) {
          return rejectPromise(new IsolateError(`onProgress threw: ${(e as Error)?.message ?? String(e)}`, { code: 'ERR_ISOLATE_OPTION', option: 'onProgress', cause: e }))
        }
      }
      resolvePromise(result)
    })
  })
}

function checkPath(option: string, value: unknown): string {
  if (typeof value !== 'string' || value === '') throw optionError(option, `expected a path, got ${shown(value)}`)
  if (value.includes('\0')) throw optionError(option, 'the path contains a NUL byte')
  // A lone surrogate has no UTF-8: the path would be written with U+FFFD in its place.
  if (LONE_SURROGATE.test(value)) throw optionError(option, 'the path holds a lone UTF-16 surrogate, which has no UTF-8 form')
  return resolve(value)
}

/** The target directory: never the host's root, whose files an archive would replace. */
function checkTarget(dir: unknown): string {
  const target = checkPath('dir', dir)
  let real = target
  try {
    real = realpathSync(target)
  } catch {}
  if (real === '/') throw optionError('dir', `${shown(dir)} is the host's root directory: an archive would replace the host's files; name a directory of its own`)
  return target
}

const UNPACK_OPTIONS = ['onProgress', 'specialFiles', 'ownership', 'signal', 'maxBytes', 'maxEntries']
const IMPORT_OPTIONS = [...UNPACK_OPTIONS, 'platform', 'ref', 'layout']

function commonArgs(options: UnpackOptions): string[] {
  const args: string[] = []
  // Checked here, before the tool starts: found after, it would go on unpacking, unwatched.
  if (options.signal !== undefined && !isAbortSignal(options.signal)) throw optionError('signal', 'expected an AbortSignal')
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') throw optionError('onProgress', 'expected a function')
  if (options.specialFiles !== undefined) {
    if (options.specialFiles !== 'refuse' && options.specialFiles !== 'skip') throw optionError('specialFiles', `expected 'refuse' or 'skip', got ${shown(options.specialFiles)}`)
    args.push('--special', options.specialFiles)
  }
  if (options.ownership !== undefined) {
    if (options.ownership !== 'archive' && options.ownership !== 'caller') throw optionError('ownership', `expected 'archive' or 'caller', got ${shown(options.ownership)}`)
    if (options.ownership === 'archive' && process.getuid?.() !== 0) {
      throw new IsolateError("options.ownership: 'archive' (the archive's uid/gid numbers) needs root; without it every file is owned by the caller, whom a sandbox maps to root", {
        code: 'ERR_ISOLATE_UNSUPPORTED',
        option: 'ownership',
      })
    }
    args.push('--ownership', options.ownership)
  }
  for (const [option, flag] of [['maxBytes', '--max-bytes'], ['maxEntries', '--max-entries']] as const) {
    const v = options[option]
    if (v === undefined) continue
    if (!(Number.isSafeInteger(v) && v > 0)) throw optionError(option, `expected a whole number above 0, got ${shown(v)}`)
    args.push(flag, String(v))
  }
  return args
}

/**
 * Unpack the root filesystem tarball `tarball` (tar, or tar compressed with gzip, xz or zstd; told
 * by its first bytes, not its name) into `dir` (created if missing, the caller's whatever owner
 * the archive's `./` names, without group or other write or set-id bits; an existing tree, the caller's and
 * writable by no one else, is unpacked over, as tar would, but keeps its own owner and mode; not a
 * symlink, which is refused rather than followed; never the host's root, `/`, refused as an option). Modes, symlinks, hard links and mtimes are kept, and as root the ownership.
 *
 * A hostile archive cannot write outside `dir`: absolute names, `..` components, writing through
 * a symlink (`a -> /etc` then `a/passwd`), hard links to paths outside, and device nodes or fifos
 * are refused with an {@link IsolateError} (`code` `ERR_ISOLATE_SETUP`, `step` `check_entry`,
 * `path` the entry's name, a message naming the trick). Symlinks are created as they are (an
 * absolute target is resolved inside the sandbox later) and never followed while unpacking.
 * On a failure, a `dir` this call created is removed again; an existing one may hold a partial tree.
 * So it is when the worker thread that called it is terminated, or the process exits, first.
 * A second unpack or import into a directory that one is writing is refused (`open_archive`,
 * `errno` `EBUSY`), in this process or another.
 */
export async function unpackRootfs(tarball: string, dir: string, options: UnpackOptions = {}): Promise<UnpackResult> {
  options = callersOptions(options, 'unpackRootfs', UNPACK_OPTIONS)
  const common = commonArgs(options)
  const input = checkPath('tarball', tarball)
  const target = checkTarget(dir)
  const args = ['unpack', ...common, '--', input, target]
  const r = await runInto(target, `cannot unpack ${input}`, args, options)
  return { ...(r as unknown as UnpackResult), dir: target }
}

/**
 * Turn an OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/...`) or a
 * `docker save` archive (plain or compressed) into a root filesystem in `dir` (created if missing;
 * it must be empty, and as for {@link unpackRootfs} the caller's, no symlink). Layers are applied in order with their whiteouts; every digest the format
 * gives is checked (blobs before anything is written; OCI diff_ids while unpacking), and a mismatch
 * is refused (`step` `verify_digest`). See {@link ImportOptions.layout} for one directory per layer.
 * On a failure, a `dir` this call created is removed again, also when the worker thread that
 * called it is terminated, or the process exits, first. A second unpack or import into a
 * directory that one is writing is refused (`open_archive`, `errno` `EBUSY`).
 */
export async function importImage(image: string, dir: string, options: ImportOptions = {}): Promise<ImportResult> {
  options = callersOptions(options, 'importImage', IMPORT_OPTIONS)
  const common = commonArgs(options)
  const input = checkPath('image', image)
  const target = checkTarget(dir)
  const args = ['import', ...common]
  if (options.platform !== undefined) {
    // [os/]arch[/variant] (an arch alone is Linux's), no NUL: an argument of the tool.
    if (typeof options.platform !== 'string' || !/^[^/\s\0]+(\/[^/\s\0]+){0,2}$/.test(options.platform) || options.platform.length > 256) throw optionError('platform', `expected 'os/arch[/variant]' such as 'linux/arm64', got ${shown(options.platform)}`)
    args.push('--platform', options.platform)
  }
  if (options.ref !== undefined) {
    // An image name (OCI refs and docker tags are short): no NUL, no lone surrogate, not megabytes.
    if (typeof options.ref !== 'string' || options.ref === '' || options.ref.includes('\0') || LONE_SURROGATE.test(options.ref) || options.ref.length > 4096) {
      throw optionError('ref', `expected an image name (at most 4096 characters, no NUL), got ${shown(options.ref)}`)
    }
    args.push('--ref', options.ref)
  }
  if (options.layout !== undefined) {
    if (options.layout !== 'flat' && options.layout !== 'layers') throw optionError('layout', `expected 'flat' or 'layers', got ${shown(options.layout)}`)
    args.push('--layout', options.layout)
  }
  args.push('--', input, target)
  const r = (await runInto(target, `cannot import ${input}`, args, options)) as unknown as ImportResult
  const abs = (p: string) => join(target, p)
  return {
    ...r,
    dir: target,
    layers: r.layers.map((l) => (l.dir === undefined ? l : { ...l, dir: abs(l.dir) })),
    ...(r.lowerDirs === undefined ? {} : { lowerDirs: r.lowerDirs.map(abs) }),
  }
}
