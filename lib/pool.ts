/**
 * Warm helpers, made ahead where this process is root or may not create cgroups (see
 * {@link helperPool}): each has detected the host, created its sandbox's cgroup and moved a
 * zygote into it (the migration that costs an RCU grace period; where this process may not
 * create cgroups there is no cgroup and no migration), and the zygote has cloned an init ahead
 * into the namespaces of the root most recent sandboxes had (see {@link rootOf}; the default
 * ones when no root came twice), which has also built that root, so a sandbox taken from the
 * pool starts with no cgroup migration, no helper exec and (with those namespaces and that root)
 * no namespace creation and no mounts on its path (see crates/core/src/warm.rs; {@link aheadOf}
 * for what is made ahead). Each serves exactly one sandbox and is never reused; the pool refills
 * in the background (at idle priority where this process may undo it: root), once the start it
 * served is over, and the default pool grows
 * when a sandbox finds it empty. Pooled helpers do not keep Node alive, and end (removing
 * their cgroups) when Node exits, however it exits: their control socket is their lifeline.
 */
import { Socket } from 'node:net'
import { loadNative, takeWrapped, type Addon } from './native.js'
import { callersOptions, optionError } from './errors.js'
import type { Spec } from './options.js'
import { onEvents, reapHelper } from './sandbox.js'

export interface WarmHelper {
  /** To reap once it ends; 0 for one the helper server forked (the server reaps it). */
  pid: number
  /** The control socket, already wrapped (it said `warm` on it). */
  control: Socket
  /** The handoff socket: the spec and stdio go there (and a long-lived sandbox's execs). */
  handoff: number
  /**
   * Its init made ahead went (the host unmounted something that init's copy of the mount table
   * held, or it ended: killed, out of memory), or its zygote ended: it still serves, with a fresh
   * init, until a helper with an init ahead takes its place.
   */
  stale?: boolean
  /** When it got ready (Date.now()). */
  readyAt?: number
  /** This process's identity epoch when it was made (see `sendSpec`). */
  epoch?: number
}

export interface PoolOptions {
  /**
   * Warm helpers kept ready: a fixed number (0 turns the pool off), or unset for the default,
   * 2, growing by one each time a sandbox finds the pool empty, up to 4.
   */
  size?: number
}

const DEFAULT_SIZE = 2
/** After a warm helper failed to get ready, how long until the pool tries again, and at most. */
const RETRY_AFTER_MS = 5_000
const MAX_RETRY_AFTER_MS = 60_000
/**
 * After a helper's init made ahead went, how long the host's mount table must stay quiet before
 * a helper with an init ahead is made to replace it; doubled, up to a minute, while replacements
 * go stale within {@link SOON_AFTER_READY_MS} of getting ready (a host that mounts and unmounts all the
 * time: any change counts without listmount, Linux < 6.8).
 */
const STALE_QUIET_MS = 1_000
const MAX_STALE_QUIET_MS = 60_000
/** A helper that goes stale, or ends, this soon after it got ready came too soon: the wait before the next one doubles. */
const SOON_AFTER_READY_MS = 10_000
/** What the default size may grow to: a burst of starts then finds warm helpers. */
const GROWN_SIZE = 4

export class HelperPool {
  #size: number
  /** The default size, which grows when a sandbox finds the pool empty (not a size the caller set). */
  #grows: boolean
  readonly #ready: WarmHelper[] = []
  #starting = 0
  /**
   * Until when no warm helper is started, after one could not get ready: cold starts meanwhile.
   * A host that cannot have them costs one try per backoff (doubling up to a minute); a passing
   * failure (no fd or process to spare for a moment) does not turn the pool off for good.
   */
  #brokenUntil = 0
  #backoffMs: number
  /** The roots ({@link rootOf}) and namespaces of the last sandboxes, oldest first. */
  readonly #recent: Recent[] = []
  /** Specs taken since the last refill, folded into `#recent` by the next one: off the start's path. */
  #taken: Spec[] = []
  /** Until when stale helpers count as ready (no replacement is made), and the next such wait. */
  #staleQuietUntil = 0
  #staleQuietMs = STALE_QUIET_MS
  #staleTimer: NodeJS.Timeout | undefined
  /** Refills the place of a helper that ended while pooled. */
  #lostTimer: NodeJS.Timeout | undefined

  /** `eligible`: this host can have warm helpers (cgroups allowed); else the pool stays empty. */
  constructor(
    readonly addon: Addon,
    readonly helperPath: string,
    readonly eligible: boolean,
    size?: number,
    /** The first wait after a failure (tests shorten it). */
    readonly retryAfterMs = RETRY_AFTER_MS,
    /** How many sandbox starts are under way (tests give their own count). */
    readonly underway: () => number = () => startsUnderway,
  ) {
    this.#backoffMs = retryAfterMs
    this.#size = eligible ? (size ?? DEFAULT_SIZE) : 0
    this.#grows = eligible && size === undefined
  }

  get size(): number {
    return this.#size
  }

  /**
   * A warm helper, or undefined (the pool is empty, off, or this host cannot have one), for a
   * sandbox of `spec`. The caller refills the pool ({@link refillPool}) once the start it served
   * is over. A service that starts mostly one kind of sandbox gets refills whose init has that
   * root built already (the helper checks that it still fits; else that init goes).
   */
  take(spec: Spec): WarmHelper | undefined {
    this.#taken.push(spec)
    if (this.#taken.length > RECENT) this.#taken.shift()
    // One that still has its init made ahead first.
    const fresh = this.#ready.findIndex((r) => !r.stale)
    const h = this.#ready.splice(Math.max(fresh, 0), 1)[0]
    if (!h && this.#grows && !this.#broken() && this.#size < GROWN_SIZE) this.#size++
    if (h) {
      h.control.removeAllListeners('data').removeAllListeners('close').removeAllListeners('error')
      h.control.ref()
      this.#servedWell()
    }
    return h
  }

  /** Give back a helper that was taken but not used (its sandbox's options were refused). */
  giveBack(h: WarmHelper): void {
    h.control.unref()
    this.#hear(h)
    this.#watch(h)
    this.#ready.unshift(h)
  }

  resize(size: number | undefined): void {
    if (!this.eligible) return
    this.#size = size ?? DEFAULT_SIZE
    this.#grows = size === undefined
    while (this.#ready.length > this.#size) this.#discard(this.#ready.splice(this.#lastToGo(), 1)[0])
    this.fill()
  }

  fill(): void {
    // More starts under way than the pool holds: a burst that drains it faster than it refills.
    // Its starts go the cold way, which costs the machine less CPU than a warm helper made beside
    // them (the checks of what it made ahead, and on cgroup v1 its zygote, come on top), so helpers
    // made now would take CPU from the burst they are too late for; it refills as the burst subsides.
    if (this.underway() > this.#size) return
    while (!this.#broken() && this.#counted() + this.#starting < this.#size) void this.#start()
  }

  /** Ready helpers that still have their init made ahead. */
  #fresh(): number {
    return this.#ready.filter((h) => !h.stale).length
  }

  /** Ready helpers as the pool counts them: the stale ones too while the mount table is not quiet yet. */
  #counted(): number {
    return Date.now() < this.#staleQuietUntil ? this.#ready.length : this.#fresh()
  }

  /** Which ready helper goes first when there are too many: a stale one, else the newest. */
  #lastToGo(): number {
    const stale = this.#ready.findIndex((h) => h.stale)
    return stale >= 0 ? stale : this.#ready.length - 1
  }

  /** End a helper that was taken but cannot be used. */
  discard(h: WarmHelper): void {
    this.#discard(h)
  }

  /**
   * End every ready helper and make new ones: this process changed its ids or cgroups since they
   * were made (a service that dropped root), and they work as it was then.
   */
  renew(): void {
    for (const h of this.#ready.splice(0)) this.#discard(h)
    this.fill()
  }

  #discard(h: WarmHelper): void {
    // Not through #watch's close handler: the handoff fd is closed here, exactly once.
    h.control.removeAllListeners('close').removeAllListeners('data')
    h.control.on('error', () => {})
    h.control.destroy()
    this.addon.closeFd(h.handoff)
    reapHelper(this.addon, h.pid)
  }

  /** What a refill makes its init for ({@link aheadOf}), from the roots of the last sandboxes. */
  #ahead(): Ahead | undefined {
    for (const spec of this.#taken) {
      this.#recent.push({ root: rootOf(spec), namespaces: JSON.stringify(spec.namespaces) })
      if (this.#recent.length > RECENT) this.#recent.shift()
    }
    this.#taken = []
    return aheadOf(this.#recent)
  }

  /**
   * A helper served a sandbox, or stayed up past {@link SOON_AFTER_READY_MS}: the next failure
   * waits the shortest backoff again. Not at ready: helpers that end soon after it (the OOM
   * killer picking them) would else be made again every backoff, never a longer one.
   */
  #servedWell(): void {
    this.#backoffMs = this.retryAfterMs
  }

  #broken(): boolean {
    return Date.now() < this.#brokenUntil
  }

  #failed(): void {
    // Helpers started together that fail together count once.
    if (this.#broken()) return
    this.#brokenUntil = Date.now() + this.#backoffMs
    this.#backoffMs = Math.min(2 * this.#backoffMs, MAX_RETRY_AFTER_MS)
  }

  /**
   * What a ready helper says while it waits: only that its init made ahead went. A pool that is
   * not told would keep it (it serves, slower) and make no other until the next start.
   */
  #hear(h: WarmHelper, beforeReady?: (ev: { event: string }) => void): void {
    onEvents<{ event: string }>(h.control, (ev) => {
      if (!this.#ready.includes(h)) beforeReady?.(ev)
      else if (ev.event === 'stale' && !h.stale) this.#wentStale(h)
      else if (ev.event === 'lost') this.#lost(h)
    })
  }

  /**
   * `h`, ready, lost its zygote or init made ahead (not to a mount): replace it now, or after the
   * backoff where that came soon after it got ready (the OOM killer picking them again and again).
   */
  #lost(h: WarmHelper): void {
    h.stale = true
    if (Date.now() - (h.readyAt ?? 0) < SOON_AFTER_READY_MS) this.#failed()
    this.#fillLater()
  }

  /** `h`, ready, has lost its init made ahead: replace it once the mount table is quiet. */
  #wentStale(h: WarmHelper): void {
    h.stale = true
    // Once per change of the host's mounts: the helpers it made stale tell of it together.
    if (Date.now() >= this.#staleQuietUntil) {
      const soon = Date.now() - (h.readyAt ?? 0) < SOON_AFTER_READY_MS
      this.#staleQuietMs = soon ? Math.min(2 * this.#staleQuietMs, MAX_STALE_QUIET_MS) : STALE_QUIET_MS
    }
    this.#staleQuietUntil = Date.now() + this.#staleQuietMs
    clearTimeout(this.#staleTimer)
    this.#staleTimer = setTimeout(() => this.fill(), this.#staleQuietMs + 1).unref()
  }

  /**
   * While in the pool: a helper that ends (it should not: killed, or out of memory) leaves the
   * pool, and another takes its place, with no start needed; after a backoff where they end soon
   * after they got ready, as for one that cannot get ready.
   */
  #watch(h: WarmHelper): void {
    h.control.on('error', () => {})
    h.control.once('close', () => {
      const i = this.#ready.indexOf(h)
      if (i >= 0) this.#ready.splice(i, 1)
      this.addon.closeFd(h.handoff)
      reapHelper(this.addon, h.pid)
      if (i < 0) return
      if (Date.now() - (h.readyAt ?? 0) < SOON_AFTER_READY_MS) this.#failed()
      else this.#servedWell()
      this.#fillLater()
    })
  }

  /** Fill once the backoff (if any) is over, with no start needed (at once without one). */
  #fillLater(): void {
    clearTimeout(this.#lostTimer)
    this.#lostTimer = setTimeout(() => this.fill(), Math.max(0, this.#brokenUntil - Date.now()) + 1).unref()
  }

  async #start(): Promise<void> {
    this.#starting++
    try {
      const ahead = this.#ahead()
      const s = await this.addon.spawnWarmHelper(this.helperPath, ahead?.spec, ahead?.build)
      const control = new Socket({ fd: s.control, readable: true, writable: true })
      takeWrapped(this.addon, s)
      control.unref()
      const h: WarmHelper = { pid: s.pid, control, handoff: s.exec!, epoch: s.epoch }
      let staleAtBirth = false
      let lostAtBirth = false
      const warm = await new Promise<boolean>((resolve) => {
        // Its first word says whether it got ready; `stale` may come right after `warm`. One
        // listener for as long as it is pooled: a line split across reads stays whole.
        this.#hear(h, (ev) => {
          if (ev.event === 'stale') staleAtBirth = true
          else if (ev.event === 'lost') lostAtBirth = true
          else resolve(ev.event === 'warm')
        })
        control.on('error', () => resolve(false))
        control.on('close', () => resolve(false))
      })
      control.removeAllListeners('error').removeAllListeners('close')
      if (!warm || this.#fresh() >= this.#size) {
        if (!warm) this.#failed()
        this.#discard(h)
        return
      }
      this.#watch(h)
      h.readyAt = Date.now()
      this.#ready.push(h)
      // It takes the place of one whose init went.
      if (this.#ready.length > this.#size) this.#discard(this.#ready.splice(this.#lastToGo(), 1)[0])
      if (staleAtBirth) this.#wentStale(h)
      if (lostAtBirth) this.#lost(h)
    } catch {
      this.#failed()
    } finally {
      this.#starting--
    }
  }
}

/**
 * A spec as far as its root goes (as JSON): what a command, its environment or limits change
 * is left out, and so are the mounts made at the release ({@link madeAtRelease}). The helper
 * compares the whole mount plan and everything else the root is built from, so this only picks
 * what to build ahead.
 */
export function rootOf(spec: Spec): string {
  const { file: _file, args: _args, env: _env, cwd: _cwd, hostname: _hostname, limits: _limits, capabilities: _caps, seccomp: _seccomp, landlock: _landlock, tty: _tty, persistent: _persistent, mounts, ...root } = spec
  const made = mounts.length === 0 ? [] : madeAtReleaseOrNone(spec)
  return JSON.stringify({ file: '/', ...root, mounts: mounts.filter((_, i) => !made[i]) })
}

/**
 * Which mounts an init whose root was built ahead makes at its release, so that sandboxes that
 * each bind their own work dir share the root built ahead: asked of the helper's own rule
 * (`plan::made_at_release` in crates/core/src/plan.rs), which alone decides. Binds and tmpfs
 * mounts, but not at /tmp, at /etc or below, nor sharing a path with a later mount made with
 * the root.
 */
export function madeAtRelease(spec: Spec): boolean[] {
  return loadNative().addon.madeAtRelease(JSON.stringify(spec))
}

/** For grouping only: a spec the helper's rule cannot read (the sandbox fails anyway) counts as one whose mounts are all built with its root, and never breaks the pool's refill. */
function madeAtReleaseOrNone(spec: Spec): boolean[] {
  try {
    return madeAtRelease(spec)
  } catch {
    return spec.mounts.map(() => false)
  }
}

/** How many of the last sandboxes' roots decide what is built ahead. */
const RECENT = 8

export interface Recent {
  root: string
  namespaces: string
}

/** A spec ({@link rootOf}) whose namespaces an init is made in ahead, and whether its root is built too. */
export interface Ahead {
  spec: string
  build: boolean
}

/**
 * What a refill's init is made for, from the last sandboxes: the commonest recent root (its
 * namespaces, and the root built) when it came at least twice and more than half of the recent
 * sandboxes with its namespaces wanted it; else the commonest recent namespaces, without a root.
 * A sandbox that wants another root than the one built gets a fresh init, its namespaces made on
 * its path, and that costs about what a root built ahead saves (sequential `/bin/true` here: 2.4
 * ms from a root built ahead, 3.8 ms building its root from an init with only its namespaces,
 * 5.1 ms from a fresh init), so a root is built ahead for the majority.
 */
export function aheadOf(recent: Recent[]): Ahead | undefined {
  const root = commonest(recent.map((r) => r.root))
  if (root !== undefined) {
    const namespaces = recent.find((r) => r.root === root)!.namespaces
    const alike = recent.filter((r) => r.namespaces === namespaces)
    if (2 * alike.filter((r) => r.root === root).length > alike.length) return { spec: root, build: true }
  }
  const namespaces = commonest(recent.map((r) => r.namespaces))
  if (namespaces === undefined) return undefined
  // Any root with those namespaces carries them; the latest.
  return { spec: [...recent].reverse().find((r) => r.namespaces === namespaces)!.root, build: false }
}

/** The value that comes most often (at least twice) in `list`; of equals, the latest. */
export function commonest(list: string[]): string | undefined {
  const counts = new Map<string, number>()
  let best: string | undefined
  for (const v of list) {
    const n = (counts.get(v) ?? 0) + 1
    counts.set(v, n)
    if (n >= 2 && n >= (best === undefined ? 0 : counts.get(best)!)) best = v
  }
  return best
}

let pool: HelperPool | undefined
let wanted: number | undefined
/** Sandbox starts begun ({@link startBegins}) and not yet over ({@link refillPool}). */
let startsUnderway = 0

/** A sandbox start begins: each is over with one call of {@link refillPool}. */
export function startBegins(): void {
  startsUnderway++
}

/**
 * Whether a process has a pool: where it is root, or may not create cgroups at all. Where it may
 * not create cgroups (root in a container whose cgroupfs is read-only; an ordinary user on cgroup
 * v1, or on v2 without a delegated subtree), warm helpers have none: they serve the sandboxes that
 * need none (those with limits cannot start there either way). Root's have one where it may
 * create them. An ordinary user who may create cgroups starts cold: a warm helper without a
 * cgroup would be wasted on every sandbox with limits, and a cold start on v2 already clones
 * straight into its cgroup. What a warm helper cannot do for an ordinary user that it does for
 * root (step back to an idle priority it can undo, make room on its sockets for the largest
 * spec), it does without.
 */
export function poolEligible(root: boolean, mayCreateCgroups: boolean): boolean {
  return root || !mayCreateCgroups
}

/** The process's pool when this host can have one ({@link poolEligible}), made on first use. */
export function helperPool(addon: Addon, helperPath: string): HelperPool | undefined {
  if (pool === undefined) {
    const host = (addon.probe() as { cgroupHost?: { canCreate: boolean } | null }).cgroupHost
    pool = new HelperPool(addon, helperPath, poolEligible(process.geteuid?.() === 0, host?.canCreate === true), wanted)
    // Root's work ahead runs at idle priority: it may start with the first sandbox. Anyone else's
    // would take CPU from that first (cold) start: it starts once that start is over (refillPool).
    if (process.geteuid?.() === 0) pool.fill()
  }
  return pool.size > 0 ? pool : undefined
}

/** A start is over, however it ended: top the pool up, if this process has one. */
export function refillPool(): void {
  startsUnderway = Math.max(0, startsUnderway - 1)
  pool?.fill()
}

/**
 * How many warm helpers to keep (where this process is root, or may not create cgroups at all); 0 turns the
 * pool off, no size gives back the default (2, growing up to 4 when sandboxes find it empty).
 */
export function configurePool(options: PoolOptions = {}): void {
  options = callersOptions<PoolOptions>(options, 'configurePool', ['size'])
  const size = options.size
  if (size !== undefined && (!Number.isInteger(size) || size < 0 || size > 64)) throw optionError('size', 'must be an integer from 0 to 64')
  wanted = size
  pool?.resize(size)
}
