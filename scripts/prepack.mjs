#!/usr/bin/env node
// `prepack` of @isolate/core (runs before `npm pack` and `npm publish`): refuses to pack without a
// build, and gives the files that are executed directly their exec bit, which the tarball keeps:
// dist/cli.js (the `isolate` bin; tsc writes it 644 and npm pack does not fix it) and any staged
// prebuilds/<platform>/isolate-helper (CI artifacts lose their modes).
import { chmodSync, existsSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const fail = (msg) => {
  console.error(`prepack: ${msg}`)
  process.exit(1)
}
for (const f of ['dist/index.js', 'dist/index.d.ts', 'dist/cli.js']) {
  if (!existsSync(join(root, f))) fail(`${f} is missing: run \`npm run build:ts\` first`)
}
const cli = join(root, 'dist/cli.js')
if (!readFileSync(cli, 'utf8').startsWith('#!/usr/bin/env node\n')) fail('dist/cli.js does not start with #!/usr/bin/env node')
chmodSync(cli, 0o755)
const prebuilds = join(root, 'prebuilds')
if (existsSync(prebuilds)) {
  for (const platform of readdirSync(prebuilds)) {
    const helper = join(prebuilds, platform, 'isolate-helper')
    const addon = join(prebuilds, platform, `isolate-core.${platform}.node`)
    if (!existsSync(helper) || !existsSync(addon)) fail(`prebuilds/${platform} needs both isolate-helper and isolate-core.${platform}.node`)
    chmodSync(helper, 0o755)
  }
}
