// A real PostgreSQL for tests: Debian's server binaries (installed by scripts/setup.mjs), a cluster made
// with initdb in a temp dir and started with pg_ctl on a free port, stopped (and removed) by its owner.
// PostgreSQL refuses to run as root: as root, it runs as the `postgres` user, its dir chowned to it.

import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { defaultDataDir } from '../../src/core/local-node';

const run = promisify(execFile);
const PG_ROOT = '/usr/lib/postgresql';

export interface TestPostgres {
  readonly port: number;
  /** A new, empty database; its URL. */
  createDatabase(): Promise<string>;
  /** Stops the server (`immediate`: as a crash would) and starts it again on the same port. */
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
  start(): Promise<void>;
  /** Stops the server and removes its files; idempotent. */
  close(): Promise<void>;
  /** As close(), synchronously (for process 'exit', where nothing can be awaited): kills the server. */
  closeSync(): void;
}

/** The newest server's bin dir, or undefined when none is installed. */
function binDir(): string | undefined {
  if (!fs.existsSync(PG_ROOT)) return undefined;
  const versions = fs.readdirSync(PG_ROOT).filter((v) => fs.existsSync(path.join(PG_ROOT, v, 'bin', 'pg_ctl'))).sort((a, b) => Number(b) - Number(a));
  return versions.length === 0 ? undefined : path.join(PG_ROOT, versions[0]!, 'bin');
}

/** A port nothing listens on now (bound then released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** Why PostgreSQL cannot run here, or undefined when it can. */
export function postgresUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'PostgreSQL tests run on Linux (Debian\'s postgresql package)';
  if (binDir() === undefined) return `no PostgreSQL server under ${PG_ROOT}/*/bin; \`npm run setup\` installs Debian's postgresql (needs root or passwordless sudo)`;
  if (process.getuid?.() === 0) {
    if (!fs.readFileSync('/etc/passwd', 'utf8').split('\n').some((l) => l.startsWith('postgres:'))) return 'running as root and there is no postgres user to run PostgreSQL as';
  }
  return undefined;
}

export async function startPostgres(): Promise<TestPostgres> {
  const reason = postgresUnavailable();
  if (reason !== undefined) throw new Error(reason);
  const bin = binDir()!;
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'grid-pg-'));
  const data = path.join(root, 'data');
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const { stdout } = await run('id', ['-u', 'postgres']);
    const { stdout: gid } = await run('id', ['-g', 'postgres']);
    fs.chownSync(root, Number(stdout.trim()), Number(gid.trim()));
  }
  const pgRun = (tool: string, args: string[]) => (asRoot
    ? run('runuser', ['-u', 'postgres', '--', path.join(bin, tool), ...args], { cwd: root })
    : run(path.join(bin, tool), args, { cwd: root }));
  await pgRun('initdb', ['-D', data, '-U', 'grid', '-A', 'trust', '-E', 'UTF8', '--no-sync', '--no-instructions']);
  const port = await freePort();
  const options = `-p ${port} -k ${root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300`;
  let running = false;
  const start = async () => {
    await pgRun('pg_ctl', ['-D', data, '-l', path.join(root, 'server.log'), '-w', '-t', '120', '-o', options, 'start']);
    running = true;
  };
  const stop = async (mode: 'fast' | 'immediate' = 'fast') => {
    if (!running) return;
    running = false;
    await pgRun('pg_ctl', ['-D', data, '-w', '-t', '120', '-m', mode, 'stop']);
  };
  await start();
  let databases = 0;
  let closed = false;
  const admin = `postgres://grid@127.0.0.1:${port}`;
  return {
    port,
    async createDatabase() {
      const name = `grid_${++databases}`;
      const c = new pg.Client({ connectionString: `${admin}/postgres` });
      await c.connect();
      try { await c.query(`CREATE DATABASE ${name}`); } finally { await c.end(); }
      return `${admin}/${name}`;
    },
    stop,
    start,
    async close() {
      if (closed) return;
      closed = true;
      await stop('immediate').catch(() => undefined);
      fs.rmSync(root, { recursive: true, force: true });
    },
    closeSync() {
      // SIGQUIT is PostgreSQL's immediate shutdown; the first line of postmaster.pid is the server's pid.
      if (running) {
        try { process.kill(Number(fs.readFileSync(path.join(data, 'postmaster.pid'), 'utf8').split('\n')[0]), 'SIGQUIT'); } catch { /* not running */ }
      }
      closed = true;
      running = false;
      // Also after an unfinished close(): its files go with the process.
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

let shared: Promise<TestPostgres> | undefined;

/** One server for the whole test process (GRID_TEST_DATABASE=postgres), stopped when the process exits. */
export function sharedPostgres(): Promise<TestPostgres> {
  shared ??= startPostgres().then((server) => {
    // Test files end when their tests do: stop the server then, not later.
    process.once('beforeExit', () => { void server.close(); });
    // A test process that ends with process.exit() (or an uncaught error) never reaches beforeExit.
    process.once('exit', () => server.closeSync());
    return server;
  });
  return shared;
}

/**
 * GRID_TEST_DATABASE=postgres: every test node keeps its metadata in a new database of one PostgreSQL
 * server per test process, so a test file runs against both stores. `{}` otherwise.
 */
export async function testDatabase(dataDir: string): Promise<{ database?: string }> {
  if (process.env.GRID_TEST_DATABASE !== 'postgres') return {};
  // A restart on the same data dir finds the same database, as an operator's would.
  const key = path.resolve(dataDir);
  let url = testDatabases.get(key);
  if (url === undefined) testDatabases.set(key, url = await (await sharedPostgres()).createDatabase());
  return { database: url };
}

const testDatabases = new Map<string, string>();

/**
 * The environment for a grid-node process started with `args`: under GRID_TEST_DATABASE=postgres,
 * `env` plus GRID_DATABASE naming the database of its data dir (--data-dir, else the default one the
 * node would use), unless the test chose a database itself. `env` unchanged otherwise.
 */
export async function nodeProcessEnv(args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<NodeJS.ProcessEnv> {
  if (process.env.GRID_TEST_DATABASE !== 'postgres' || args.includes('--database') || (env.GRID_DATABASE ?? '') !== '') return env;
  const i = args.indexOf('--data-dir');
  const dataDir = i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : defaultDataDir(env);
  const { database } = await testDatabase(dataDir);
  return { ...env, GRID_DATABASE: database };
}
