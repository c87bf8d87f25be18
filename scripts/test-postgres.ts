// `npm run test:integration:postgres`: the integration suite again, every test node's metadata in
// PostgreSQL (GRID_TEST_DATABASE=postgres, test/helpers/postgres.ts), so both stores pass the same tests.
// Where PostgreSQL cannot run (`npm run setup` installs it where it can), the run is skipped with the
// reason printed, not failed. Extra arguments replace the test files (e.g. one file while debugging).

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
const dir = join(root, 'test', 'integration');
const files = process.argv.length > 2
  ? process.argv.slice(2)
  : readdirSync(dir).filter((f) => f.endsWith('.test.ts')).sort().map((f) => relative(root, join(dir, f)));
const run = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=spec', '--test-concurrency=1', '--test-timeout=300000', ...files], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, GRID_TEST_DATABASE: 'postgres' },
});
process.exit(run.status ?? 1);
