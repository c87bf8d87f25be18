// The real-VS-Code test bed: code-server (from .tools, see scripts/setup.mjs) driven by Debian
// chromium through playwright-core. Shared by the in-host suite runner (run.ts), the UI tests and
// the VSIX test. Every file written goes below .test-work/; every process is a killed group.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import * as esbuild from 'esbuild';
import { installExtension, startCodeServer, type CodeServer } from '../../scripts/code-server.mjs';
import { packageExtension } from '../../scripts/package.mjs';
import { toolPaths, type ToolPaths } from '../../scripts/setup.mjs';

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

const CHROMIUM_FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
];

/** Headless Debian chromium with its profile in `workDir`. */
export async function launchBrowser(workDir: string, t: ToolPaths = tools()): Promise<BrowserContext> {
  for (const d of ['tmp', 'xdg/config', 'xdg/cache']) mkdirSync(join(workDir, d), { recursive: true });
  return chromium.launchPersistentContext(join(workDir, 'chromium-profile'), {
    executablePath: t.chromium,
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: { width: 1400, height: 900 },
    env: { ...process.env, TMPDIR: join(workDir, 'tmp'), XDG_CONFIG_HOME: join(workDir, 'xdg', 'config'), XDG_CACHE_HOME: join(workDir, 'xdg', 'cache') },
  });
}

/** `vscode-remote://` URI of a server-side path, as the workbench at `server` names it. */
export function remoteUri(server: CodeServer, absPath: string): string {
  return `vscode-remote://127.0.0.1:${server.port}${absPath}`;
}

/** The workbench URL opening `folder`, with optional payload entries (extension dev/tests paths). */
export function workbenchUrl(server: CodeServer, folder: string, payload: [string, string][] = []): string {
  const q = new URLSearchParams({ folder });
  if (payload.length) q.set('payload', JSON.stringify(payload));
  return `${server.url}?${q.toString()}`;
}

export interface HostRunResult {
  exitCode: number;
  output: string[];
  /** The server-side logs (extension host, remote agent) of this run. */
  logsDir: string;
}

/**
 * Runs the compiled in-host suites inside the real extension host of a fresh code-server started
 * with the smoke-test driver, the extension loaded from `extensionPath` (the repo, or an installed
 * VSIX's folder). Resolves with the exit code VS Code reports when the suites end.
 */
export async function runHostSuites(opts: {
  extensionPath: string;
  workDir: string;
  folder: string;
  timeoutMs?: number;
  extensionsDir?: string;
  echo?: (line: string) => void;
}): Promise<HostRunResult> {
  const { workDir, folder, timeoutMs = 5 * 60_000 } = opts;
  const echo = opts.echo ?? ((line: string) => process.stdout.write(`${line}\n`));
  const t = tools();
  const entry = await compileHostSuites(join(workDir, 'suite-out'));
  const reportFile = join(workDir, 'host-report.txt');
  const server = await startCodeServer(t, {
    workDir, folder, smokeTestDriver: true,
    ...(opts.extensionsDir ? { extensionsDir: opts.extensionsDir } : {}),
    env: { GRID_E2E_REPORT: reportFile },
  });
  const output: string[] = [];
  let browser: BrowserContext | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    browser = await launchBrowser(workDir, t);
    const page = browser.pages()[0] ?? await browser.newPage();
    let exited!: (r: { code: number }) => void;
    const exit = new Promise<{ code: number }>((res) => { exited = res; });
    await page.exposeFunction('codeAutomationExit', (code: number) => exited({ code }));
    await page.exposeFunction('codeAutomationLog', (_level: string, args: unknown[]) => {
      // The workbench's own log; offline it is full of gallery errors, so only on request.
      if (process.env.GRID_E2E_VERBOSE) echo(`[workbench] ${args.map(String).join(' ')}`);
    });
    page.on('pageerror', (err) => echo(`[page error] ${err.message}`));
    const url = workbenchUrl(server, folder, [
      ['extensionDevelopmentPath', remoteUri(server, opts.extensionPath)],
      ['extensionTestsPath', remoteUri(server, entry)],
    ]);
    await page.goto(url);
    const timeout = new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(new Error(`in-host suites did not finish within ${timeoutMs} ms`)), timeoutMs);
    });
    let result: { code: number };
    try {
      result = await Promise.race([exit, timeout]);
    } catch (err) {
      await page.screenshot({ path: join(workDir, 'timeout.png') }).catch(() => undefined);
      echo(String(err));
      result = { code: 1 };
    }
    if (existsSync(reportFile)) {
      for (const line of readFileSync(reportFile, 'utf8').split('\n')) {
        output.push(line);
        echo(line);
      }
    } else {
      echo('(the in-host suites wrote no report: the test entry did not load)');
      result = { code: result.code || 1 };
    }
    return { exitCode: result.code, output, logsDir: join(workDir, 'user-data', 'logs') };
  } finally {
    clearTimeout(timer);
    await browser?.close().catch(() => undefined);
    await server.stop();
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
