/**
 * Finds the native parts: the `.node` addon and the `isolate-helper` executable, from the platform
 * package (`@isolate/core-linux-x64-gnu`...), else a local build in `npm/<platform>/`.
 * `ISOLATE_ADDON_PATH` and `ISOLATE_HELPER_PATH` override either.
 */
import { accessSync, constants, existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { IsolateError } from './errors.js'

export interface SpawnedHelper {
  pid: number
  control: number
  stdin?: number
  stdout?: number
  stderr?: number
}

export interface Addon {
  spawnHelper(helperPath: string, spec: unknown, stdio: number[]): SpawnedHelper
  spawnProbe(helperPath: string): SpawnedHelper
  validateSpec(spec: unknown): void
  reapHelper(pid: number): boolean
  closeFd(fd: number): void
  probe(): unknown
}

export interface Native {
  addon: Addon
  helperPath: string
  /** Where they came from, for `isolate doctor`. */
  from: string
}

const require = createRequire(import.meta.url)
const here = dirname(fileURLToPath(import.meta.url))

export function isMusl(): boolean {
  const report = (process.report?.getReport() ?? {}) as { header?: { glibcVersionRuntime?: string }; sharedObjects?: string[] }
  if (report.header?.glibcVersionRuntime) return false
  if (Array.isArray(report.sharedObjects) && report.sharedObjects.some((f) => /ld-musl-|libc\.musl-/.test(f))) return true
  return existsSync('/etc/alpine-release') || !report.header?.glibcVersionRuntime
}

export function platformName(): string {
  const arch = process.arch === 'x64' ? 'x64' : process.arch === 'arm64' ? 'arm64' : process.arch
  return `linux-${arch}-${isMusl() ? 'musl' : 'gnu'}`
}

/** The project root, whether running from the TypeScript sources or from dist/. */
function packageRoot(): string {
  for (let dir = here; dir !== dirname(dir); dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'crates'))) return dir
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'npm'))) return dir
  }
  return join(here, '..')
}

let cached: Native | undefined

export function loadNative(): Native {
  if (cached) return cached
  if (process.platform !== 'linux') {
    throw new IsolateError(`@isolate/core runs on Linux only (this is ${process.platform})`, { code: 'ERR_ISOLATE_NATIVE' })
  }
  const platform = platformName()
  const looked: string[] = []
  const candidates: string[] = []
  try {
    candidates.push(dirname(require.resolve(`@isolate/core-${platform}/package.json`)))
  } catch {
    looked.push(`the package @isolate/core-${platform}`)
  }
  candidates.push(join(packageRoot(), 'npm', platform))
  for (const dir of candidates) {
    const addonPath = process.env.ISOLATE_ADDON_PATH ?? join(dir, `isolate-core.${platform}.node`)
    const helperPath = process.env.ISOLATE_HELPER_PATH ?? join(dir, 'isolate-helper')
    if (!existsSync(addonPath) || !existsSync(helperPath)) {
      looked.push(`${addonPath} and ${helperPath}`)
      continue
    }
    try {
      accessSync(helperPath, constants.X_OK)
    } catch {
      throw new IsolateError(`the helper ${helperPath} is not executable`, {
        code: 'ERR_ISOLATE_NATIVE',
        path: helperPath,
        errno: 'EACCES',
        hint: `chmod 755 ${helperPath}, or reinstall @isolate/core (an unpacker dropped its mode)`,
      })
    }
    cached = { addon: require(addonPath) as Addon, helperPath, from: dir }
    return cached
  }
  throw new IsolateError(`no native build of @isolate/core for ${platform}; looked for ${looked.join('; ')}`, {
    code: 'ERR_ISOLATE_NATIVE',
    hint: `install @isolate/core-${platform} (if npm skipped it, delete package-lock.json and node_modules and run npm install again), or build it here with \`npm run build:native\``,
  })
}
