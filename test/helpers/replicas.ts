// Node replicas for the replica tests (issue 16): a PostgreSQL server of the test's own, grid-node
// processes on one of its databases and one shared blob dir, admin clients, and a direct SQL connection
// to read the rows as an operator would. Each is closed or removed when the test that made it ends.

import * as fs from 'node:fs';
import * as path from 'node:path';
import pg from 'pg';
import { GridClient } from '../../src/core/client';
import { ADMIN_PASSWORD, tempDir } from './node-fixtures';
import { startPostgres, type TestPostgres } from './postgres';
import { startNodeScript, type Started } from './processes';

/** What owns the things made here: a test's context. */
export type Owner = { after(fn: () => unknown): void };

const NODE_MAIN = path.join(__dirname, '../../src/node/main.ts');

/** A PostgreSQL server for this test alone (make databases with createDatabase()), stopped and removed after it. */
export async function withPostgres(t: Owner): Promise<TestPostgres> {
  const server = await startPostgres();
  t.after(() => server.close());
  return server;
}

export interface ReplicaOptions {
  /** Its data dir, removed after the test (a new one by default); a replica restarted on it finds its own files. */
  dir?: string;
  /** More grid-node flags. */
  args?: readonly string[];
  /** How it is stopped after the test: SIGTERM (a clean shutdown) by default. */
  stopSignal?: NodeJS.Signals;
}

/** A grid-node process on `database`, its blobs in `blobs`, its own data dir, with the admin password. */
export async function replica(t: Owner, database: string, blobs: string, options: ReplicaOptions = {}): Promise<Started> {
  const dir = options.dir ?? tempDir('grid-replica-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const node = await startNodeScript(NODE_MAIN, [
    '--port', '0', '--data-dir', dir, '--blobs', blobs, '--database', database, '--log-level', 'warn', ...options.args ?? [],
  ], { ...process.env, GRID_ADMIN_PASSWORD: ADMIN_PASSWORD });
  t.after(() => node.kill(options.stopSignal ?? 'SIGTERM'));
  return node;
}

/** A client signed in as admin; with `reconnect`, one that reconnects quickly (up to 100 times) when cut off. */
export async function admin(t: Owner, url: string, options: { reconnect?: boolean } = {}): Promise<GridClient> {
  const c = await GridClient.connect(url, {
    reconnect: options.reconnect === true ? { initialDelayMs: 20, maxDelayMs: 200, maxAttempts: 100 } : { maxAttempts: 0 },
    credentials: { username: 'admin', password: ADMIN_PASSWORD },
  });
  t.after(() => c.dispose());
  return c;
}

/** A direct connection to `database` (application_name grid-test, not the replicas' grid-node). */
export async function sql(t: Owner, database: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: database, application_name: 'grid-test' });
  // The server stops in the test's teardown, maybe before this connection ends.
  c.on('error', () => undefined);
  await c.connect();
  t.after(() => c.end().catch(() => undefined));
  return c;
}
