// `npm test` and `npm run start` install dependencies themselves when node_modules does not match the
// lockfile; these cases are the decisions a fresh clone, a pulled lockfile change and CI's `npm ci` make.

import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { staleReason } from '../../scripts/deps.mjs';

function project(lock: Record<string, { version: string; optional?: boolean }>, installed?: Record<string, { version: string }>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'grid-deps-'));
  fs.writeFileSync(path.join(dir, 'package-lock.json'), JSON.stringify({ lockfileVersion: 3, packages: { '': { name: 'x' }, ...lock } }));
  if (installed !== undefined) {
    fs.mkdirSync(path.join(dir, 'node_modules'));
    fs.writeFileSync(path.join(dir, 'node_modules', '.package-lock.json'), JSON.stringify({ lockfileVersion: 3, packages: installed }));
  }
  return dir;
}

describe('scripts/deps staleReason', () => {
  test('a fresh clone (no node_modules) needs an install', () => {
    assert.equal(staleReason(project({ 'node_modules/ws': { version: '8.18.0' } })), 'node_modules is missing');
  });

  test('an install matching the lockfile is left alone, other platforms\' optional binaries may be absent', () => {
    const dir = project(
      { 'node_modules/ws': { version: '8.18.0' }, 'node_modules/@esbuild/darwin-arm64': { version: '0.25.0', optional: true } },
      { 'node_modules/ws': { version: '8.18.0' } },
    );
    assert.equal(staleReason(dir), undefined);
  });

  test('a lockfile that moved on (pulled) makes the install stale, naming the package', () => {
    const dir = project({ 'node_modules/ws': { version: '8.18.3' } }, { 'node_modules/ws': { version: '8.18.0' } });
    assert.match(staleReason(dir) ?? '', /node_modules\/ws is 8\.18\.0, the lockfile wants 8\.18\.3/);
  });

  test('a package removed from the lockfile or missing from node_modules is noticed', () => {
    assert.match(staleReason(project({}, { 'node_modules/left-pad': { version: '1.0.0' } })) ?? '', /left-pad is installed but not in the lockfile/);
    assert.match(staleReason(project({ 'node_modules/ws': { version: '8.18.0' } }, {})) ?? '', /node_modules\/ws is not installed/);
  });
});
