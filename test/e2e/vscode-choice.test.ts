// The automatic choice of VS Code for runTests (vscode.ts) never waits long on a network that is not
// there: with the update service unreachable (a refusing proxy) or silent (a proxy that accepts and
// never answers) the in-host suites go to code-server within a few seconds, and nothing is left
// holding this process open. test-electron takes its proxy from npm_config_https_proxy.
//   node --import tsx --test test/e2e/vscode-choice.test.ts
import * as assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { chooseVSCode, shimPath } from './vscode';

// An empty cache, so a desktop build downloaded earlier on this machine cannot answer for the network.
const cachePath = mkdtempSync(join(tmpdir(), 'grid-vscode-choice-'));
const proxyVars = ['npm_config_https_proxy', 'npm_config_proxy'] as const;
const savedProxy = proxyVars.map((k) => process.env[k]);
after(() => {
  proxyVars.forEach((k, i) => { if (savedProxy[i] === undefined) delete process.env[k]; else process.env[k] = savedProxy[i]; });
  rmSync(cachePath, { recursive: true, force: true });
});

function useProxy(port: number): void {
  for (const k of proxyVars) process.env[k] = `http://127.0.0.1:${port}`;
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
}

/** The choice a machine with a display makes, and how long it took. */
async function timedChoice(timeoutMs: number) {
  const started = performance.now();
  const choice = await chooseVSCode({ mode: 'auto', timeoutMs, cachePath, env: { DISPLAY: ':99' } });
  return { choice, ms: performance.now() - started };
}

test('offline (the proxy refuses), the in-host suites go to code-server at once', { timeout: 60_000 }, async () => {
  const closed = createServer();
  const port = await listen(closed);
  await new Promise<void>((r) => closed.close(() => r()));
  useProxy(port);
  const { choice, ms } = await timedChoice(5000);
  assert.equal(choice.kind, 'code-server');
  assert.equal(choice.executablePath, shimPath);
  assert.match(choice.why, /cannot be downloaded/);
  assert.ok(ms < 5000, `took ${ms} ms to see a refused connection`);
});

test('a silent network counts as offline after the request timeout, not never', { timeout: 60_000 }, async () => {
  const held = new Set<Socket>();
  const blackHole = createServer((s) => { held.add(s); s.on('close', () => held.delete(s)); });
  const port = await listen(blackHole);
  useProxy(port);
  try {
    const { choice, ms } = await timedChoice(2000);
    assert.equal(choice.kind, 'code-server');
    assert.match(choice.why, /timeout/i);
    assert.ok(ms >= 1900, `gave up after ${ms} ms, before the 2000 ms timeout`);
    // A loaded machine adds seconds, not minutes.
    assert.ok(ms < 20_000, `took ${ms} ms for a 2000 ms timeout`);
  } finally {
    for (const s of held) s.destroy();
    await new Promise<void>((r) => blackHole.close(() => r()));
  }
});

test('on Linux without a display the desktop VS Code is not tried', { skip: process.platform !== 'linux' }, async () => {
  const headless = await chooseVSCode({ mode: 'auto', cachePath, env: {} });
  assert.equal(headless.kind, 'code-server');
  assert.match(headless.why, /no display/);
});

test('GRID_E2E_VSCODE=code-server forces the shim; an unknown value is refused', async () => {
  const forced = await chooseVSCode({ env: { GRID_E2E_VSCODE: 'code-server' } });
  assert.deepEqual([forced.kind, forced.executablePath], ['code-server', shimPath]);
  await assert.rejects(chooseVSCode({ env: { GRID_E2E_VSCODE: 'electron' } }), RangeError);
});
