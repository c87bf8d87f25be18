// Which web pages may talk to the node. A browser names the page's origin in the Origin header on a
// WebSocket handshake and on cross-origin HTTP requests; clients outside a browser (the CLI, the extension
// host, workers) send none and are not affected. Without an allow-list every page is refused: any site a
// user visits could otherwise read (and drive) the node on their machine (cross-site WebSocket hijacking).
// One policy object serves the WebSocket upgrade and every HTTP route, so routes added later (PyGrid's
// model-centric worker routes, which browser workers call) apply the same rules through corsHeaders/preflight.

import type { IncomingHttpHeaders } from 'node:http';
import { gridError } from '../core/errors';

export interface CorsPolicy {
  /** Exact origins, normalised (`https://app.example:8443`); empty by default. */
  readonly allowOrigins: ReadonlySet<string>;
  /** Methods a preflight allows. */
  readonly methods: readonly string[];
  /** Request headers a preflight allows. */
  readonly headers: readonly string[];
  /** How long a browser may cache a preflight answer (seconds). */
  readonly maxAgeS: number;
}

export const DEFAULT_CORS_METHODS = ['GET', 'HEAD', 'POST', 'OPTIONS'] as const;
export const DEFAULT_CORS_HEADERS = ['content-type', 'authorization'] as const;
export const DEFAULT_CORS_MAX_AGE_S = 600;

/**
 * An allow-list entry in its canonical form (what browsers send): `scheme://host[:port]`, lower case,
 * default port dropped. Anything with a path, a query, credentials or no host is refused, and so is
 * `null` (sent by sandboxed frames and file:// pages, which any page can produce).
 */
export function normalizeOrigin(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw gridError('INVALID_URL', `allowed origin ${JSON.stringify(value)} is not an origin; write it as a browser sends it, e.g. https://app.example.org or http://localhost:3000`);
  }
  const bare = url.pathname === '/' && url.search === '' && url.hash === '' && url.username === '' && url.password === '' && !value.includes('?') && !value.includes('#');
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || !bare) {
    const example = url.protocol === 'http:' || url.protocol === 'https:' ? url.origin : 'https://app.example.org';
    throw gridError('INVALID_URL', `allowed origin ${JSON.stringify(value)} must be only scheme://host[:port] (http or https, no path), e.g. ${example}`);
  }
  return url.origin;
}

export function corsPolicy(allowOrigins: readonly string[] = [], opts: { methods?: readonly string[]; headers?: readonly string[]; maxAgeS?: number } = {}): CorsPolicy {
  return {
    allowOrigins: new Set(allowOrigins.map(normalizeOrigin)),
    methods: opts.methods ?? DEFAULT_CORS_METHODS,
    headers: opts.headers ?? DEFAULT_CORS_HEADERS,
    maxAgeS: opts.maxAgeS ?? DEFAULT_CORS_MAX_AGE_S,
  };
}

/** The page's origin, if a browser sent one (`Sec-WebSocket-Origin` is the handshake header of protocol version 8). */
export function requestOrigin(headers: IncomingHttpHeaders): string | undefined {
  const v = headers.origin ?? headers['sec-websocket-origin'];
  return typeof v === 'string' ? v : undefined;
}

/** Requests without an Origin come from outside a browser and are always allowed. */
export function originAllowed(origin: string | undefined, policy: CorsPolicy): boolean {
  return origin === undefined || policy.allowOrigins.has(origin);
}

/** Response headers for a request from `origin`: the origin echoed only when it is allowed, never `*`. */
export function corsHeaders(origin: string | undefined, policy: CorsPolicy): Record<string, string> {
  if (origin === undefined) return {};
  // Vary even on refusal, so a cache never serves one origin's answer to another.
  if (!policy.allowOrigins.has(origin)) return { vary: 'Origin' };
  return { 'access-control-allow-origin': origin, vary: 'Origin' };
}

/** The answer to an OPTIONS request: 204 with the allowed methods and headers, or 403 for a refused origin. */
export function preflight(headers: IncomingHttpHeaders, policy: CorsPolicy): { status: 204 | 403; headers: Record<string, string> } {
  const origin = requestOrigin(headers);
  if (!originAllowed(origin, policy)) return { status: 403, headers: corsHeaders(origin, policy) };
  const allow = policy.methods.join(', ');
  if (origin === undefined) return { status: 204, headers: { allow } };
  return {
    status: 204,
    headers: {
      ...corsHeaders(origin, policy),
      'access-control-allow-methods': allow,
      'access-control-allow-headers': policy.headers.join(', '),
      'access-control-max-age': String(policy.maxAgeS),
    },
  };
}

/** The coded refusal shown to a page whose origin is not allowed (truncated: the header is the caller's text). */
export function originRefusal(origin: string) {
  const shown = origin.length > 200 ? `${origin.slice(0, 200)}…` : origin;
  return gridError('ORIGIN_NOT_ALLOWED', `this node does not accept web pages from ${shown}; its operator can allow them with --allow-origin ${shown}`);
}
