// First contact, the way a newcomer meets the project: a fresh clone, the README's first command
// (`npm run start`) alone, the URL it prints opened in a fresh browser profile. The Grid view then shows
// one local node, signed in, with the demo datasets, and the starter notebook's Run All goes through to
// FedAvg with nobody dropped; then the palette serves, downloads, runs and trains a model with no sign-in
// step, each judged by what the user sees (the sidebar, the file on disk, the result editor).
// The clone is of this repository's HEAD (in CI, the commit under test).
//   node --import tsx --test test/e2e/first-contact.test.ts
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { BrowserContext, Page } from 'playwright-core';
import { spawnGroup, waitForLine } from '../../scripts/code-server.mjs';
import { decodeTensorProto } from '../../src/compute/onnx/tensor-proto';
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

/** One question of a palette command, as a person meets it. */
interface Step {
  /** How the question is recognised (the widget is reused from one question to the next): its title, placeholder or offered value. */
  title?: string | RegExp;
  placeholder?: string;
  value?: string;
  /** Typed first: a quick pick's filter, an input box's answer. */
  type?: string;
  /** The quick pick row clicked (after typing); without it, Enter takes what is offered. */
  row?: string;
}

/** A command run from the palette (F1, its title, click), its questions answered one after the other. */
async function paletteFlow(page: Page, command: string, steps: Step[]): Promise<void> {
  const widget = page.locator('.quick-input-widget');
  const input = widget.locator('.quick-input-box input').first();
  const rowOf = (text: string) => widget.locator('.quick-input-list .monaco-list-row', { hasText: text }).first();
  await page.keyboard.press('F1');
  await input.waitFor({ state: 'visible', timeout: 60_000 });
  await input.fill(`>${command}`);
  await rowOf(command).click({ timeout: 60_000 });
  for (const [i, step] of steps.entries()) {
    const what = `${command}, question ${i + 1} ${JSON.stringify({ ...step, title: step.title?.toString() })}`;
    let now = '';
    await until(what, 120_000, async () => {
      if (!(await widget.isVisible())) return undefined;
      const title = await widget.locator('.quick-input-title').innerText();
      const placeholder = await input.getAttribute('placeholder');
      const value = await input.inputValue();
      now = JSON.stringify({ title, placeholder, value });
      if (step.title !== undefined && !(typeof step.title === 'string' ? title === step.title : step.title.test(title))) return undefined;
      if (step.placeholder !== undefined && placeholder !== step.placeholder) return undefined;
      if (step.value !== undefined && value !== step.value) return undefined;
      return true;
    }).catch((err: Error) => { throw new Error(`${err.message}; the widget showed ${now}`); });
    if (step.type !== undefined) await input.fill(step.type);
    if (step.row !== undefined) await rowOf(step.row).click({ timeout: 60_000 });
    else await input.press('Enter');
  }
}

test('a fresh clone: `npm run start` alone, then the URL in a fresh browser: one local node, signed in, with the demo datasets; the starter notebook runs to FedAvg with nobody dropped; serve, download, infer and train from the palette with no sign-in step', { timeout: 25 * 60_000 }, async () => {
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

    // The palette, with no sign-in step anywhere. Files are picked from the workspace's own list (the
    // commands offer the workspace's models and tensor files first), the download goes to the workspace.
    const workspace = join(clone, '.start', 'workspace');
    const served = join(workspace, 'relu', 'relu.onnx');
    let t = performance.now();
    await paletteFlow(page, 'Grid: Serve Model', [
      { title: 'Serve an ONNX model', type: 'relu.onnx', row: 'relu.onnx' },
      { title: 'Serve relu.onnx to Local node', value: 'relu' },
      { title: 'Permissions of "relu"' },
    ]);
    // The Grid view is still the sidebar (clicking its icon again would close it).
    await until('relu v1 in the sidebar', 120_000, async () => {
      const r = seen = await nodeRows(page);
      return r.some((x) => /^relu\s*(Local node · )?v1 · /.test(x)) ? r : undefined;
    }).catch((err: Error) => { throw new Error(`${err.message}; the sidebar showed:\n${seen.join('\n')}`); });
    process.stdout.write(`palette serve: ${((performance.now() - t) / 1000).toFixed(1)} s\n`);

    t = performance.now();
    await paletteFlow(page, 'Grid: Download Model', [
      { title: 'Download a model', type: 'relu', row: 'relu' },
      { title: 'Download relu@1 from Local node', row: 'relu.onnx' },
    ]);
    const downloaded = join(workspace, 'relu.onnx');
    const size = statSync(served).size;
    await until('the downloaded file, whole', 120_000, async () => (existsSync(downloaded) && statSync(downloaded).size === size ? true : undefined));
    assert.deepEqual(readFileSync(downloaded), readFileSync(served), 'the download is the served file, byte for byte');
    process.stdout.write(`palette download: ${((performance.now() - t) / 1000).toFixed(1)} s\n`);

    t = performance.now();
    await paletteFlow(page, 'Grid: Run Inference', [
      { title: 'Run inference', type: 'relu', row: 'relu' },
      { title: /^Inputs for relu: /, type: 'input_0.pb', row: 'input_0.pb' },
    ]);
    // The result opens in an editor: the model, the node, and the output tensor the test case expects.
    const result = page.locator('.editor-group-container .monaco-editor .view-lines', { hasText: '"model": "relu"' }).first();
    await result.waitFor({ state: 'visible', timeout: 120_000 });
    const text = (await result.innerText()).replace(/\s+/g, ' ');
    assert.match(text, /"node": "Local node"/);
    assert.match(text, /"dtype": "float32"/);
    const expected = Array.from(decodeTensorProto(readFileSync(join(workspace, 'relu', 'test_data_set_0', 'output_0.pb'))).tensor.data as Float32Array);
    for (const v of expected) assert.ok(text.includes(`${JSON.stringify(v)}`), `the result does not show ${v}:\n${text}`);
    process.stdout.write(`palette inference: ${((performance.now() - t) / 1000).toFixed(1)} s\n`);

    t = performance.now();
    await paletteFlow(page, 'Grid: Train', [
      { title: 'Train a model', type: 'digits-mlp', row: 'digits-mlp' },
      { title: 'Train digits-mlp', row: 'On Local node' },
      { placeholder: 'Dataset on Local node', type: 'digits', row: 'digits' },
      { title: 'Train digits-mlp', value: '5', type: '1' },
      { title: 'Train digits-mlp', value: '0.01' },
    ]);
    // The trained model is the next version of digits-mlp: v4 after the notebook's three.
    await until('digits-mlp at v4 (trained from the palette) in the sidebar', 300_000, async () => {
      const r = seen = await nodeRows(page);
      return r.some((x) => /^digits-mlp\s*.*v4 · 4 versions/.test(x)) ? r : undefined;
    }).catch((err: Error) => { throw new Error(`${err.message}; the sidebar showed:\n${seen.join('\n')}`); });
    process.stdout.write(`palette training: ${((performance.now() - t) / 1000).toFixed(1)} s\n`);
    const asked = await page.locator('.notifications-toasts .notification-toast', { hasText: /GRID_ERR_|sign in|Authenticate/i }).allInnerTexts();
    assert.deepEqual(asked, [], 'a notification asked to sign in or showed an error');
    await screenshot(page, 'first-contact-palette');

    // The Grid log (Output › Grid, as written to disk): the local node went to connected without ever
    // being reported unauthenticated on the way (its token sign-in is answered before its state is told).
    const gridLog = () => {
      const logs = join(clone, '.start', 'code-server', 'user-data', 'logs');
      const files = existsSync(logs) ? readdirSync(logs, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith(join('grid-workbench.grid-workbench', 'Grid.log'))) : [];
      return files.map((f) => readFileSync(join(logs, f), 'utf8')).join('');
    };
    const log = await until('"Local node: connected" in the Grid log on disk', 120_000, async () => (/Local node: connected/.test(gridLog()) ? gridLog() : undefined));
    const flicker = log.split('\n').filter((l) => /unauthenticated/.test(l));
    assert.deepEqual(flicker, [], 'the Grid log reported the signed-in local node as unauthenticated');
  } catch (err) {
    failed = true;
    const page = browser?.pages()[0];
    if (page) await screenshot(page, 'first-contact-failure').catch(() => undefined);
    throw err;
  }
});
