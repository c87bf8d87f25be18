#!/usr/bin/env node
// A VS Code executable for @vscode/test-electron's runTests where the desktop VS Code cannot be
// downloaded or run (offline, no display): it takes the arguments runTests gives a desktop VS Code
//   [FOLDER] --extensionDevelopmentPath=DIR --extensionTestsPath=ENTRY --user-data-dir=DIR
//   --extensions-dir=DIR [--disable-extensions] (+ desktop-only flags, ignored)
// and runs the same extension tests in code-server (from GRID_TOOLS_DIR or .tools, scripts/setup.mjs)
// with the smoke-test driver, opened in headless chromium with the tests in the page's payload. Like
// the desktop VS Code, it prints the tests' output as it comes and exits with their exit code. The
// test folder is the user data dir's parent: code-server's XDG dirs, TMPDIR, the browser profile and
// the report all go there.
// Environment: GRID_E2E_TIMEOUT_MS (default 10 min), GRID_E2E_VERBOSE (echo the workbench's log).
import { closeSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, rmSync, symlinkSync, watch } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startCodeServer } from './code-server.mjs';
import { toolPaths } from './setup.mjs';
import { launchBrowser, remoteUri, workbenchUrl } from './workbench.mjs';

const VALUE_FLAGS = new Map([
  ['extensionDevelopmentPath', 'extensionDevelopmentPaths'],
  ['extensionTestsPath', 'extensionTestsPath'],
  ['user-data-dir', 'userDataDir'],
  ['extensions-dir', 'extensionsDir'],
]);
// What runTests always passes a desktop VS Code; nothing to do in code-server.
const DESKTOP_FLAGS = new Set([
  'no-sandbox', 'disable-gpu-sandbox', 'disable-gpu', 'disable-updates', 'skip-welcome', 'skip-release-notes',
  'disable-workspace-trust', 'new-window', 'disable-telemetry', 'disable-chromium-sandbox',
]);

/** The runTests command line, as far as code-server can honour it. Throws on a value flag without value. */
export function parseShimArgs(argv) {
  const out = { extensionDevelopmentPaths: [], folders: [], disableExtensions: false, ignored: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) {
      out.folders.push(resolve(arg));
      continue;
    }
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const key = VALUE_FLAGS.get(name);
    if (key) {
      const value = eq < 0 ? argv[++i] : arg.slice(eq + 1);
      if (!value) throw new Error(`${arg} needs a value`);
      if (key === 'extensionDevelopmentPaths') out.extensionDevelopmentPaths.push(resolve(value));
      else out[key] = resolve(value);
    } else if (name === 'disable-extensions') {
      out.disableExtensions = true;
    } else if (!DESKTOP_FLAGS.has(name)) {
      out.ignored.push(arg);
    }
  }
  return out;
}

/**
 * Copies what the suites append to `file` to `out` as it arrives, as the desktop VS Code shows its
 * extension host's output. flush() copies the rest, stops, and says whether the file exists.
 */
function followFile(file, out) {
  let offset = 0;
  const pump = () => {
    let fd;
    try {
      fd = openSync(file, 'r');
    } catch {
      return false;
    }
    try {
      const size = fstatSync(fd).size;
      if (size > offset) {
        const chunk = Buffer.alloc(size - offset);
        offset += readSync(fd, chunk, 0, chunk.length, offset);
        out.write(chunk);
      }
    } finally {
      closeSync(fd);
    }
    return true;
  };
  const watcher = watch(dirname(file), (_event, name) => {
    if (name === basename(file)) pump();
  });
  let closed = false;
  return {
    flush() {
      if (!closed) watcher.close();
      closed = true;
      return pump();
    },
  };
}

/** Resolves with the first of: the tests' exit code, a timeout, code-server or the page going away. */
async function runInWorkbench(args, { tools, timeoutMs, log }) {
  const userDataDir = args.userDataDir ?? resolve('.vscode-test', 'user-data');
  const workDir = dirname(userDataDir);
  const folder = args.folders[0];
  const reportFile = join(workDir, 'host-report.txt');
  rmSync(reportFile, { force: true });
  mkdirSync(workDir, { recursive: true });
  const report = followFile(reportFile, process.stdout);
  const [devPath, ...extraDevPaths] = args.extensionDevelopmentPaths;
  const extensionsDir = args.extensionsDir ?? (extraDevPaths.length ? join(workDir, 'extensions') : undefined);
  for (const dir of extraDevPaths) {
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    mkdirSync(extensionsDir, { recursive: true });
    const link = join(extensionsDir, `${pkg.publisher}.${pkg.name}-${pkg.version}`);
    rmSync(link, { force: true, recursive: true });
    symlinkSync(dir, link, 'dir');
    log(`${pkg.publisher}.${pkg.name} from ${dir} loads as an installed extension (code-server takes one development extension)`);
  }
  let server;
  try {
    server = await startCodeServer(tools, {
      workDir, folder, smokeTestDriver: true, userDataDir,
      ...(extensionsDir ? { extensionsDir } : {}),
      vscodeOptions: args.disableExtensions && extraDevPaths.length === 0 ? ['disable-extensions'] : [],
      // The remote extension host's console reaches nobody: the suites write their report here (test/e2e/suite/report.ts).
      env: { GRID_E2E_REPORT: reportFile },
    });
  } catch (err) {
    report.flush();
    throw err;
  }
  let browser;
  let timer;
  try {
    browser = await launchBrowser(workDir, tools.chromium);
    const page = browser.pages()[0] ?? await browser.newPage();
    let end;
    const ended = new Promise((res) => { end = res; });
    await page.exposeFunction('codeAutomationExit', (code) => end({ code: Number(code) }));
    timer = setTimeout(() => end({ code: 1, why: `the extension tests did not finish within ${timeoutMs} ms` }), timeoutMs);
    void server.proc.exited.then(({ code, signal }) => end({ code: 1, why: `code-server exited (${code ?? signal}) before the tests ended` }));
    page.once('crash', () => end({ code: 1, why: 'the workbench page crashed' }));
    browser.once('close', () => end({ code: 1, why: 'the browser closed before the tests ended' }));
    await page.exposeFunction('codeAutomationLog', (_level, logArgs) => {
      // The workbench's own log; offline it is full of gallery errors, so only on request.
      if (process.env.GRID_E2E_VERBOSE) log(`[workbench] ${logArgs.map(String).join(' ')}`);
    });
    page.on('pageerror', (err) => log(`[page error] ${err.message}`));
    const payload = [
      ['extensionDevelopmentPath', remoteUri(server, devPath)],
      ['extensionTestsPath', remoteUri(server, args.extensionTestsPath)],
    ];
    await page.goto(workbenchUrl(server, folder, payload));
    const result = await ended;
    if (result.why) {
      log(result.why);
      await page.screenshot({ path: join(workDir, 'shim-failure.png') }).catch(() => undefined);
    }
    if (report.flush()) return result.code;
    if (!result.why) log('(the extension tests wrote no report: the test entry did not load)');
    return result.code || 1;
  } finally {
    clearTimeout(timer);
    report.flush();
    await browser?.close().catch(() => undefined);
    await server.stop();
  }
}

async function main() {
  const log = (line) => process.stderr.write(`[code-server-shim] ${line}\n`);
  const args = parseShimArgs(process.argv.slice(2));
  if (!args.extensionTestsPath || args.extensionDevelopmentPaths.length === 0) {
    log('usage: code-server-shim [FOLDER] --extensionDevelopmentPath=DIR --extensionTestsPath=ENTRY [--user-data-dir=DIR] [--extensions-dir=DIR] [--disable-extensions]');
    return 2;
  }
  if (args.folders.length > 1) log(`opens only the first folder of ${args.folders.join(', ')}`);
  if (args.ignored.length) log(`ignored (no code-server counterpart): ${args.ignored.join(' ')}`);
  const timeoutMs = Number(process.env.GRID_E2E_TIMEOUT_MS ?? 10 * 60_000);
  return runInWorkbench(args, { tools: toolPaths(), timeoutMs, log });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`[code-server-shim] ${err instanceof Error ? err.stack : String(err)}\n`);
      process.exit(1);
    },
  );
}
