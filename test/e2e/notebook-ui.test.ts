// The notebook as a person sees it in the browser: "Grid: New Notebook" from the palette, Run All, and
// the training cell's loss/accuracy curves drawn by the metrics renderer (dist/metrics-renderer.js)
// inside the notebook's output webview. The extension is loaded from this checkout's build.
//   node --import tsx --test test/e2e/notebook-ui.test.ts
import * as assert from 'node:assert/strict';
import { mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { BrowserContext } from 'playwright-core';
import { startCodeServer, type CodeServer } from '../../scripts/code-server.mjs';
import {
  build, cleanWorkDir, launchBrowser, newWorkDir, openWorkbench, repoRoot, runFromPalette, sampleWorkspace, screenshot, tools, workbenchUrl,
} from './harness';

let server: CodeServer | undefined;
let browser: BrowserContext | undefined;
let workDir: string | undefined;
let failed = false;

after(async () => {
  try {
    await browser?.close().catch(() => undefined);
  } finally {
    await server?.stop();
    if (workDir) cleanWorkDir(workDir, failed);
  }
});

test('New Notebook, Run All: the training cell shows live loss/accuracy curves drawn by the renderer', { timeout: 8 * 60_000 }, async () => {
  try {
    build();
    workDir = newWorkDir('notebook-ui');
    const folder = sampleWorkspace(workDir);
    // This checkout, seen by code-server as an installed extension (its folder in the extensions dir).
    const extensionsDir = join(workDir, 'extensions');
    mkdirSync(extensionsDir, { recursive: true });
    symlinkSync(repoRoot, join(extensionsDir, 'grid-workbench.grid-workbench-0.1.0'), 'dir');
    server = await startCodeServer(tools(), {
      workDir, folder, extensionsDir,
      settings: { 'git.openRepositoryInParentFolders': 'never', 'workbench.startupEditor': 'none', 'notebook.confirmDeleteRunningCell': false },
    });
    browser = await launchBrowser(workDir);
    const page = browser.pages()[0] ?? await browser.newPage();
    await openWorkbench(page, workbenchUrl(server, folder));
    // The Grid icon in the activity bar: the extension's contributions are registered.
    await page.locator('.part.activitybar .action-item a[aria-label^="Grid"]').waitFor({ state: 'visible', timeout: 120_000 });
    await runFromPalette(page, 'Grid: New Notebook');
    await page.locator('.notebook-editor .cell-list-container').first().waitFor({ state: 'visible', timeout: 60_000 });
    // The kernel picker shows this notebook's kernel without the user choosing it.
    await page.locator('.notebook-editor, .monaco-workbench').locator('text=Grid (TypeScript)').first().waitFor({ state: 'visible', timeout: 60_000 });
    // The notebook toolbar shows this extension's Restart Kernel next to VS Code's Run All.
    const toolbar = page.locator('.notebook-toolbar-container');
    await toolbar.getByText('Restart Kernel').waitFor({ state: 'visible', timeout: 30_000 });
    await toolbar.getByText('Run All').click();

    // Outputs live in the notebook's webview (an iframe holding the renderers' frame); VS Code draws
    // them for cells near the viewport, so scroll down as a reader would until the chart appears.
    const outputs = page.locator('.notebook-editor iframe.webview').first().contentFrame().locator('iframe').first().contentFrame();
    const metrics = outputs.locator('.grid-metrics').first();
    await page.locator('.notebook-editor .cell-list-container').first().hover();
    for (let i = 0; i < 60; i++) {
      if (await metrics.waitFor({ state: 'attached', timeout: 2000 }).then(() => true, () => false)) break;
      await page.mouse.wheel(0, 500);
    }
    const chart = outputs.locator('.grid-metrics[data-state="succeeded"] svg path.series-train').first();
    await chart.waitFor({ state: 'attached', timeout: 5 * 60_000 });
    const d = await chart.getAttribute('d');
    assert.ok(d && (d.match(/L/g)?.length ?? 0) >= 7, `the loss curve has ${(d?.match(/L/g)?.length ?? 0) + 1} points`);
    const head = await outputs.locator('.grid-metrics .head').first().textContent();
    assert.match(head ?? '', /^Training digits-mlp on Local node\/digits — succeeded/);
    const legend = await outputs.locator('.grid-metrics .legend').first().textContent();
    assert.match(legend ?? '', /train: loss [\d.]+, accuracy [\d.]+%/);
    // Into view for the screenshot: the chart's top in the upper part of the window.
    for (let i = 0; i < 60; i++) {
      const box = await metrics.boundingBox();
      if (!box || box.y < 450) break;
      await page.mouse.wheel(0, Math.min(400, box.y - 200));
    }
    await screenshot(page, 'notebook-training-metrics');
  } catch (err) {
    failed = true;
    const page = browser?.pages()[0];
    if (page) await screenshot(page, 'notebook-ui-failure').catch(() => undefined);
    throw err;
  }
});
