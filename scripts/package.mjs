// Builds a platform-specific VSIX: `npm run package [-- --target linux-arm64] [--out FILE] [--no-build]`.
// The VSIX carries the esbuild bundles plus the runtime packages they leave external (onnxruntime-node
// and zeromq with only the target's native binaries, node-sqlite3-wasm, esbuild, bufferutil);
// .vscodeignore is the allow-list, rewritten here for targets other than linux-x64, with zeromq's builds
// for the target added from its manifest. Targets: TARGETS below.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const repoRoot = resolve(fileURLToPath(new URL('..', import.meta.url)));
const DEFAULT_TARGET = 'linux-x64';

// VS Code targets we can ship: those onnxruntime-node has binaries for (bin/napi-v6/<os>/<arch>).
export const TARGETS = ['linux-x64', 'linux-arm64', 'darwin-arm64', 'win32-x64', 'win32-arm64'];

function manifest() {
  return JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8'));
}

/**
 * The .vscodeignore allow-list with `target`'s platform folders in place of linux-x64's:
 * onnxruntime's bin/napi-v6/<os>/<arch>, bufferutil's prebuilds/<target>, @esbuild/<target>;
 * and zeromq's native builds for `target` (zeromqLines).
 */
export function ignoreFileFor(target) {
  if (!TARGETS.includes(target)) {
    throw new Error(`unknown --target ${target}; one of: ${TARGETS.join(', ')}`);
  }
  const text = readFileSync(join(repoRoot, '.vscodeignore'), 'utf8');
  const ortLine = `!node_modules/onnxruntime-node/bin/napi-v6/${DEFAULT_TARGET.replace('-', '/')}/**`;
  if (!text.includes(ortLine)) throw new Error(`.vscodeignore lost its line ${ortLine}`);
  const lines = text.split('\n').map((line) => (line.startsWith('!node_modules/')
    ? line.replaceAll(DEFAULT_TARGET.replace('-', '/'), target.replace('-', '/')).replaceAll(DEFAULT_TARGET, target)
    : line));
  return [...lines.filter((l, i) => l !== '' || i < lines.length - 1), `# zeromq's builds for ${target} (scripts/package.mjs)`, ...zeromqLines(target), ''].join('\n');
}

/**
 * The .vscodeignore line for the zeromq native build `target` loads: of the entries of its build/manifest.json
 * for the target's os and arch (musl ones aside: Alpine is a target of its own), the newest Node ABI. Its
 * loader (cmake-ts) tries the newest first, and these are N-API builds, so one loads on any newer Node too
 * (the glibc-127 build of linux-x64 loads on Node 20, where its glibc-115 build wants glibc 2.38). The other
 * builds (~32 MB, every platform) stay out.
 */
export function zeromqLines(target) {
  const [os, arch] = target.split('-');
  const manifestPath = join(repoRoot, 'node_modules', 'zeromq', 'build', 'manifest.json');
  const builds = Object.entries(JSON.parse(readFileSync(manifestPath, 'utf8')))
    .map(([key, file]) => ({ ...JSON.parse(key), file: file.replaceAll('\\', '/') }))
    .filter((b) => b.os === os && b.arch === arch && b.libc !== 'musl')
    .sort((a, b) => b.abi - a.abi);
  if (builds.length === 0) throw new Error(`zeromq has no build for ${target} in ${manifestPath}; the Jupyter kernel could not load`);
  return [`!node_modules/zeromq/build/${builds[0].file}`];
}

// Platform packages npm installs only for the machine it runs on; a VSIX for another target
// needs them present (e.g. `npm i --no-save --force @esbuild/darwin-arm64@<esbuild's version>`).
function checkPlatformPackages(target) {
  const esbuildVersion = JSON.parse(readFileSync(join(repoRoot, 'node_modules', 'esbuild', 'package.json'), 'utf8')).version;
  const required = [
    [`node_modules/onnxruntime-node/bin/napi-v6/${target.replace('-', '/')}`, 'reinstall onnxruntime-node'],
    [`node_modules/@esbuild/${target}`, `npm i --no-save --force @esbuild/${target}@${esbuildVersion}`],
    ...zeromqLines(target).map((line) => [line.slice(1), 'reinstall zeromq']),
  ];
  const missing = required.filter(([p]) => !existsSync(join(repoRoot, p)));
  if (missing.length) {
    throw new Error(`cannot package for ${target}; missing ${missing.map(([p, fix]) => `${p} (${fix})`).join(', ')}`);
  }
}

/**
 * Packages the extension for `target` into `out`; returns { vsix, bytes }. Throws with vsce's
 * output if packaging fails or the VSIX is missing its native binary.
 */
export function packageExtension({ target = DEFAULT_TARGET, out, build = true } = {}) {
  const pkg = manifest();
  const ignore = ignoreFileFor(target);
  checkPlatformPackages(target);
  const vsix = resolve(out ?? join(repoRoot, `${pkg.name}-${pkg.version}-${target}.vsix`));
  const ignoreFile = join(repoRoot, 'out', `vscodeignore-${target}`);
  mkdirSync(join(repoRoot, 'out'), { recursive: true });
  writeFileSync(ignoreFile, ignore);
  if (build) {
    const b = spawnSync(process.execPath, [join(repoRoot, 'scripts', 'build.mjs')], { cwd: repoRoot, stdio: 'inherit' });
    if (b.status !== 0) throw new Error(`build failed (exit ${b.status ?? b.signal})`);
  }
  const vsce = join(repoRoot, 'node_modules', '@vscode', 'vsce', 'vsce');
  const args = [
    vsce, 'package', '--target', target, '--out', vsix, '--ignoreFile', ignoreFile,
    // No repository URL or LICENSE file yet: without these flags vsce prompts on stdin, or fails on
    // README's relative links (they stay relative; the VSIX is not published to a marketplace).
    '--allow-missing-repository', '--skip-license', '--no-rewrite-relative-links',
  ];
  const r = spawnSync(process.execPath, args, { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0 || !existsSync(vsix)) {
    throw new Error(`vsce package failed (exit ${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`);
  }
  return { vsix, bytes: statSync(vsix).size };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      target: { type: 'string', default: DEFAULT_TARGET },
      out: { type: 'string' },
      'no-build': { type: 'boolean', default: false },
    },
  });
  try {
    const { vsix, bytes } = packageExtension({ target: values.target, out: values.out, build: !values['no-build'] });
    process.stdout.write(`${vsix}\n${(bytes / 1024 / 1024).toFixed(1)} MB\n`);
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
}
