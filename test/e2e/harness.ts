// The real-VS-Code test bed. The in-host suites go through @vscode/test-electron's runTests (desktop
// VS Code, or code-server through scripts/code-server-shim.mjs); the UI tests drive code-server (from
// .tools, see scripts/setup.mjs) in Debian chromium through playwright-core themselves. Shared by the
// in-host suite runner (run.ts), the UI tests and the VSIX test. Every file written goes below
// .test-work/; every process is a killed group.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { runTests, TestRunFailedError } from '@vscode/test-electron';
import * as esbuild from 'esbuild';
import { installExtension, isolatedEnv } from '../../scripts/code-server.mjs';
import { packageExtension } from '../../scripts/package.mjs';
import { toolPaths, type ToolPaths } from '../../scripts/setup.mjs';
import { launchBrowser as launchChromium, remoteUri, workbenchUrl } from '../../scripts/workbench.mjs';
import { chooseVSCode, type VSCodeChoice } from './vscode';

export const repoRoot = resolve(import.meta.dirname, '..', '..');
export const testWork = join(repoRoot, '.test-work');
/** Where UI screenshots go; CI can point GRID_E2E_SCREENSHOTS at the folder it keeps. */
export const screenshotDir = process.env.GRID_E2E_SCREENSHOTS ?? join(testWork, 'screenshots');
export const EXTENSION_ID = 'grid-workbench.grid-workbench';

export function tools(): ToolPaths {
  return toolPaths();
}

/** A fresh folder below .test-work/ for one code-server + browser pair. */
export function newWorkDir(name: string): string {
  mkdirSync(testWork, { recursive: true });
  return mkdtempSync(join(testWork, `${name}-`));
}

/** Removes a work dir; kept when `keep` so a failure's logs stay readable. */
export function cleanWorkDir(dir: string, keep: boolean): void {
  if (keep) {
    process.stderr.write(`kept ${dir} for inspection\n`);
    return;
  }
  rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
}

/** Compiles test/e2e/suite/*.ts into `outDir`; returns the in-host entry (index.js). */
export async function compileHostSuites(outDir: string): Promise<string> {
  const suiteDir = join(repoRoot, 'test', 'e2e', 'suite');
  const entryPoints = readdirSync(suiteDir).filter((f) => f.endsWith('.ts')).map((f) => join(suiteDir, f));
  await esbuild.build({
    entryPoints,
    outdir: outDir,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    sourcemap: 'inline',
    // vscode is the host's; mocha resolves from the repo's node_modules (outDir is inside the repo).
    external: ['vscode', 'mocha'],
    logLevel: 'warning',
  });
  return join(outDir, 'index.js');
}

/**
 * The stand-in for the Jupyter extension (test/e2e/jupyter-standin: id ms-toolsai.jupyter, the typed API
 * our code calls, over a real ipykernel), compiled into `workDir`; returns its folder.
 */
export async function jupyterStandIn(workDir: string): Promise<string> {
  const src = join(repoRoot, 'test', 'e2e', 'jupyter-standin');
  const dir = join(workDir, 'jupyter-standin');
  mkdirSync(dir, { recursive: true });
  for (const f of ['package.json', 'bridge.py']) cpSync(join(src, f), join(dir, f));
  await esbuild.build({
    entryPoints: [join(src, 'extension.ts')], outfile: join(dir, 'extension.js'),
    bundle: true, platform: 'node', target: 'node20', format: 'cjs', external: ['vscode'], logLevel: 'warning',
  });
  return dir;
}

/** Headless Debian chromium with its profile in `workDir`. */
export async function launchBrowser(workDir: string, t: ToolPaths = tools()): Promise<BrowserContext> {
  return launchChromium(workDir, t.chromium);
}

export { remoteUri, workbenchUrl };

export interface HostRunResult {
  /** 0 when runTests resolved; the code it rejected with otherwise. */
  exitCode: number;
  /** Which VS Code ran the suites. */
  vscode: VSCodeChoice['kind'];
  /** The logs (extension host, remote agent) of this run. */
  logsDir: string;
}

/**
 * Runs the compiled in-host suites through @vscode/test-electron's runTests, in the desktop VS Code
 * where it can be had and in code-server (scripts/code-server-shim.mjs) where not (see vscode.ts),
 * with the extension loaded from `extensionPath` (the repo, or an installed VSIX's folder) and all
 * profile state in `workDir`. Resolves with the exit code runTests reports.
 */
export async function runHostSuites(opts: {
  extensionPath: string;
  workDir: string;
  folder: string;
  timeoutMs?: number;
  extensionsDir?: string;
  /** More development extensions loaded beside ours (the Jupyter stand-in, see jupyterStandIn). */
  alsoLoad?: string[];
}): Promise<HostRunResult> {
  const { workDir, folder } = opts;
  const entry = await compileHostSuites(join(workDir, 'suite-out'));
  const vscode = await chooseVSCode();
  process.stdout.write(`in-host suites in ${vscode.kind}: ${vscode.why}\n`);
  const userDataDir = join(workDir, 'user-data');
  const timeoutEnv: Record<string, string> = opts.timeoutMs ? { GRID_E2E_TIMEOUT_MS: String(opts.timeoutMs) } : {};
  try {
    await runTests({
      vscodeExecutablePath: vscode.executablePath,
      extensionDevelopmentPath: opts.alsoLoad?.length ? [opts.extensionPath, ...opts.alsoLoad] : opts.extensionPath,
      extensionTestsPath: entry,
      launchArgs: [folder, `--user-data-dir=${userDataDir}`, `--extensions-dir=${opts.extensionsDir ?? join(workDir, 'extensions')}`, '--disable-extensions'],
      // The shim isolates code-server itself; the desktop VS Code gets the same XDG dirs and TMPDIR in workDir,
      // so the suites' local node is theirs, not the machine's.
      extensionTestsEnv: vscode.kind === 'desktop' ? isolatedEnv(workDir, timeoutEnv) : timeoutEnv,
    });
    return { exitCode: 0, vscode: vscode.kind, logsDir: join(userDataDir, 'logs') };
  } catch (err) {
    if (!(err instanceof TestRunFailedError)) throw err;
    process.stdout.write(`runTests rejected: ${err.message}\n`);
    return { exitCode: err.code ?? 1, vscode: vscode.kind, logsDir: join(userDataDir, 'logs') };
  }
}

/** Opens the workbench and waits until the window is restored (the status bar is drawn). */
export async function openWorkbench(page: Page, url: string): Promise<void> {
  await page.goto(url);
  await page.locator('.monaco-workbench .part.statusbar').waitFor({ state: 'visible', timeout: 120_000 });
  await page.locator('.monaco-workbench .part.activitybar').waitFor({ state: 'visible', timeout: 60_000 });
}

/** Runs a command from the palette the way a person does: F1, type its title, Enter. */
export async function runFromPalette(page: Page, title: string): Promise<void> {
  await page.keyboard.press('F1');
  const input = page.locator('.quick-input-widget input');
  await input.waitFor({ state: 'visible' });
  await input.fill(`>${title}`);
  const row = page.locator('.quick-input-list .monaco-list-row', { hasText: title }).first();
  await row.waitFor({ state: 'visible' });
  await input.press('Enter');
  await page.locator('.quick-input-widget').waitFor({ state: 'hidden' });
}

/** Saves a screenshot into .test-work/screenshots (kept by CI) and prints its path. */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(screenshotDir, { recursive: true });
  const path = join(screenshotDir, `${name}.png`);
  await page.screenshot({ path });
  process.stdout.write(`screenshot: ${path}\n`);
  return path;
}

/** A sample workspace folder (the ONNX samples) inside `workDir`. */
export function sampleWorkspace(workDir: string): string {
  const folder = join(workDir, 'workspace');
  cpSync(join(repoRoot, 'media', 'samples'), folder, { recursive: true });
  return folder;
}

export interface InstalledExtension {
  vsix: string;
  bytes: number;
  extensionsDir: string;
  /** The folder code-server unpacked the VSIX into. */
  path: string;
}

/** Packages the linux-x64 VSIX (after a build) and installs it with code-server's CLI into `workDir`. */
export async function packageAndInstall(workDir: string): Promise<InstalledExtension> {
  const { vsix, bytes } = packageExtension({ target: 'linux-x64', out: join(workDir, 'grid-workbench-linux-x64.vsix') });
  const extensionsDir = join(workDir, 'installed-extensions');
  await installExtension(tools(), { workDir, extensionsDir, vsix });
  const folder = readdirSync(extensionsDir).find((f) => f.startsWith(`${EXTENSION_ID}-`));
  if (!folder) throw new Error(`code-server reported success but ${extensionsDir} holds no ${EXTENSION_ID}`);
  return { vsix, bytes, extensionsDir, path: join(extensionsDir, folder) };
}

/** Builds dist/ with the project's build script. */
export function build(): void {
  const r = spawnSync(process.execPath, [join(repoRoot, 'scripts', 'build.mjs')], { cwd: repoRoot, stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`build failed (exit ${r.status ?? r.signal})`);
}
