// The one-command start: `npm run start [-- --port 8080]`.
// Installs what is missing (scripts/setup.mjs), builds, packages and installs the extension into a
// code-server of its own, starts a local grid node with the demo datasets, opens a sample workspace
// wired to that node, and prints the URL. Ctrl-C stops everything it started. State lives in .start/.
import { createHash, randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
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

/** The admin password of the local node, chosen once and kept in .start/ (gitignored). */
function adminPassword() {
  const file = join(startDir, 'node-admin-password');
  if (!existsSync(file)) writeFileSync(file, `${randomBytes(12).toString('base64url')}\n`, { mode: 0o600 });
  return readFileSync(file, 'utf8').trim();
}

/** Starts dist/grid-node.js on a free port; resolves with its ws:// URL, or undefined if not built. */
async function startGridNode() {
  const script = join(repoRoot, 'dist', 'grid-node.js');
  if (!existsSync(script)) {
    say('grid node: dist/grid-node.js does not exist yet (src/node not built); starting VS Code without a local node');
    return undefined;
  }
  const password = adminPassword();
  const args = [script, '--port', '0', '--data-dir', join(startDir, 'node-data'), '--name', 'local', '--demo-datasets'];
  const proc = spawnGroup(process.execPath, args, { cwd: startDir, env: { ...process.env, GRID_ADMIN_PASSWORD: password } });
  const url = await waitForLine(proc, /^listening on (ws:\/\/\S+)/, { what: 'the grid node\'s listening line' });
  proc.child.stdout.resume();
  proc.child.stderr.resume();
  void proc.exited.then(({ code, signal }) => {
    if (shuttingDown()) return;
    say(`grid node exited (${code ?? signal}); stopping`);
    process.exit(1);
  });
  say(`grid node: ${url} (data in .start/node-data; sign in as admin / ${password})`);
  return url;
}

/** The sample workspace: media/samples (ONNX sample, starter notebook) and grid.nodes for the node. */
function sampleWorkspace(nodeUrl) {
  const folder = join(startDir, 'workspace');
  mkdirSync(join(folder, '.vscode'), { recursive: true });
  // force: false keeps the user's edits to the samples across starts.
  cpSync(join(repoRoot, 'media', 'samples'), folder, { recursive: true, force: false });
  if (!readdirSync(folder).some((f) => f.endsWith('.ipynb'))) {
    writeFileSync(join(folder, 'START-HERE.md'), '# Grid Workbench\n\nNo starter notebook in media/samples yet. Meanwhile: open the Grid '
      + 'view in the activity bar, sign in to the local node, and run "Grid: Serve Model" on relu/relu.onnx.\n');
  }
  const settingsFile = join(folder, '.vscode', 'settings.json');
  let settings = {};
  try {
    settings = JSON.parse(readFileSync(settingsFile, 'utf8'));
  } catch {
    // First start, or a file the user broke: rewrite it.
  }
  if (nodeUrl) settings['grid.nodes'] = [{ name: 'local', url: nodeUrl }];
  else delete settings['grid.nodes'];
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
  const nodeUrl = await startGridNode();
  const folder = sampleWorkspace(nodeUrl);
  const server = await startCodeServer(tools, {
    workDir: join(startDir, 'code-server'), folder, extensionsDir,
    host: values.host, port: Number(values.port),
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
