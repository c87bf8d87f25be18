// Authentication of model-centric FL workers: PyGrid's `server_config.authentication` (a process's host
// picks none, a shared `secret`, an RSA `pub_key`, and/or a third-party `endpoint`), answered with PyGrid's
// exact error strings so syft.js / KotlinSyft / SwiftSyft show what they always showed.
// Order as in PyGrid (`model_centric/auth/federated.py::verify_token`): the JWT check (secret, then pub_key)
// when either is set, then the endpoint when set; both must pass when both are configured.

import { createPublicKey, type KeyObject } from 'node:crypto';
import { jwtVerify } from 'jose';
import { gridError } from '../../core/errors';

/** PyGrid's `server_config.authentication`; `type` (e.g. "jwt") is informational, as in PyGrid. */
export interface FlAuthConfig {
  type?: string;
  secret?: string;
  pub_key?: string;
  endpoint?: string;
}

export type FlAuthResult = { ok: true } | { ok: false; error: string };

// PyGrid's strings, verbatim (clients show them to users; some tests match on them).
export const AUTH_REQUIRED = "Authentication is required, please pass an 'auth_token'.";
export const AUTH_INVALID = "The 'auth_token' you sent is invalid.";
export const AUTH_THIRD_PARTY_FAILED = "The 'auth_token' you sent did not pass 3rd party validation.";

/** Long enough for a third-party check, short enough that syft.js (10 s response timeout) still hears the answer. */
export const DEFAULT_ENDPOINT_TIMEOUT_MS = 5000;
/** A JWT is a few hundred bytes; anything this long is refused unread rather than parsed or forwarded. */
export const MAX_TOKEN_CHARS = 16 * 1024;
/** Allowed clock difference between the token's issuer and this node when checking `exp` / `nbf` (seconds). */
export const CLOCK_TOLERANCE_S = 30;

const KEYS = ['type', 'secret', 'pub_key', 'endpoint'] as const;
const MAX_CONFIG_STRING = 64 * 1024;

/**
 * Checks a process's `server_config.authentication` when it is hosted, so a typo cannot silently turn
 * authentication off (PyGrid ignored unknown keys and treated an empty secret as "no authentication").
 * `undefined` / `null` mean no authentication. Throws GRID_ERR_INVALID_MESSAGE naming the bad key.
 */
export function checkFlAuthConfig(config: unknown): FlAuthConfig {
  const where = 'server_config.authentication';
  if (config === undefined || config === null) return {};
  if (typeof config !== 'object' || Array.isArray(config)) {
    throw invalid(where, `${where} must be an object like {"type": "jwt", "secret": "…"}, got ${describe(config)}`);
  }
  const raw = config as Record<string, unknown>;
  for (const key of Object.keys(raw)) {
    if (!(KEYS as readonly string[]).includes(key)) {
      throw invalid(`${where}.${key}`, `${where}.${key} is not a setting the node knows; use ${KEYS.join(', ')} (a misspelt key would leave workers unauthenticated)`);
    }
  }
  const out: FlAuthConfig = {};
  for (const key of KEYS) {
    const value = raw[key];
    if (value === undefined || value === null) continue; // PyGrid's `.get(key, None)`: null is "not set"
    if (typeof value !== 'string') throw invalid(`${where}.${key}`, `${where}.${key} must be a string, got ${describe(value)}`);
    if (value.length === 0) throw invalid(`${where}.${key}`, `${where}.${key} is empty; remove it to run without it (an empty value would leave workers unauthenticated)`);
    if (value.length > MAX_CONFIG_STRING) throw invalid(`${where}.${key}`, `${where}.${key} is longer than ${MAX_CONFIG_STRING} characters`);
    out[key] = value;
  }
  if (out.pub_key !== undefined) {
    let key: KeyObject;
    try {
      key = createPublicKey(out.pub_key);
    } catch (err) {
      throw invalid(`${where}.pub_key`, `${where}.pub_key is not a PEM public key (${(err as Error).message}); pass the RSA public key as "-----BEGIN PUBLIC KEY-----…"`);
    }
    const bits = key.asymmetricKeyDetails?.modulusLength;
    if (key.asymmetricKeyType !== 'rsa') {
      throw invalid(`${where}.pub_key`, `${where}.pub_key is a ${key.asymmetricKeyType ?? 'non-RSA'} key; workers' tokens are checked as RS256, which needs an RSA key`);
    }
    if (bits === undefined || bits < 2048) {
      throw invalid(`${where}.pub_key`, `${where}.pub_key is a ${bits ?? '?'}-bit RSA key; RS256 tokens need a key of 2048 bits or more`);
    }
  }
  if (out.endpoint !== undefined) {
    let url: URL | undefined;
    try {
      url = new URL(out.endpoint);
    } catch {
      url = undefined;
    }
    if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
      throw invalid(`${where}.endpoint`, `${where}.endpoint must be an http:// or https:// URL, got ${JSON.stringify(out.endpoint.slice(0, 200))}`);
    }
  }
  if (out.type !== undefined && out.secret === undefined && out.pub_key === undefined && out.endpoint === undefined) {
    throw invalid(where, `${where} has a type (${JSON.stringify(out.type.slice(0, 40))}) but none of secret, pub_key, endpoint, so workers would not be authenticated; add one, or remove authentication`);
  }
  return out;
}

/**
 * Verifies a worker's `auth_token` against its process's authentication config. Never throws and never
 * rejects: every failure (bad token, unreachable endpoint, timeout, abort) is `{ ok: false, error }` with
 * PyGrid's message. `config` is expected to have passed checkFlAuthConfig.
 */
export async function verifyWorkerToken(
  config: FlAuthConfig | undefined,
  token: string | undefined,
  options: { endpointTimeoutMs?: number; signal?: AbortSignal } = {},
): Promise<FlAuthResult> {
  // PyGrid's `auth_enabled = endpoint or pub_key or secret` (empty strings count as unset there too).
  const secret = nonEmpty(config?.secret);
  const pubKey = nonEmpty(config?.pub_key);
  const endpoint = nonEmpty(config?.endpoint);
  if (secret === undefined && pubKey === undefined && endpoint === undefined) return { ok: true };
  // PyGrid checks `auth_token is None`; an empty string gets the same answer here, as it names the fix.
  if (typeof token !== 'string' || token.length === 0) return { ok: false, error: AUTH_REQUIRED };
  if (token.length > MAX_TOKEN_CHARS) return { ok: false, error: AUTH_INVALID };

  if (secret !== undefined || pubKey !== undefined) {
    const valid = (secret !== undefined && (await verifyHs256(token, secret))) || (pubKey !== undefined && (await verifyRs256(token, pubKey)));
    if (!valid) return { ok: false, error: AUTH_INVALID };
  }
  if (endpoint !== undefined) {
    const passed = await askEndpoint(endpoint, token, options.endpointTimeoutMs ?? DEFAULT_ENDPOINT_TIMEOUT_MS, options.signal);
    if (!passed) return { ok: false, error: AUTH_THIRD_PARTY_FAILED };
  }
  return { ok: true };
}

// Algorithm pinning. PyJWT 1.x's `jwt.decode(token, key)` let the token's own header pick the algorithm.
// We let the key decide instead: a `secret` verifies only HS256 and a `pub_key` only RS256 (what PyGrid's
// examples sign with: `jwt.encode(...)` defaults to HS256, the notebook uses RS256). Trusting the header
// invites algorithm confusion: a token "HS256-signed" with the public key's PEM text as the HMAC secret
// (anyone can do that, the key is public) would verify against a verifier that feeds the PEM to HMAC, and
// `alg: none` would verify against nothing. The cost: an issuer signing HS384/HS512/RS512/PS256 is refused.
// `exp` and `nbf` are honoured (with CLOCK_TOLERANCE_S), as PyJWT does; no other claim is required.

async function verifyHs256(token: string, secret: string): Promise<boolean> {
  try {
    await jwtVerify(token, new TextEncoder().encode(secret), { algorithms: ['HS256'], clockTolerance: CLOCK_TOLERANCE_S });
    return true;
  } catch {
    return false;
  }
}

async function verifyRs256(token: string, pem: string): Promise<boolean> {
  try {
    await jwtVerify(token, publicKey(pem), { algorithms: ['RS256'], clockTolerance: CLOCK_TOLERANCE_S });
    return true;
  } catch {
    return false;
  }
}

// Parsed keys, by PEM text: a process's key is used for every worker that authenticates. Bounded.
const keyCache = new Map<string, KeyObject>();
const KEY_CACHE_MAX = 64;

function publicKey(pem: string): KeyObject {
  let key = keyCache.get(pem);
  if (key === undefined) {
    key = createPublicKey(pem);
    if (keyCache.size >= KEY_CACHE_MAX) keyCache.delete(keyCache.keys().next().value as string);
    keyCache.set(pem, key);
  }
  return key;
}

// PyGrid: `requests.post(endpoint, data=json.dumps({"auth_token": token}))`, passed iff the status is 200.
// Redirects are not followed (a 3xx is not a 200), and the answer's body is never read: it is cancelled at
// the status line, so an endless body costs nothing (headers are bounded by Node's 16 KiB header limit).
// Who may point a process at an endpoint at all is decided at host time (FlEngine.host: an admin, or an
// endpoint the operator listed), since the node makes the request from inside its network.
async function askEndpoint(endpoint: string, token: string, timeoutMs: number, signal: AbortSignal | undefined): Promise<boolean> {
  const signals = [AbortSignal.timeout(Math.max(1, timeoutMs))];
  if (signal !== undefined) signals.push(signal);
  try {
    const res = await fetch(endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ auth_token: token }),
      redirect: 'manual',
      signal: AbortSignal.any(signals),
    });
    await res.body?.cancel().catch(() => undefined);
    return res.status === 200;
  } catch {
    return false; // unreachable, refused, timed out, aborted: the token did not pass
  }
}

/**
 * Whether `endpoint` is one the operator listed (`fl.authEndpoints`, `--fl-auth-endpoint`): same scheme,
 * host and port as a listed URL, and a path under its path ("https://auth.example.org/fl/" covers
 * "https://auth.example.org/fl/check", not "https://auth.example.org/admin"). Query and fragment of the
 * listed URL are ignored.
 */
export function endpointAllowed(endpoint: string, allowed: readonly string[]): boolean {
  let url: URL;
  try { url = new URL(endpoint); } catch { return false; }
  return allowed.some((entry) => {
    let a: URL;
    try { a = new URL(entry); } catch { return false; }
    if (a.protocol !== url.protocol || a.host !== url.host || url.username !== '' || url.password !== '') return false;
    const dir = a.pathname.endsWith('/') ? a.pathname : `${a.pathname}/`;
    return url.pathname === a.pathname || url.pathname.startsWith(dir);
  });
}

function nonEmpty(value: unknown): string | undefined {
  return typeof value === 'string' && value.length > 0 ? value : undefined;
}

function invalid(key: string, message: string): Error {
  return gridError('INVALID_MESSAGE', message, { key });
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'string' ? 'a string' : `a ${typeof value}`;
}
