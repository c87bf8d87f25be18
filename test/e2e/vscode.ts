// Which VS Code the in-host suites run in under @vscode/test-electron's runTests: the desktop VS Code
// where it can be downloaded (and shown), else this machine's code-server through
// scripts/code-server-shim.mjs. Chosen per run, never waiting long on a network that is not there.
//   GRID_E2E_VSCODE=auto (default) | desktop | code-server
//   GRID_E2E_VSCODE_VERSION=stable (default) | insiders | 1.96.0 …
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const repoRoot = join(import.meta.dirname, '..', '..');
export const shimPath = join(repoRoot, 'scripts', 'code-server-shim.mjs');
/** Where test-electron keeps downloaded VS Code builds (gitignored). */
export const vscodeCachePath = join(repoRoot, '.vscode-test');

export type VSCodeMode = 'auto' | 'desktop' | 'code-server';

export interface VSCodeChoice {
  kind: 'desktop' | 'code-server';
  /** What runTests gets as vscodeExecutablePath. */
  executablePath: string;
  /** Why this one, for the log. */
  why: string;
}

// test-electron in a process of its own: a timed-out request through a proxy leaves its socket open
// (and a silent network, its TCP connect), which would keep the test process alive after its tests.
const DOWNLOAD = `
const { downloadAndUnzipVSCode } = require(process.argv[1]);
downloadAndUnzipVSCode(JSON.parse(process.argv[2])).then(
  (executablePath) => process.send({ executablePath }, () => process.exit(0)),
  (err) => process.send({ error: err instanceof Error ? err.message : String(err) }, () => process.exit(0)),
);`;

/** downloadAndUnzipVSCode (the cached build when there is one), in a child that exits when it has answered. */
function downloadVSCode(options: { version: string; cachePath: string; timeout?: number }): Promise<string> {
  const testElectron = createRequire(import.meta.filename).resolve('@vscode/test-electron');
  const child = spawn(process.execPath, ['-e', DOWNLOAD, testElectron, JSON.stringify(options)], {
    // Its progress on our stderr, so stdout stays the suites' report.
    stdio: ['ignore', process.stderr, 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    let answer: { executablePath?: string; error?: string } | undefined;
    child.once('message', (m) => { answer = m as typeof answer; });
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (answer?.executablePath) resolve(answer.executablePath);
      else reject(new Error(answer?.error ?? `the download process exited (${code ?? signal}) without an answer`));
    });
  });
}

function modeFromEnv(value = process.env.GRID_E2E_VSCODE): VSCodeMode {
  if (value === undefined || value === '' || value === 'auto') return 'auto';
  if (value === 'desktop' || value === 'code-server') return value;
  throw new RangeError(`GRID_E2E_VSCODE is "${value}"; expected auto, desktop or code-server`);
}

/** Electron needs a display on Linux; elsewhere the desktop VS Code always has one. */
function hasDisplay(env: NodeJS.ProcessEnv): boolean {
  return process.platform !== 'linux' || Boolean(env.DISPLAY || env.WAYLAND_DISPLAY);
}

export async function chooseVSCode(opts: {
  mode?: VSCodeMode;
  version?: string;
  /** test-electron's request timeout: how long one silent request may stall before it counts as offline. */
  timeoutMs?: number;
  cachePath?: string;
  env?: NodeJS.ProcessEnv;
} = {}): Promise<VSCodeChoice> {
  const env = opts.env ?? process.env;
  const mode = opts.mode ?? modeFromEnv(env.GRID_E2E_VSCODE);
  const codeServer = (why: string): VSCodeChoice => ({ kind: 'code-server', executablePath: shimPath, why });
  if (mode === 'code-server') return codeServer('GRID_E2E_VSCODE=code-server');
  const version = opts.version ?? env.GRID_E2E_VSCODE_VERSION ?? 'stable';
  const cachePath = opts.cachePath ?? vscodeCachePath;
  if (mode === 'desktop') {
    // Asked for by name: a failed download is an error, with test-electron's usual patience.
    const executablePath = await downloadVSCode({ version, cachePath });
    return { kind: 'desktop', executablePath, why: 'GRID_E2E_VSCODE=desktop' };
  }
  if (!hasDisplay(env)) return codeServer('no display for the desktop VS Code (DISPLAY is unset; run under `xvfb-run -a` to use it)');
  const started = performance.now();
  try {
    // Offline, the version lookup fails at once (DNS) or after timeoutMs of silence; test-electron then
    // falls back to a build already in the cache, so a machine that downloaded once keeps its desktop VS Code.
    const executablePath = await downloadVSCode({ version, cachePath, timeout: opts.timeoutMs ?? 5000 });
    return { kind: 'desktop', executablePath, why: `VS Code ${version} from ${cachePath}` };
  } catch (err) {
    const ms = Math.round(performance.now() - started);
    return codeServer(`the desktop VS Code cannot be downloaded (${err instanceof Error ? err.message : String(err)}; found out in ${ms} ms)`);
  }
}
