// Builds a platform-specific VSIX: `npm run package [-- --target linux-arm64] [--out FILE] [--no-build]`.
// The VSIX carries the esbuild bundle plus the two runtime packages the bundle leaves external
// (onnxruntime-node with only the target's native binaries, node-sqlite3-wasm); .vscodeignore is the
// allow-list, rewritten here for targets other than linux-x64.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const repoRoot = resolve(fileURLToPath(new URL('..', import.meta.url)));
const DEFAULT_PLATFORM = 'linux/x64';

// VS Code target → onnxruntime-node's bin/napi-v6/<os>/<arch> folder (the targets it ships binaries for).
export const TARGETS = {
  'linux-x64': 'linux/x64',
  'linux-arm64': 'linux/arm64',
  'darwin-arm64': 'darwin/arm64',
  'win32-x64': 'win32/x64',
  'win32-arm64': 'win32/arm64',
};

function manifest() {
  return JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8'));
}

/** The .vscodeignore allow-list with the onnxruntime binaries of `target` instead of linux-x64's. */
export function ignoreFileFor(target) {
  const platform = TARGETS[target];
  if (!platform) {
    throw new Error(`unknown --target ${target}; one of: ${Object.keys(TARGETS).join(', ')}`);
  }
  const text = readFileSync(join(repoRoot, '.vscodeignore'), 'utf8');
  const line = `!node_modules/onnxruntime-node/bin/napi-v6/${DEFAULT_PLATFORM}/**`;
  if (!text.includes(line)) throw new Error(`.vscodeignore lost its line ${line}`);
  return text.replace(line, `!node_modules/onnxruntime-node/bin/napi-v6/${platform}/**`);
}

/**
 * Packages the extension for `target` into `out`; returns { vsix, bytes }. Throws with vsce's
 * output if packaging fails or the VSIX is missing its native binary.
 */
export function packageExtension({ target = 'linux-x64', out, build = true } = {}) {
  const pkg = manifest();
  const vsix = resolve(out ?? join(repoRoot, `${pkg.name}-${pkg.version}-${target}.vsix`));
  const ignoreFile = join(repoRoot, 'out', `vscodeignore-${target}`);
  mkdirSync(join(repoRoot, 'out'), { recursive: true });
  writeFileSync(ignoreFile, ignoreFileFor(target));
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
      target: { type: 'string', default: 'linux-x64' },
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
