// The PostgreSQL store (`--database postgres://…`): several node replicas share one database. Statements
// are the portable ones of store/sql.ts, their `?` placeholders numbered here; a transaction holds one
// pooled connection for its async context. Notifications ride LISTEN/NOTIFY on one channel, `grid`,
// listened to by a dedicated connection that reconnects when the database comes back.
//
// Nothing waits forever: connecting, each statement and an idle transaction have timeouts, and a
// database that cannot be reached is GRID_ERR_DATABASE_UNAVAILABLE, not a hang.

import { AsyncLocalStorage } from 'node:async_hooks';
import pg from 'pg';
import { gridError, GridError } from '../../core/errors';
import type { Logger } from '../../core/logger';
import { MIGRATIONS } from './migrations';
import { Channels, RECONNECTED, SET_META_SQL, type Row, type SqlParams, type Store } from './sql';

const NOTIFY_CHANNEL = 'grid';
/** PostgreSQL refuses a NOTIFY payload of 8000 bytes or more. */
const MAX_NOTIFY_BYTES = 7900;
/** Taken while migrating, so replicas starting together migrate once. */
const MIGRATION_LOCK = 0x67726964;

export interface PostgresOptions {
  /** postgres://user:password@host:port/database */
  url: string;
  log: Logger;
  /** Pooled connections per replica. */
  maxConnections?: number;
  connectTimeoutMs?: number;
  statementTimeoutMs?: number;
}

/** The URL without its password, for logs and error messages. */
export function shownUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    return u.toString();
  } catch {
    return 'postgres://(unparsable URL)';
  }
}

/** BIGINT and COUNT(*) as numbers: the node's ids, sizes and times are far below 2^53. */
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => {
    if (oid === 20 || oid === 1700) return (v: string) => Number(v);
    return pg.types.getTypeParser(oid, format as 'text');
  }) as typeof pg.types.getTypeParser,
};

const placeholders = new Map<string, string>();

/** `?` → `$1, $2 …`, outside quoted strings and identifiers. */
export function numbered(sql: string): string {
  let out = placeholders.get(sql);
  if (out !== undefined) return out;
  let n = 0;
  let quote: string | undefined;
  out = '';
  for (const ch of sql) {
    if (quote !== undefined) { if (ch === quote) quote = undefined; out += ch; continue; }
    if (ch === "'" || ch === '"') { quote = ch; out += ch; continue; }
    out += ch === '?' ? `$${++n}` : ch;
  }
  if (placeholders.size < 1000) placeholders.set(sql, out);
  return out;
}

/** Errors that mean the database cannot be reached (or went away), rather than a bad statement. */
function unreachable(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e.code === 'string' ? e.code : '';
  const message = typeof e.message === 'string' ? e.message : '';
  return ['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'EPIPE', '57P01', '57P02', '57P03', '53300'].includes(code) ||
    code.startsWith('08') || /timeout|terminat|Connection ended|not queryable|closed/i.test(message);
}

interface Scope { client: pg.PoolClient; open: boolean; notes: [string, string][] }

export class PostgresStore implements Store {
  readonly kind = 'postgres' as const;
  readonly where: string;
  private readonly url: string;
  private readonly log: Logger;
  private readonly pool: pg.Pool;
  private readonly scopes = new AsyncLocalStorage<Scope>();
  private readonly channels = new Channels();
  private listener: pg.Client | undefined;
  private relisten: NodeJS.Timeout | undefined;
  private relistenDelayMs = 100;
  private closed = false;
  private readonly connectTimeoutMs: number;

  private constructor(o: PostgresOptions) {
    this.url = o.url;
    this.where = shownUrl(o.url);
    this.log = o.log;
    this.connectTimeoutMs = o.connectTimeoutMs ?? 5000;
    const statementTimeout = o.statementTimeoutMs ?? 30_000;
    this.pool = new pg.Pool({
      connectionString: o.url,
      max: o.maxConnections ?? 10,
      connectionTimeoutMillis: this.connectTimeoutMs,
      statement_timeout: statementTimeout,
      query_timeout: statementTimeout + 5000,
      idle_in_transaction_session_timeout: 60_000,
      application_name: 'grid-node',
      types,
    });
    // An idle pooled connection that breaks (the server restarted) must not end the process.
    this.pool.on('error', (err) => this.log.warn({ err: err.message, database: this.where }, 'a pooled PostgreSQL connection failed; the next statement opens a new one'));
  }

  /** Connects, migrates and starts listening; GRID_ERR_DATABASE_UNAVAILABLE when the database cannot be reached. */
  static async open(o: PostgresOptions): Promise<PostgresStore> {
    const store = new PostgresStore(o);
    try {
      await store.migrate();
      await store.startListening();
      return store;
    } catch (err) {
      await store.close();
      throw err;
    }
  }

  private coded(err: unknown): unknown {
    if (err instanceof GridError) return err;
    if (unreachable(err)) {
      return gridError('DATABASE_UNAVAILABLE', `the node's database ${this.where} cannot be reached (${(err as Error).message}); check that PostgreSQL is running and reachable, then retry`);
    }
    // Two replicas' transactions waited on each other's locks (PostgreSQL aborted one) or conflicted: nothing of it was written.
    if ((err as { code?: unknown }).code === '40P01' || (err as { code?: unknown }).code === '40001') {
      return gridError('BUSY', `the node's database ${this.where} broke a lock conflict between replicas (${(err as Error).message}); nothing of this request was written: send it again`);
    }
    if ((err as { code?: unknown }).code === '23505') return gridError('ALREADY_EXISTS', `already exists: ${(err as { detail?: string }).detail ?? (err as Error).message}`);
    return err;
  }

  /** "C" compares bytes; UTF-8 byte order is code point order, as SQLite's BINARY. */
  textOrder(column: string): string {
    return `${column} COLLATE "C"`;
  }

  private queryable(): pg.Pool | pg.PoolClient {
    const scope = this.scopes.getStore();
    return scope !== undefined && scope.open ? scope.client : this.pool;
  }

  private async query(sql: string, params?: SqlParams): Promise<pg.QueryResult<Row>> {
    try {
      return await this.queryable().query<Row>(numbered(sql), params as unknown[] | undefined);
    } catch (err) {
      throw this.coded(err);
    }
  }

  async all(sql: string, params?: SqlParams): Promise<Row[]> {
    return (await this.query(sql, params)).rows;
  }

  async get(sql: string, params?: SqlParams): Promise<Row | undefined> {
    return (await this.query(sql, params)).rows[0];
  }

  async run(sql: string, params?: SqlParams): Promise<number> {
    return (await this.query(sql, params)).rowCount ?? 0;
  }

  async transaction<T>(fn: () => Promise<T>): Promise<T> {
    const outer = this.scopes.getStore();
    if (outer !== undefined && outer.open) return fn();
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw this.coded(err);
    }
    const scope: Scope = { client, open: true, notes: [] };
    let broken = false;
    try {
      await client.query('BEGIN');
      const result = await this.scopes.run(scope, fn);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      try { await client.query('ROLLBACK'); } catch { broken = true; }
      throw this.coded(err);
    } finally {
      scope.open = false;
      client.release(broken);
    }
  }

  async getMeta(key: string): Promise<string | undefined> {
    const row = await this.get('SELECT value FROM meta WHERE key = ?', [key]);
    return row === undefined ? undefined : String(row.value);
  }

  async setMeta(key: string, value: string): Promise<void> {
    await this.run(SET_META_SQL, [key, value]);
  }

  /** Inside a transaction PostgreSQL itself holds the notification until COMMIT (and drops it on rollback). */
  async notify(channel: string, payload: string): Promise<void> {
    const text = JSON.stringify([channel, payload]);
    if (Buffer.byteLength(text) > MAX_NOTIFY_BYTES) throw new RangeError(`a notification on ${channel} is ${Buffer.byteLength(text)} bytes; at most ${MAX_NOTIFY_BYTES} fit`);
    await this.run('SELECT pg_notify(?, ?)', [NOTIFY_CHANNEL, text]);
  }

  listen(channel: string, listener: (payload: string) => void): () => void {
    return this.channels.listen(channel, listener);
  }

  private async migrate(): Promise<void> {
    await this.transaction(async () => {
      await this.run(`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`);
      await this.run('CREATE TABLE IF NOT EXISTS grid_schema (version INTEGER NOT NULL)');
      const row = await this.get('SELECT version FROM grid_schema');
      if (row === undefined) await this.run('INSERT INTO grid_schema (version) VALUES (0)');
      const version = row === undefined ? 0 : Number(row.version);
      if (version > MIGRATIONS.length) {
        throw gridError('INTERNAL', `the database ${this.where} has schema version ${version}, newer than this node's ${MIGRATIONS.length}; upgrade this replica`);
      }
      for (let v = version; v < MIGRATIONS.length; v++) {
        const sql = MIGRATIONS[v]!.postgres;
        if (sql.trim() !== '') await this.run(sql);
        await this.run('UPDATE grid_schema SET version = ?', [v + 1]);
      }
      if (version < MIGRATIONS.length) this.log.info({ database: this.where, from: version, to: MIGRATIONS.length }, 'database schema migrated');
    });
  }

  private async startListening(): Promise<void> {
    const client = new pg.Client({ connectionString: this.url, connectionTimeoutMillis: this.connectTimeoutMs, application_name: 'grid-node-listen', types });
    client.on('notification', (msg) => {
      if (msg.channel !== NOTIFY_CHANNEL || msg.payload === undefined) return;
      let note: unknown;
      try { note = JSON.parse(msg.payload); } catch { return; }
      if (Array.isArray(note) && typeof note[0] === 'string' && typeof note[1] === 'string') this.channels.deliver(note[0], note[1]);
    });
    client.on('error', (err) => {
      this.log.warn({ err: err.message, database: this.where }, 'the PostgreSQL notification connection failed; reconnecting');
      this.scheduleRelisten(client);
    });
    client.on('end', () => this.scheduleRelisten(client));
    try {
      await client.connect();
      await client.query(`LISTEN ${NOTIFY_CHANNEL}`);
    } catch (err) {
      client.removeAllListeners('end');
      await client.end().catch(() => undefined);
      throw this.coded(err);
    }
    this.listener = client;
    this.relistenDelayMs = 100;
  }

  private scheduleRelisten(dead: pg.Client): void {
    if (this.closed || this.listener !== dead) return;
    this.listener = undefined;
    dead.removeAllListeners('end');
    void dead.end().catch(() => undefined);
    this.retryListen();
  }

  /** Reconnects the notification connection with backoff (100 ms doubling to 5 s) until it works or the store closes. */
  private retryListen(): void {
    if (this.closed || this.relisten !== undefined) return;
    const delay = this.relistenDelayMs;
    this.relistenDelayMs = Math.min(delay * 2, 5000);
    this.relisten = setTimeout(() => {
      this.relisten = undefined;
      if (this.closed) return;
      this.startListening().then(
        () => {
          this.log.info({ database: this.where }, 'listening for PostgreSQL notifications again');
          // Whatever was notified meanwhile was missed: listeners re-read what they cache.
          this.channels.deliver(RECONNECTED, '');
        },
        () => this.retryListen(),
      );
    }, delay);
    this.relisten.unref();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.relisten) clearTimeout(this.relisten);
    const listener = this.listener;
    this.listener = undefined;
    if (listener) {
      listener.removeAllListeners('end');
      await listener.end().catch(() => undefined);
    }
    await this.pool.end().catch(() => undefined);
  }
}
