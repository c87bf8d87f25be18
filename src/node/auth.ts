// Users and sessions. Passwords: scrypt with a per-user salt (node:crypto, no native dependency).
// Session tokens: 32 random bytes handed to the client once; only their sha256 is stored, so a copy of
// the database does not let anyone log in.

import { createHash, randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { ErrorCodes, gridError } from '../core/errors';
import { SignInLimiter, type SignInLimitOptions } from './signin-limits';
import { StoreSignInFailures } from './signin-shared';
import type { Store } from './store/sql';

const SCRYPT = { N: 16384, r: 8, p: 1, keylen: 32 } as const;
const USERNAME = /^[A-Za-z0-9._@-]{1,128}$/;

function scrypt(password: string, salt: Buffer, keylen: number, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => scryptCb(password, salt, keylen, opts, (err, key) => (err ? reject(err) : resolve(key))));
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scrypt(password, salt, SCRYPT.keylen, { N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p });
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [N, r, p] = parts.slice(1, 4).map(Number) as [number, number, number];
  const salt = Buffer.from(parts[4]!, 'base64');
  const expected = Buffer.from(parts[5]!, 'base64');
  const key = await scrypt(password, salt, expected.length, { N, r, p, maxmem: 256 * N * r + 1024 * 1024 });
  return timingSafeEqual(key, expected);
}

/** Shortest password a user (admin included) may have (addUser's rule). */
export const MIN_PASSWORD_LENGTH = 8;

/**
 * Checks a first-run admin password before anything is created; `source` names where it came from
 * (GRID_ADMIN_PASSWORD) so the person starting the node knows what to change. Unset or empty is fine:
 * ensureAdmin then generates one.
 */
export function checkAdminPassword(password: string | undefined, source: string): void {
  if (password === undefined || password === '' || password.length >= MIN_PASSWORD_LENGTH) return;
  throw gridError('INVALID_MESSAGE', `${source} is too short (${password.length} characters): the admin password needs at least ${MIN_PASSWORD_LENGTH} characters; set a longer one, or leave it unset to have one generated and shown once`);
}

const tokenHash = (token: string) => createHash('sha256').update(token).digest('hex');

export interface Session { token: string; user: string; role: string; expires_at: number }

export interface UserInfo { username: string; role: string; created: string }

export class Auth {
  private readonly db: Store;
  private readonly sessionTtlMs: number;
  /** Backoff for failed sign-ins, per (user, address) and per address. */
  readonly limiter: SignInLimiter;

  constructor(db: Store, opts: { sessionTtlMs?: number; signInLimits?: SignInLimitOptions } = {}) {
    this.db = db;
    this.sessionTtlMs = opts.sessionTtlMs ?? 24 * 3600 * 1000;
    // Replicas on PostgreSQL count failures together; the embedded node is one process and counts in memory.
    this.limiter = new SignInLimiter({ ...(db.kind === 'postgres' && { shared: new StoreSignInFailures(db) }), ...opts.signInLimits });
  }

  async hasUsers(): Promise<boolean> {
    return await this.db.get('SELECT 1 AS x FROM users LIMIT 1') !== undefined;
  }

  /**
   * Creates `admin` on first run. Returns the generated password when none was given, so the caller
   * can show it once; returns undefined when admin already exists or the password was supplied.
   */
  async ensureAdmin(password: string | undefined): Promise<string | undefined> {
    if (await this.db.get("SELECT 1 AS x FROM users WHERE username = 'admin'") !== undefined) return undefined;
    const generated = password === undefined || password === '' ? randomBytes(15).toString('base64url') : undefined;
    try {
      await this.addUser('admin', generated ?? password!, 'admin');
    } catch (err) {
      // Replicas starting together on one new database: the first one creates admin (and shows its password).
      if ((err as { code?: unknown }).code === ErrorCodes.ALREADY_EXISTS) return undefined;
      throw err;
    }
    return generated;
  }

  async addUser(username: string, password: string, role: 'admin' | 'user' = 'user'): Promise<void> {
    if (!USERNAME.test(username)) throw gridError('INVALID_ID', `user name ${JSON.stringify(username)} must be 1-128 characters of A-Z a-z 0-9 . _ @ -`);
    if (password.length < 8) throw gridError('INVALID_MESSAGE', `the password for ${username} must have at least 8 characters`);
    const hash = await hashPassword(password);
    await this.db.transaction(async () => {
      if (await this.db.get('SELECT 1 AS x FROM users WHERE username = ?', [username])) throw gridError('ALREADY_EXISTS', `user ${username} already exists`);
      await this.db.run('INSERT INTO users (username, password_hash, role, created) VALUES (?, ?, ?, ?)', [username, hash, role, new Date().toISOString()]);
    });
  }

  async setPassword(username: string, password: string): Promise<void> {
    const hash = await hashPassword(password);
    await this.db.transaction(async () => {
      if (await this.db.run('UPDATE users SET password_hash = ? WHERE username = ?', [hash, username]) === 0) throw gridError('NOT_FOUND', `no user ${username}`);
      await this.db.run('DELETE FROM sessions WHERE username = ?', [username]);
    });
  }

  async listUsers(): Promise<UserInfo[]> {
    return (await this.db.all(`SELECT username, role, created FROM users ORDER BY ${this.db.textOrder('username')}`)).map((r) => ({ username: String(r.username), role: String(r.role), created: String(r.created) }));
  }

  /** Checks a password and opens a session. Wrong user and wrong password give the same error. */
  async login(username: string, password: string): Promise<Session> {
    const row = await this.db.get('SELECT password_hash, role FROM users WHERE username = ?', [username]);
    // Hash anyway for an unknown user, so timing does not reveal which user names exist.
    const ok = row === undefined
      ? (await hashPassword(password), false)
      : await verifyPassword(password, String(row.password_hash));
    if (!ok || row === undefined) throw gridError('BAD_CREDENTIALS', 'wrong user name or password');
    const token = randomBytes(32).toString('base64url');
    const expires = Date.now() + this.sessionTtlMs;
    await this.db.transaction(async () => {
      await this.db.run('DELETE FROM sessions WHERE expires_at < ?', [new Date().toISOString()]);
      await this.db.run('INSERT INTO sessions (token_hash, username, created, expires_at) VALUES (?, ?, ?, ?)',
        [tokenHash(token), username, new Date().toISOString(), new Date(expires).toISOString()]);
    });
    return { token, user: username, role: String(row.role), expires_at: expires };
  }

  /**
   * A client's sign-in (`authenticate`) from `address`: a password or a session token, refused with
   * RATE_LIMITED (details.retry_after_ms) while that user or address is backing off. Wrong tokens count too.
   */
  async signIn(credentials: { username: string; password: string } | { token: string }, address: string): Promise<Session> {
    const attempt = await this.limiter.begin('token' in credentials ? undefined : credentials.username, address);
    try {
      const session = 'token' in credentials ? await this.resume(credentials.token) : await this.login(credentials.username, credentials.password);
      await attempt.succeeded().catch(() => { /* the session is open; a stale shared count only errs on the safe side */ });
      return session;
    } catch (err) {
      // A wrong guess is answered only once it is counted (with the other replicas, on PostgreSQL).
      await attempt.failed();
      throw err;
    }
  }

  /** Resumes a session from its token (after a reconnect, or a CLI's saved token). */
  async resume(token: string): Promise<Session> {
    const row = await this.db.get(
      'SELECT s.username AS username, s.expires_at AS expires_at, u.role AS role FROM sessions s JOIN users u ON u.username = s.username WHERE s.token_hash = ?',
      [tokenHash(token)]);
    if (row === undefined) throw gridError('BAD_CREDENTIALS', 'the session token is unknown or was revoked; log in again');
    const expires = Date.parse(String(row.expires_at));
    if (expires <= Date.now()) {
      await this.db.run('DELETE FROM sessions WHERE token_hash = ?', [tokenHash(token)]);
      throw gridError('BAD_CREDENTIALS', 'the session token has expired; log in again');
    }
    return { token, user: String(row.username), role: String(row.role), expires_at: expires };
  }

  /**
   * Opens a session for `username` without a password: for the local node's runtime record, whose
   * file permissions are the proof (same OS user). The caller revokes it with logout().
   */
  async issueSession(username: string, ttlMs: number): Promise<Session> {
    const row = await this.db.get('SELECT role FROM users WHERE username = ?', [username]);
    if (row === undefined) throw gridError('NOT_FOUND', `no user ${username}`);
    const token = randomBytes(32).toString('base64url');
    const expires = Date.now() + ttlMs;
    await this.db.run('INSERT INTO sessions (token_hash, username, created, expires_at) VALUES (?, ?, ?, ?)',
      [tokenHash(token), username, new Date().toISOString(), new Date(expires).toISOString()]);
    return { token, user: username, role: String(row.role), expires_at: expires };
  }

  async logout(token: string): Promise<void> {
    await this.db.run('DELETE FROM sessions WHERE token_hash = ?', [tokenHash(token)]);
  }
}
