/** What this host allows, as the Rust core detects it once. */
import { Socket } from 'node:net'
import { IsolateError } from './errors.js'
import { loadNative, type Native } from './native.js'

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
    reason: string | null
    swapAccounting: boolean | null
    /** The unified hierarchy as this process sees it (on v1 hosts without one: absent). */
    unified?: {
      ownPath: string
      /** The own cgroup is the hierarchy's real root, where the no-internal-process rule does not apply. */
      isRoot: boolean
      /** What the parent delegates to the own cgroup. */
      controllers: string[]
      subtreeControl: string[]
      subtreeControlWritable: boolean
      /** Processes in the own cgroup, this one included (0 at the root, where they are not counted). */
      processes: number
      /** Controllers a child of the own cgroup can have. */
      usable: string[]
    } | null
  } | null
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
  /** What the helper saw when it really created the namespaces (errno names, null when it worked). */
  attempt: { userNamespace: string | null; allNamespaces: string | null }
  /** Where the native addon and helper were loaded from. */
  native: { from: string; helperPath: string }
}

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
      const reap = () => (native.addon.reapHelper(h.pid) ? undefined : setTimeout(reap, 1))
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

/** The v2 controller each cgroup limit needs beyond a cgroup of its own (cpuTimeMs needs none). */
const LIMIT_CONTROLLERS = [
  ['limits.memoryBytes', 'memory'],
  ['limits.pids', 'pids'],
  ['limits.cpus', 'cpu'],
] as const

/**
 * Which cgroup limits a sandbox started by this process can have, as probe() found the host:
 * `canCreate`, a cgroup of its own (what cpuTimeMs needs); `missing`, the limits that fail closed
 * although it can: on cgroup v2, those whose controller a child of this process's cgroup cannot
 * have, and why (the same reasons the helper gives when it refuses them).
 */
export function cgroupLimitsHere(p: HostProbe): { canCreate: boolean; missing: Array<{ option: string; controller: string; why: string }> } {
  const h = p.cgroupHost
  const canCreate = h?.canCreate === true
  const u = h?.unified
  if (!canCreate || p.cgroup.mode !== 'v2' || !u) return { canCreate, missing: [] }
  const own = u.ownPath || '/'
  const missing = LIMIT_CONTROLLERS.filter(([, c]) => !u.usable.includes(c)).map(([option, controller]) => {
    let why = `${own} cannot give ${controller} to its children`
    if (!u.controllers.includes(controller)) why = `${controller} is not delegated to ${own} (its parent does not enable it there)`
    else if (!u.isRoot && u.processes > 0) why = `${own} holds ${u.processes} process(es), this one included, and cgroup v2 lets a cgroup that is not the hierarchy's root give ${controller} to its children only while it holds none (the no-internal-process rule)`
    else if (!u.subtreeControlWritable) why = `${own}/cgroup.subtree_control is not writable by this process`
    return { option, controller, why }
  })
  return { canCreate, missing }
}
