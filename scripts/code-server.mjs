// Starts and stops code-server (the real VS Code we test in and the one `npm run start` opens).
// Every child runs detached as its own process group and is killed as a group, so the extension
// host, pty host and file watchers it forks go with it, also on Ctrl-C or an uncaught error.
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const groups = new Set(); // pids of live group leaders
const stoppers = new Set(); // their graceful stop() functions
let handlersInstalled = false;
let shutdown = false;

/** True once a signal asked this process to stop (children exiting then is expected). */
export function shuttingDown() {
  return shutdown;
}

function killGroup(pid, signal) {
  try {
    process.kill(-pid, signal);
  } catch {
    // ESRCH: the group is already gone.
  }
}

function installExitHandlers() {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', () => {
    for (const pid of groups) killGroup(pid, 'SIGKILL');
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
      // SIGTERM first so a grid node can close its stores; the 'exit' handler SIGKILLs stragglers.
      shutdown = true;
      process.stderr.write(`\n${sig}: stopping ${groups.size} process group(s)\n`);
      void Promise.all([...stoppers].map((stop) => stop(3000))).finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
    });
  }
}

/**
 * Spawns `cmd` as a process-group leader that dies with this process. `stop()` sends SIGTERM to the
 * group, waits up to `graceMs` for the leader, then SIGKILLs whatever is left of the group.
 */
export function spawnGroup(cmd, args, opts = {}) {
  installExitHandlers();
  const child = spawn(cmd, args, { ...opts, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  if (child.pid !== undefined) groups.add(child.pid);
  let stopping;
  const stop = (graceMs = 5000) => {
    stopping ??= (async () => {
      const pid = child.pid;
      if (pid === undefined) return;
      killGroup(pid, 'SIGTERM');
      let timer;
      await Promise.race([exited, new Promise((r) => { timer = setTimeout(r, graceMs); })]);
      clearTimeout(timer);
      killGroup(pid, 'SIGKILL');
      groups.delete(pid);
      stoppers.delete(stop);
    })();
    return stopping;
  };
  stoppers.add(stop);
  return { child, exited, stop };
}

/** Resolves with the first capture of `pattern` in the child's output; rejects if it exits first. */
export function waitForLine(proc, pattern, { timeoutMs = 90_000, what = String(pattern), onLine } = {}) {
  return new Promise((resolve, reject) => {
    const readers = [proc.child.stdout, proc.child.stderr].map((s) => createInterface({ input: s }));
    let done = false;
    const finish = (fn, value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      fn(value);
    };
    const timer = setTimeout(() => finish(reject, new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
    for (const rl of readers) {
      rl.on('line', (line) => {
        onLine?.(line);
        const m = pattern.exec(line);
        if (m) finish(resolve, m[1] ?? m[0]);
      });
    }
    void proc.exited.then(({ code, signal }) => finish(reject, new Error(`exited (${code ?? signal}) before printing ${what}`)));
  });
}

/** Environment that keeps every file code-server and its children write inside `workDir`. */
export function isolatedEnv(workDir, extra = {}) {
  const dirs = {
    XDG_CONFIG_HOME: join(workDir, 'xdg', 'config'),
    XDG_DATA_HOME: join(workDir, 'xdg', 'data'),
    XDG_CACHE_HOME: join(workDir, 'xdg', 'cache'),
    XDG_STATE_HOME: join(workDir, 'xdg', 'state'),
    // The local node's runtime record lives here (unless extra.GRID_RUNTIME_DIR says otherwise).
    XDG_RUNTIME_DIR: join(workDir, 'xdg', 'runtime'),
    TMPDIR: join(workDir, 'tmp'),
  };
  for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true, mode: 0o700 });
  const env = { ...process.env, ...dirs, ...extra };
  // npm's script variables would leak the project's config into the extension host.
  for (const k of Object.keys(env)) if (/^npm_/i.test(k)) delete env[k];
  return env;
}

function baseArgs(workDir, userDataDir, extensionsDir) {
  const config = join(workDir, 'code-server.yaml');
  writeFileSync(config, '');
  return [
    '--config', config,
    '--auth', 'none',
    '--user-data-dir', userDataDir,
    '--extensions-dir', extensionsDir,
    '--disable-telemetry',
    '--disable-update-check',
    '--disable-workspace-trust',
    '--disable-getting-started-override',
    '--ignore-last-opened',
  ];
}

// Offline, quiet defaults: no gallery or update checks, no telemetry; callers add their own.
const DEFAULT_SETTINGS = {
  'extensions.autoCheckUpdates': false,
  'extensions.autoUpdate': false,
  'extensions.ignoreRecommendations': true,
  'update.mode': 'none',
  'telemetry.telemetryLevel': 'off',
  'workbench.enableExperiments': false,
};

function writeUserSettings(userDataDir, settings = {}) {
  const file = join(userDataDir, 'User', 'settings.json');
  writeFileSync(file, `${JSON.stringify({ ...DEFAULT_SETTINGS, ...settings }, null, 2)}\n`);
}

/**
 * Starts code-server on 127.0.0.1 and a free port. Options: workDir (all state goes below it),
 * folder (opened by default), smokeTestDriver (enables codeAutomationExit/Log; hides info
 * notifications), host/port, settings (user settings.json), vscodeOptions (more VS Code server flags,
 * e.g. 'disable-extensions'). Resolves with { url, port, stop, proc }.
 */
export async function startCodeServer(tools, opts) {
  const { workDir, folder, smokeTestDriver = false, host = '127.0.0.1', port = 0, onLine } = opts;
  const userDataDir = opts.userDataDir ?? join(workDir, 'user-data');
  const extensionsDir = opts.extensionsDir ?? join(workDir, 'extensions');
  mkdirSync(join(userDataDir, 'User'), { recursive: true });
  mkdirSync(extensionsDir, { recursive: true });
  writeUserSettings(userDataDir, opts.settings);
  const args = [tools.codeServerEntry, ...baseArgs(workDir, userDataDir, extensionsDir), '--bind-addr', `${host}:${port}`];
  if (smokeTestDriver) args.push('--vscode-option', 'enable-smoke-test-driver');
  for (const option of opts.vscodeOptions ?? []) args.push('--vscode-option', option);
  if (folder) args.push(folder);
  const proc = spawnGroup(tools.node, args, { cwd: workDir, env: isolatedEnv(workDir, opts.env) });
  try {
    const url = await waitForLine(proc, /HTTP server listening on (http:\/\/\S+)/, { what: 'code-server\'s listening line', onLine });
    const base = url.endsWith('/') ? url : `${url}/`;
    return { url: base, port: Number(new URL(base).port), stop: proc.stop, proc };
  } catch (err) {
    await proc.stop();
    throw err;
  }
}

/** Installs a VSIX into an extensions dir with code-server's CLI; rejects with its output on failure. */
export async function installExtension(tools, { workDir, extensionsDir, userDataDir, vsix }) {
  mkdirSync(extensionsDir, { recursive: true });
  const udd = userDataDir ?? join(workDir, 'user-data');
  mkdirSync(udd, { recursive: true });
  const args = [tools.codeServerEntry, ...baseArgs(workDir, udd, extensionsDir), '--force', '--install-extension', vsix];
  const proc = spawnGroup(tools.node, args, { cwd: workDir, env: isolatedEnv(workDir) });
  let out = '';
  proc.child.stdout.on('data', (d) => { out += d; });
  proc.child.stderr.on('data', (d) => { out += d; });
  const { code, signal } = await proc.exited;
  await proc.stop();
  if (code !== 0 || !/was successfully installed/.test(out)) {
    throw new Error(`installing ${vsix} failed (${code ?? signal}):\n${out}`);
  }
  return out;
}
