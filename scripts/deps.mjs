// First step of `npm test` and `npm run start`: fail fast when this machine cannot run them, then make
// node_modules match package-lock.json (`npm ci` when it is missing or stale), so either command works
// as the first one typed in a fresh clone. Node built-ins only: nothing else is installed yet.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { missingToolPrerequisites } from './setup.mjs';

const repoRoot = resolve(fileURLToPath(new URL('..', import.meta.url)));
const MIN_NODE_MAJOR = 20;

function log(msg) {
  process.stderr.write(`[deps] ${msg}\n`);
}

/** Why node_modules does not match the lockfile, or undefined when it does. */
export function staleReason(root = repoRoot) {
  const hidden = join(root, 'node_modules', '.package-lock.json');
  if (!existsSync(hidden)) return 'node_modules is missing';
  const want = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')).packages ?? {};
  const have = JSON.parse(readFileSync(hidden, 'utf8')).packages ?? {};
  for (const [key, entry] of Object.entries(want)) {
    if (key === '') continue;
    const got = have[key];
    // Optional packages (other platforms' binaries) are legitimately absent.
    if (got === undefined) { if (entry.optional) continue; return `${key} is not installed`; }
    if (got.version !== entry.version) return `${key} is ${got.version}, the lockfile wants ${entry.version}`;
  }
  for (const key of Object.keys(have)) if (!(key in want)) return `${key} is installed but not in the lockfile`;
  return undefined;
}

function main() {
  const major = Number(process.versions.node.split('.')[0]);
  if (major < MIN_NODE_MAJOR) throw new Error(`Node ${process.versions.node} is too old: this project needs Node ${MIN_NODE_MAJOR} or newer`);
  // The real-VS-Code tests and `start` need system packages; say so now, not after minutes of building.
  const missing = missingToolPrerequisites();
  if (missing !== undefined) throw new Error(missing);
  const reason = staleReason();
  if (reason === undefined) return;
  log(`${reason}: running npm ci`);
  const started = performance.now();
  const r = spawnSync('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: repoRoot, stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) throw new Error(`npm ci failed (exit ${r.status ?? r.signal}); see its output above`);
  const still = staleReason();
  if (still !== undefined) throw new Error(`npm ci finished but node_modules still differs from package-lock.json: ${still}`);
  log(`dependencies installed in ${((performance.now() - started) / 1000).toFixed(0)}s`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    main();
  } catch (err) {
    log(err instanceof Error ? err.message : String(err));
    process.exit(1);
  }
}
