// `npm run test:integration:postgres`: the integration suite again, every test node's metadata in
// PostgreSQL (GRID_TEST_DATABASE=postgres, test/helpers/postgres.ts), so both stores pass the same tests.
// Where PostgreSQL cannot run (`npm run setup` installs it where it can), the run is skipped with the
// reason printed, not failed. Extra arguments replace the test files (e.g. one file while debugging);
// `--all` also runs the files left out below.

import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { postgresUnavailable } from '../test/helpers/postgres';

const root = resolve(__dirname, '..');
const reason = postgresUnavailable();
if (reason !== undefined) {
  process.stdout.write(`test:integration:postgres skipped: ${reason}\n`);
  process.exit(0);
}
// Files whose nodes barely touch the store, or only through paths the other files cover on PostgreSQL
// (kernels and notebooks, compute, the socket and shared-memory transports, the FL simulation and CLI, an
// embedded-only sum upgrade): left out of `npm test`'s second run to keep the suite under 30 minutes
// (together ~480 s of the ~1030 s a full PostgreSQL run took under load). `-- --all` runs every file.
const STORE_LIGHT = new Set([
  'compute-fedavg', 'compute-train', 'fl-cli', 'fl-running-sum', 'fl-simulation', 'fl-speed-test', 'jupyter-kernel',
  'kernel-grid', 'kernel-host', 'node-shm', 'notebook-bridge', 'notebook-fl', 'notebook-smpc', 'socket',
].map((f) => `${f}.test.ts`));
const dir = join(root, 'test', 'integration');
const args = process.argv.slice(2);
const all = args.includes('--all');
const named = args.filter((a) => a !== '--all');
const files = named.length > 0
  ? named
  : readdirSync(dir).filter((f) => f.endsWith('.test.ts') && (all || !STORE_LIGHT.has(f))).sort().map((f) => relative(root, join(dir, f)));
const run = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=spec', '--test-concurrency=1', '--test-timeout=300000', ...files], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, GRID_TEST_DATABASE: 'postgres' },
});
process.exit(run.status ?? 1);
