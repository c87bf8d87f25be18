// Whose request is this: the address every per-address limit keys on (sign-in backoff, FL sign-ups, worker
// rows). Behind a reverse proxy the TCP peer is the proxy, so for a peer the operator trusts
// (--trust-proxy) the client is the rightmost X-Forwarded-For entry that is not itself a trusted proxy:
// proxies append the address they were reached from, so entries to the right of the first untrusted one
// were written by proxies we trust, and everything left of it is whatever the client chose to send. From
// an untrusted peer the header is never read. The node resolves this once per HTTP request or WebSocket,
// when it arrives (GridNode), and every consumer reads it back with clientAddress(req).

import { BlockList, isIP } from 'node:net';
import type { IncomingMessage } from 'node:http';
import { gridError } from '../core/errors';

/** Which TCP peers are reverse proxies whose X-Forwarded-For is believed. */
export interface TrustedProxies {
  /** The entries as given, for logs and messages. */
  readonly entries: readonly string[];
  has(address: string): boolean;
}

/** An IPv4-mapped IPv6 address (::ffff:1.2.3.4) as its IPv4 form; others unchanged. */
function plain(address: string): string {
  const a = address.toLowerCase();
  return a.startsWith('::ffff:') && isIP(a.slice(7)) === 4 ? a.slice(7) : a;
}

/**
 * Parses `--trust-proxy` / GRID_TRUST_PROXY entries: exact addresses (`10.0.0.5`, `::1`), CIDR ranges
 * (`10.0.0.0/8`, `fd00::/8`), or `loopback` (127.0.0.0/8 and ::1). Each entry may itself be a
 * comma-separated list. Throws INVALID_MESSAGE naming the bad entry.
 */
export function parseTrustedProxies(list: readonly string[]): TrustedProxies {
  const entries = list.flatMap((v) => v.split(',')).map((v) => v.trim()).filter((v) => v !== '');
  const blocks = new BlockList();
  for (const entry of entries) {
    if (entry.toLowerCase() === 'loopback') {
      blocks.addSubnet('127.0.0.0', 8, 'ipv4');
      blocks.addAddress('::1', 'ipv6');
      continue;
    }
    const [addr = '', bits, ...rest] = entry.split('/');
    const family = isIP(plain(addr));
    const prefix = bits === undefined ? undefined : Number(bits);
    const max = family === 4 ? 32 : 128;
    if (family === 0 || rest.length > 0 || (prefix !== undefined && (!/^\d{1,3}$/.test(bits!) || prefix > max))) {
      throw gridError('INVALID_MESSAGE', `--trust-proxy ${JSON.stringify(entry)} is not an address, a CIDR range (10.0.0.0/8, fd00::/8) or "loopback"`);
    }
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (prefix === undefined) blocks.addAddress(plain(addr), type);
    else blocks.addSubnet(plain(addr), prefix, type);
  }
  return {
    entries,
    has(address: string): boolean {
      const a = plain(address);
      const family = isIP(a);
      return family !== 0 && blocks.check(a, family === 4 ? 'ipv4' : 'ipv6');
    },
  };
}

/** An X-Forwarded-For entry as a bare address: `[::1]:80` and `1.2.3.4:80` lose their port. Undefined when it is no address. */
function forwardedEntry(entry: string): string | undefined {
  let e = entry.trim();
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(e);
  if (bracketed) e = bracketed[1]!;
  else if (/^[\d.]+:\d+$/.test(e)) e = e.slice(0, e.indexOf(':'));
  return isIP(e) !== 0 ? plain(e) : undefined;
}

/**
 * The client address of a connection from `peer` carrying `forwardedFor` (the X-Forwarded-For header,
 * repeated headers joined): `peer` itself unless it is trusted. Walking the header from the right, each
 * trusted hop hands over to the entry before it; the first untrusted entry is the client. A malformed
 * entry stops the walk at the last good hop, so junk a client writes never becomes a key of its own.
 */
export function resolveClientAddress(peer: string, forwardedFor: string | string[] | undefined, trusted: TrustedProxies | undefined): string {
  if (trusted === undefined || forwardedFor === undefined || !trusted.has(peer)) return peer;
  const hops = (Array.isArray(forwardedFor) ? forwardedFor.join(',') : forwardedFor).split(',');
  let client = peer;
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = forwardedEntry(hops[i]!);
    if (hop === undefined) break;
    client = hop;
    if (!trusted.has(hop)) break;
  }
  return client;
}

const resolved = new WeakMap<IncomingMessage, string>();
/** Requests that came through a trusted proxy (which said for whom). */
const proxied = new WeakSet<IncomingMessage>();

/** Resolves and remembers the client address of `req` (the node calls this once, as each request or upgrade arrives). */
export function noteClientAddress(req: IncomingMessage, trusted: TrustedProxies | undefined): string {
  const peer = req.socket.remoteAddress ?? '';
  // No trusted proxy: the address is the TCP peer, which clientAddress() falls back to.
  if (trusted === undefined) return peer;
  const forwardedFor = req.headers['x-forwarded-for'];
  const address = resolveClientAddress(peer, forwardedFor, trusted);
  resolved.set(req, address);
  if (forwardedFor !== undefined && trusted.has(peer)) proxied.add(req);
  return address;
}

/** The client address of `req` as the node resolved it; the TCP peer for a request it did not see arrive. */
export function clientAddress(req: IncomingMessage): string {
  return resolved.get(req) ?? req.socket.remoteAddress ?? '';
}

/** Whether `req` came through a trusted reverse proxy: its client is elsewhere, never "on this machine". */
export function cameThroughProxy(req: IncomingMessage): boolean {
  return proxied.has(req);
}
