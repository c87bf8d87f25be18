// First contact, the way a newcomer meets the project: a fresh clone, the README's first command
// (`npm run start`) alone, the URL it prints opened in a fresh browser profile. The Grid view then shows
// one local node, signed in, with the demo datasets, and the starter notebook's Run All goes through to
// FedAvg with nobody dropped. The clone is of this repository's HEAD (in CI, the commit under test).
//   node --import tsx --test test/e2e/first-contact.test.ts
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { BrowserContext, Page } from 'playwright-core';
import { spawnGroup, waitForLine } from '../../scripts/code-server.mjs';
import { cleanWorkDir, launchBrowser, newWorkDir, openWorkbench, repoRoot, screenshot, tools } from './harness';

let start: ReturnType<typeof spawnGroup> | undefined;
let browser: BrowserContext | undefined;
let workDir: string | undefined;
let failed = false;

after(async () => {
  try {
    await browser?.close().catch(() => undefined);
  } finally {
    // Ctrl-C, as the README says: stops code-server and the node it started.
    await start?.stop(15_000);
    if (workDir) cleanWorkDir(workDir, failed);
  }
});

/** The user's environment, with every per-user folder inside `dir` so this run meets no node of the machine's. */
function newcomerEnv(dir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    // npm's script variables (this test runs under `npm test`) and our own settings are not a newcomer's.
    if (/^npm_/i.test(k) || /^GRID_/.test(k)) continue;
    env[k] = v;
  }
  const xdg = (name: string) => {
    const d = join(dir, 'home', name);
    mkdirSync(d, { recursive: true, mode: 0o700 });
    return d;
  };
  return {
    ...env,
    XDG_DATA_HOME: xdg('data'), XDG_CONFIG_HOME: xdg('config'), XDG_CACHE_HOME: xdg('cache'), XDG_STATE_HOME: xdg('state'),
    XDG_RUNTIME_DIR: xdg('runtime'), TMPDIR: xdg('tmp'),
    // The tools `npm test` has just set up (scripts/setup.mjs): a second cold install would repeat that step,
    // not test anything new. Dependencies (`npm ci`), build, VSIX, node and code-server are the clone's own.
    GRID_TOOLS_DIR: tools().root,
  };
}

/** The Grid sidebar's tree rows as text (label and description, maybe without a space between: "Local nodeconnected · admin · 127.0.0.1:…"). */
async function nodeRows(page: Page): Promise<string[]> {
  const rows = await page.locator('.part.sidebar .monaco-list-row').allInnerTexts();
  return rows.map((r) => r.replace(/\s+/g, ' ').trim());
}

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms${last ? ` (${String(last)})` : ''}`);
    await new Promise((r) => setImmediate(r));
  }
}

test('a fresh clone: `npm run start` alone, then the URL in a fresh browser: one local node, signed in, with the demo datasets; the starter notebook runs to FedAvg with nobody dropped', { timeout: 20 * 60_000 }, async () => {
  try {
    workDir = newWorkDir('first-contact');
    const clone = join(workDir, 'clone');
    const cloned = spawnSync('git', ['clone', '--quiet', repoRoot, clone], { encoding: 'utf8' });
    assert.equal(cloned.status, 0, `git clone failed: ${cloned.stderr}`);

    const t0 = performance.now();
    start = spawnGroup('npm', ['run', 'start'], { cwd: clone, env: newcomerEnv(workDir) });
    let tail = '';
    const url = await waitForLine(start, /^\s+(http:\/\/\S+\?folder=\S+)$/, {
      timeoutMs: 15 * 60_000, what: 'the URL `npm run start` prints',
      onLine: (l: string) => { tail = `${tail}${l}\n`.slice(-6000); },
    }).catch((err: Error) => { throw new Error(`${err.message}\n--- npm run start said:\n${tail}`); });
    process.stdout.write(`npm run start printed its URL after ${((performance.now() - t0) / 1000).toFixed(0)} s (fresh clone: npm ci, build, VSIX, node, code-server)\n`);
    assert.match(tail, /grid node: ws:\/\/127\.0\.0\.1:\d+ \(data in .*\); VS Code, notebooks and the grid CLI sign in to it as admin by themselves/);
    assert.doesNotMatch(tail.split('\n').filter((l) => l.startsWith('grid node')).join('\n'), /password/i, 'no password to copy: the local node signs its user in');

    browser = await launchBrowser(workDir);
    const page = browser.pages()[0] ?? await browser.newPage();
    await openWorkbench(page, url);
    const grid = page.locator('.part.activitybar .action-item a[aria-label^="Grid"]');
    await grid.waitFor({ state: 'visible', timeout: 120_000 });
    await grid.click();

    // One local node, signed in (connected means signed in; not "unauthenticated"), its datasets under it.
    let seen: string[] = [];
    const rows = await until('the local node, connected, with its datasets', 120_000, async () => {
      const r = seen = await nodeRows(page);
      return r.some((x) => /^Local node\s*connected · admin · 127\.0\.0\.1:\d+/.test(x)) && r.some((x) => /^digits\s*1797 rows/.test(x)) ? r : undefined;
    }).catch((err: Error) => { throw new Error(`${err.message}; the sidebar showed:\n${seen.join('\n')}`); });
    const nodes = rows.filter((r) => / · (127\.0\.0\.1|localhost):\d+/.test(r));
    assert.deepEqual(nodes.length, 1, `one node in the tree, got:\n${rows.join('\n')}`);
    for (const d of ['iris', 'wine', 'breast_cancer', 'digits']) assert.ok(rows.some((r) => new RegExp(`^${d}\\s*\\d+ rows`).test(r)), `${d} is not listed:\n${rows.join('\n')}`);
    await screenshot(page, 'first-contact-sidebar');

    // The starter notebook, opened from the Explorer as a newcomer would, then Run All.
    await page.locator('.part.activitybar .action-item a[aria-label^="Explorer"]').click();
    await page.locator('.explorer-folders-view .monaco-list-row', { hasText: 'starter.ipynb' }).first().dblclick();
    await page.locator('.notebook-editor .cell-list-container').first().waitFor({ state: 'visible', timeout: 60_000 });
    await page.locator('.notebook-editor, .monaco-workbench').locator('text=Grid (TypeScript)').first().waitFor({ state: 'visible', timeout: 60_000 });
    await page.locator('.notebook-toolbar-container').getByText('Run All').click();

    // What Run All leaves behind, as the sidebar shows it: digits-mlp served (v1), trained on the node (v2)
    // and federated (v3); a FedAvg participant that sat out would have a "sat out FedAvg" row under its node.
    await grid.click();
    const tree = await until('digits-mlp at v3 (served, trained, federated) in the sidebar', 8 * 60_000, async () => {
      const r = seen = await nodeRows(page);
      return r.some((x) => /^digits-mlp\s*.*v3 · 3 versions/.test(x)) ? r : undefined;
    }).catch((err: Error) => { throw new Error(`${err.message}; the sidebar showed:\n${seen.join('\n')}`); });
    assert.ok(!tree.some((x) => /sat out FedAvg/.test(x)), `a FedAvg participant was dropped:\n${tree.join('\n')}`);
    await screenshot(page, 'first-contact-notebook');
    // Still one node: the notebook's grid.connect() joined the local node rather than starting another.
    const after = (await nodeRows(page)).filter((r) => / · (127\.0\.0\.1|localhost):\d+/.test(r));
    assert.equal(after.length, 1, `the notebook added a node:\n${after.join('\n')}`);
  } catch (err) {
    failed = true;
    const page = browser?.pages()[0];
    if (page) await screenshot(page, 'first-contact-failure').catch(() => undefined);
    throw err;
  }
});
