/** What this host allows, as the Rust core detects it once. */
import { Socket } from 'node:net'
import { IsolateError } from './errors.js'
import { loadNative, type Native } from './native.js'

/** The limits a sandbox's cgroup enforces. */
export const CGROUP_LIMITS = ['limits.memoryBytes', 'limits.pids', 'limits.cpus', 'limits.cpuTimeMs'] as const

/** A cgroup limit that fails closed on this host, as its error would say. */
export interface RefusedLimit {
  /** One of {@link CGROUP_LIMITS}. */
  option: string
  controller: string
  message: string
  hint?: string
}

export interface HostProbe {
  kernel: string
  arch: string
  uid: number
  rootless: boolean
  userNamespaces: {
    allowed: boolean
    reason: string | null
    maxUserNamespaces: number | null
    unprivilegedUsernsClone: number | null
    apparmorRestricted: boolean
  }
  cgroup: { mode: 'v1' | 'v2' | 'hybrid' | 'none'; v2Controllers: string[]; v1Controllers: string[]; own: string[] }
  /** Whether this process may create the sandbox cgroups that limits need, and why not. */
  cgroupHost: {
    mode: string
    canCreate: boolean
    /** Why it may not (absent when it may). */
    reason?: string
    /** It may not because `ISOLATE_CGROUP_PARENT` names no cgroup it could use (`reason` says why). */
    parentRefused: boolean
    /**
     * Where some limit fails closed beneath this process's own cgroup v2 cgroup: the nearest
     * delegated cgroup above it beneath which every limit would hold, what `ISOLATE_CGROUP_PARENT`
     * could name (null otherwise).
     */
    parentWouldHold: string | null
    swapAccounting: boolean | null
    /** The limits that fail closed although a cgroup may be made ({@link cgroupLimitsHere}). */
    refused: RefusedLimit[]
    /**
     * The unified (v2) hierarchy, where mounted. `ownPath` is the cgroup beneath which sandbox
     * cgroups are made: this process's own, or (`fromEnv`) the one `ISOLATE_CGROUP_PARENT` names.
     */
    unified: { mount: string; ownPath: string; ownDir: string | null; fromEnv: boolean; isRoot: boolean; processes: number } | null
  } | null
  /**
   * The processes and threads a sandbox may have per uid inside when it names no `limits.pids`:
   * 2048 (lower where this process's own RLIMIT_NPROC is), as its command's RLIMIT_NPROC, which
   * the kernel counts per user namespace from Linux 5.14, so a sandbox's own counts apart from
   * every other process (no cgroup needed). Null where the kernel is older (or its version cannot
   * be read), whose count is the host user's: no default bound holds there. A sandbox without a
   * user namespace (`namespaces.user: false`) has none either way.
   */
  defaultPids: number | null
  overlay: boolean
  landlockAbi: number | null
  seccomp: boolean
  seccompMode: number | null
  /**
   * The host ids the sandbox's root runs as: for a root caller, the first of an unprivileged range
   * (root's own in /etc/subuid and /etc/subgid, else a block that no one's subordinate range and
   * no account holds): give these write access to a directory bound read-write. For anyone else,
   * the caller's own ids. Null for a root caller when every such block is taken: its sandboxes
   * are then refused (step write_id_maps) until root has a range in /etc/subuid and /etc/subgid.
   */
  sandboxHostIds: { uid: number; gid: number } | null
  /**
   * The first of the {@link NAMESPACE_OWNER_IDS} host uids that own a root caller's sandbox user
   * namespaces, one per sandbox (the one of its helper's pid) and mapped into none: what the
   * kernel counts per user (inotify instances, user namespaces, queued signals) a sandbox then
   * counts against its own owner, not host root. Null where a sandbox's namespace is its
   * caller's: an ordinary user's, or root's when this process lacks CAP_SYS_ADMIN,
   * CAP_SYS_PTRACE, CAP_KILL, CAP_SETUID or CAP_SETPCAP (a container's root), its own user
   * namespace does not map the block, or no block of ids is free for them. With namespaces.user
   * false these ids are refused.
   */
  namespaceOwners: number | null
  /**
   * For a root caller: whether the sandbox host ids and the namespace owners all come from root's
   * own ranges in /etc/subuid and /etc/subgid ({@link ROOTS_OWN_UIDS} uids, 65536 gids). Otherwise some are blocks
   * checked against /etc/passwd, /etc/group and the ranges only: see {@link unseenAccountSources}.
   */
  sandboxIdsRootsOwn: boolean
  /**
   * A sandbox's processes are the first the kernel's OOM killer takes when the host runs out of
   * memory (their `oom_score_adj` is 1000; among sandboxes, the largest first). True where that
   * is also their floor: this process holds CAP_SYS_RESOURCE in its effective set, in the initial
   * user namespace (root, as usual, not a container's), and so does the helper it starts, so the
   * sandbox cannot lower it. False (an ordinary
   * user; a root without that capability): the sandbox may lower it as far as this process
   * itself may (its floor, which /proc does not show: usually 0).
   */
  oomFloorHeld: boolean
  /**
   * The program this host pipes core dumps to (`kernel.core_pattern` starting with `|`:
   * systemd-coredump, apport), or null. The kernel starts it on the host, as root, for a crash
   * of a process that may dump whatever its RLIMIT_CORE, but for the value 1 (which a sandbox
   * has unless `limits.coreDumps`): 0 is not enforced for a pipe.
   */
  corePipe: string | null
  /**
   * The socket this host hands core dumps to (`kernel.core_pattern` starting with `@`, Linux
   * 6.16+), or null: the kernel connects to it for every crash of a process that may dump, a
   * sandbox's too, whatever its RLIMIT_CORE.
   */
  coreSocket: string | null
  /** What the helper saw when it really created the namespaces (errno names, null when it worked). */
  attempt: { userNamespace: string | null; allNamespaces: string | null }
  /** Where the native addon and helper were loaded from. */
  native: { from: string; helperPath: string }
}

/**
 * How many host uids own a root caller's sandbox user namespaces, from
 * {@link HostProbe.namespaceOwners} on (the helper's plan::OWNER_IDS): one for every pid a kernel
 * may hand out, so that no two sandboxes alive at once share one.
 */
export const NAMESPACE_OWNER_IDS = 4194304

/** The uids root's own range must hold for the sandbox ids (65536) and the namespace owners. */
export const ROOTS_OWN_UIDS = 65536 + NAMESPACE_OWNER_IDS

let cached: Promise<HostProbe> | undefined

/** Run the helper's real attempt and read its JSON, without forking Node or blocking the loop. */
function attempt(native: Native): Promise<HostProbe['attempt']> {
  const h = native.addon.spawnProbe(native.helperPath)
  const socket = new Socket({ fd: h.control, readable: true, writable: false })
  let text = ''
  socket.setEncoding('utf8')
  socket.on('data', (d: string) => (text += d))
  return new Promise((resolve, reject) => {
    socket.on('error', reject)
    socket.on('close', () => {
      const reap = () => (native.addon.reapHelper(h.pid, false) ? undefined : setTimeout(reap, 1))
      reap()
      try {
        resolve(JSON.parse(text))
      } catch {
        reject(new IsolateError(`the helper's probe printed no result: ${JSON.stringify(text)}`, { code: 'ERR_ISOLATE_HELPER', path: native.helperPath }))
      }
    })
  })
}

export function probe(): Promise<HostProbe> {
  cached ??= (async () => {
    const native = loadNative()
    const facts = native.addon.probe() as Omit<HostProbe, 'native' | 'attempt'>
    const tried = await attempt(native)
    const userNamespaces = { ...facts.userNamespaces }
    if (tried.userNamespace && userNamespaces.allowed) {
      userNamespaces.allowed = false
      userNamespaces.reason = `creating a user namespace failed with ${tried.userNamespace} (a container's seccomp profile, or a security module, refuses it)`
    }
    return { ...facts, userNamespaces, attempt: tried, native: { from: native.from, helperPath: native.helperPath } }
  })()
  return cached
}

/**
 * Which cgroup limits a sandbox started by this process can have, as probe() found the host:
 * `canCreate`, a cgroup of its own (without one every limit fails closed); `held`, the limits
 * that hold; `refused`, those that fail closed although it can, with what their error says (on
 * cgroup v2, those whose controller a child of this process's cgroup cannot have; on v1, those
 * whose hierarchy this process may not use, cpuTimeMs without cpuacct).
 */
export function cgroupLimitsHere(p: HostProbe): { canCreate: boolean; held: string[]; refused: RefusedLimit[] } {
  const canCreate = p.cgroupHost?.canCreate === true
  const refused = canCreate ? (p.cgroupHost?.refused ?? []) : []
  const held = canCreate ? CGROUP_LIMITS.filter((l) => !refused.some((r) => r.option === l)) : []
  return { canCreate, held, refused }
}

/** nsswitch.conf sources that read accounts from /etc/passwd or from the machine itself. */
const LOCAL_ACCOUNT_SOURCES = ['files', 'compat', 'systemd', 'altfiles', 'db', 'cache', 'nis-local']

/**
 * The account services (sss, ldap, winbind...) that `nsswitch` (the text of /etc/nsswitch.conf)
 * takes users from besides the local files, where the sandbox ids and namespace owners are not all
 * root's own ranges (`rootsOwn`, {@link HostProbe.sandboxIdsRootsOwn}): those are then blocks
 * found free in the local files only, and a directory's users may hold them. [] otherwise.
 */
export function unseenAccountSources(nsswitch: string, rootsOwn: boolean): string[] {
  if (rootsOwn) return []
  const line = nsswitch.split('\n').find((l) => /^\s*passwd\s*:/.test(l))
  if (!line) return []
  const sources = line.replace(/#.*/, '').split(':')[1].trim().split(/\s+/).filter((w) => w !== '' && !w.startsWith('['))
  return sources.filter((w) => !LOCAL_ACCOUNT_SOURCES.includes(w))
}

/** Whether every limit of `limits` (keys as in SpawnOptions.limits) holds here. */
export function limitsHold(p: HostProbe, limits: Record<string, unknown>): boolean {
  const { held } = cgroupLimitsHere(p)
  return Object.keys(limits).every((k) => !CGROUP_LIMITS.includes(`limits.${k}` as (typeof CGROUP_LIMITS)[number]) || held.includes(`limits.${k}`))
}
