// The one-command start: `npm run start [-- --port 8080]`.
// Installs what is missing (scripts/setup.mjs), builds, packages and installs the extension into a
// code-server of its own, starts a local grid node with the demo datasets, opens a sample workspace
// wired to that node, and prints the URL. Ctrl-C stops everything it started. State lives in .start/.
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { spawnSync } from 'node:child_process';
import { installExtension, shuttingDown, spawnGroup, startCodeServer, waitForLine } from './code-server.mjs';
import { packageExtension } from './package.mjs';
import { ensureTools } from './setup.mjs';

const repoRoot = resolve(fileURLToPath(new URL('..', import.meta.url)));
const startDir = join(repoRoot, '.start');
const EXTENSION_ID = 'grid-workbench.grid-workbench';

function say(msg) {
  process.stdout.write(`${msg}\n`);
}

/** sha256 over the files that go into the VSIX (the build rewrites dist/ each time, so not mtimes). */
function contentHash(paths) {
  const hash = createHash('sha256');
  const walk = (p) => {
    if (!existsSync(p)) return;
    if (statSync(p).isDirectory()) {
      for (const f of readdirSync(p).sort()) walk(join(p, f));
    } else {
      hash.update(p).update(readFileSync(p));
    }
  };
  paths.forEach(walk);
  return hash.digest('hex');
}

/** Packages and installs the extension when what goes into the VSIX changed since the last start. */
async function installCurrentExtension(tools) {
  const vsix = join(startDir, 'grid-workbench-linux-x64.vsix');
  const extensionsDir = join(startDir, 'extensions');
  const stampFile = join(startDir, 'extension.sha256');
  const stamp = contentHash(['dist', 'package.json', '.vscodeignore', 'media'].map((p) => join(repoRoot, p)));
  const installed = existsSync(extensionsDir) && readdirSync(extensionsDir).some((f) => f.startsWith(`${EXTENSION_ID}-`));
  if (installed && existsSync(stampFile) && readFileSync(stampFile, 'utf8').trim() === stamp) {
    say('extension: up to date');
    return extensionsDir;
  }
  say('extension: packaging and installing the VSIX');
  const { bytes } = packageExtension({ target: 'linux-x64', out: vsix, build: false });
  await installExtension(tools, { workDir: join(startDir, 'code-server'), extensionsDir, vsix });
  writeFileSync(stampFile, `${stamp}\n`);
  say(`extension: installed ${vsix} (${(bytes / 1024 / 1024).toFixed(1)} MB)`);
  return extensionsDir;
}

/** This user's local node as `grid local --json` reports it (no token: that stays in its 0600 record). */
function localNodeInfo() {
  const r = spawnSync(process.execPath, [join(repoRoot, 'dist', 'grid.js'), 'local', '--json'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`grid local failed (exit ${r.status ?? r.signal}): ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/**
 * Joins this user's local node if one runs (the extension, the CLI and notebooks find the same one),
 * else starts it (`grid-node --local`: the per-user data dir, demo datasets) and stops it on exit.
 * Resolves with its record: url, data_dir, record_file.
 */
async function startGridNode() {
  const running = localNodeInfo();
  if (running.running) {
    say(`grid node: joined the local node at ${running.url} (pid ${running.pid}, data in ${running.data_dir}); it keeps running after Ctrl-C`);
    return running;
  }
  const script = join(repoRoot, 'dist', 'grid-node.js');
  const args = [script, '--local', '--name', 'local', '--demo-datasets'];
  const proc = spawnGroup(process.execPath, args, { cwd: startDir, env: { ...process.env } });
  let stderr = '';
  proc.child.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
  const url = await waitForLine(proc, /^listening on (ws:\/\/\S+)/, { what: 'the grid node\'s listening line' }).catch((err) => {
    throw new Error(`${err.message}\n${stderr}`);
  });
  proc.child.stdout.resume();
  void proc.exited.then(({ code, signal }) => {
    if (shuttingDown()) return;
    say(`grid node exited (${code ?? signal}); stopping`);
    process.exit(1);
  });
  const info = localNodeInfo();
  say(`grid node: ${url} (data in ${info.data_dir}); VS Code, notebooks and the grid CLI sign in to it as admin by themselves`);
  return { ...info, url };
}

/** The sample workspace: media/samples (ONNX sample, starter notebook); the extension finds the local node by itself. */
function sampleWorkspace() {
  const folder = join(startDir, 'workspace');
  mkdirSync(join(folder, '.vscode'), { recursive: true });
  // force: false keeps the user's edits to the samples across starts.
  cpSync(join(repoRoot, 'media', 'samples'), folder, { recursive: true, force: false });
  const settingsFile = join(folder, '.vscode', 'settings.json');
  let settings = {};
  try {
    settings = JSON.parse(readFileSync(settingsFile, 'utf8'));
  } catch {
    // First start, or a file the user broke: rewrite it.
  }
  // Earlier starts listed their node here as "local": it would show next to the local node itself.
  if (Array.isArray(settings['grid.nodes'])) {
    settings['grid.nodes'] = settings['grid.nodes'].filter((n) => n?.name !== 'local');
    if (settings['grid.nodes'].length === 0) delete settings['grid.nodes'];
  }
  writeFileSync(settingsFile, `${JSON.stringify(settings, null, 2)}\n`);
  return folder;
}

async function main() {
  const { values } = parseArgs({ options: { port: { type: 'string', default: '0' }, host: { type: 'string', default: '127.0.0.1' } } });
  mkdirSync(startDir, { recursive: true });
  const tools = ensureTools();
  const b = spawnSync(process.execPath, [join(repoRoot, 'scripts', 'build.mjs')], { cwd: repoRoot, stdio: 'inherit' });
  if (b.status !== 0) throw new Error(`build failed (exit ${b.status ?? b.signal})`);
  const extensionsDir = await installCurrentExtension(tools);
  const node = await startGridNode();
  const folder = sampleWorkspace();
  const server = await startCodeServer(tools, {
    workDir: join(startDir, 'code-server'), folder, extensionsDir,
    host: values.host, port: Number(values.port),
    // code-server keeps its own XDG dirs under .start/; the extension must still find this user's local node.
    env: { GRID_RUNTIME_DIR: dirname(node.record_file), GRID_DATA_DIR: node.data_dir },
    settings: { 'git.openRepositoryInParentFolders': 'never' },
  });
  server.proc.child.stdout.resume();
  server.proc.child.stderr.resume();
  void server.proc.exited.then(({ code, signal }) => {
    if (shuttingDown()) return;
    say(`code-server exited (${code ?? signal}); stopping`);
    process.exit(1);
  });
  say(`\nGrid Workbench is running. Open:\n\n    ${server.url}?folder=${encodeURIComponent(folder)}\n\nCtrl-C stops it.`);
}

main().catch((err) => {
  process.stderr.write(`start failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
