/** What this host allows, as the Rust core detects it once. */
import { loadNative } from './native.js'

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
  overlay: boolean
  landlockAbi: number | null
  seccomp: boolean
  seccompMode: number | null
  pivotRoot: boolean
  /** Where the native addon and helper were loaded from. */
  native: { from: string; helperPath: string }
}

let cached: HostProbe | undefined

export async function probe(): Promise<HostProbe> {
  if (!cached) {
    const native = loadNative()
    cached = { ...(native.addon.probe() as Omit<HostProbe, 'native'>), native: { from: native.from, helperPath: native.helperPath } }
  }
  return cached
}
