// VS Code's kernel picker as a person sees it in the browser, with the Jupyter extension's stand-in
// (test/e2e/jupyter-standin, id ms-toolsai.jupyter) installed beside Grid Workbench and the
// grid-typescript kernelspec installed where Jupyter looks: the stand-in then registers its own
// "Grid (TypeScript)" controller, as the real Jupyter extension does for every kernelspec it finds
// (test/e2e/suite/jupyter.test.ts checks that it did). Opening the starter notebook binds it to our
// controller, and the picker (top level, and "Select Another Kernel…") shows "Grid (TypeScript)" once.
//   node --import tsx --test test/e2e/jupyter-picker-ui.test.ts
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { BrowserContext, Page } from 'playwright-core';
import { startCodeServer, type CodeServer } from '../../scripts/code-server.mjs';
import {
  build, cleanWorkDir, jupyterStandIn, launchBrowser, newWorkDir, openWorkbench, repoRoot, sampleWorkspace, screenshot, tools, workbenchUrl,
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

/** The rows of the open quick pick, as shown (label text of each row). */
async function pickRows(page: Page): Promise<string[]> {
  const rows = page.locator('.quick-input-widget .quick-input-list .monaco-list-row');
  await rows.first().waitFor({ state: 'visible', timeout: 30_000 });
  return (await rows.locator('.label-name').allTextContents()).map((t) => t.trim());
}

test('with the Jupyter extension and the grid-typescript kernelspec installed, the kernel picker lists one "Grid (TypeScript)"', { timeout: 8 * 60_000 }, async () => {
  try {
    build();
    workDir = newWorkDir('jupyter-picker');
    const folder = sampleWorkspace(workDir);
    const extensionsDir = join(workDir, 'extensions');
    mkdirSync(extensionsDir, { recursive: true });
    symlinkSync(repoRoot, join(extensionsDir, 'grid-workbench.grid-workbench-0.1.0'), 'dir');
    symlinkSync(await jupyterStandIn(workDir), join(extensionsDir, 'ms-toolsai.jupyter-0.0.0-standin'), 'dir');
    const jupyterDir = join(workDir, 'jupyter');
    const install = spawnSync(process.execPath, [join(repoRoot, 'dist', 'grid.js'), 'kernel', 'install', '--prefix', jupyterDir], { encoding: 'utf8' });
    assert.equal(install.status, 0, `grid kernel install: ${install.stderr}`);
    server = await startCodeServer(tools(), {
      workDir, folder, extensionsDir,
      env: { JUPYTER_PATH: join(jupyterDir, 'share', 'jupyter') },
      settings: { 'git.openRepositoryInParentFolders': 'never', 'workbench.startupEditor': 'none' },
    });
    browser = await launchBrowser(workDir);
    const page = browser.pages()[0] ?? await browser.newPage();
    await openWorkbench(page, workbenchUrl(server, folder));
    await page.locator('.part.activitybar .action-item a[aria-label^="Grid"]').waitFor({ state: 'visible', timeout: 120_000 });

    // Open the starter notebook (its file names grid-typescript) as a person does: Quick Open.
    await page.keyboard.press('Control+P');
    const input = page.locator('.quick-input-widget input');
    await input.waitFor({ state: 'visible' });
    await input.fill('starter.ipynb');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'starter.ipynb' }).first().waitFor({ state: 'visible' });
    await input.press('Enter');
    await page.locator('.notebook-editor .cell-list-container').first().waitFor({ state: 'visible', timeout: 60_000 });

    // The toolbar's kernel item names our kernel, and shows this extension's Restart Kernel (ours is bound).
    const toolbar = page.locator('.notebook-toolbar-container');
    const kernelItem = toolbar.locator('.kernel-action-view-item');
    await kernelItem.getByText('Grid (TypeScript)').waitFor({ state: 'visible', timeout: 60_000 });
    await toolbar.getByText('Restart Kernel').waitFor({ state: 'visible', timeout: 30_000 });
    // The stand-in has registered its own "Grid (TypeScript)" controller for the kernelspec by now.
    await page.locator('.part.statusbar').getByText('Jupyter kernelspecs: grid-typescript').waitFor({ state: 'visible', timeout: 60_000 });

    await kernelItem.click();
    const top = await pickRows(page);
    process.stdout.write(`kernel picker: ${top.join(' | ')}\n`);
    assert.equal(top.filter((r) => r === 'Grid (TypeScript)').length, 1, `top level: ${top.join(' | ')}`);
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'Select Another Kernel' }).first().click();
    // VS Code fills this list in one go once it has asked every source (the rows appear then).
    const another = await pickRows(page);
    process.stdout.write(`Select Another Kernel…: ${another.join(' | ')}\n`);
    await screenshot(page, 'jupyter-kernel-picker');
    assert.equal(another.filter((r) => r === 'Grid (TypeScript)').length, 1, `Select Another Kernel…: ${another.join(' | ')}`);
  } catch (err) {
    failed = true;
    const page = browser?.pages()[0];
    if (page) await screenshot(page, 'jupyter-picker-failure').catch(() => undefined);
    throw err;
  }
});
