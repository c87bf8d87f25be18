// A worker's side of PyGrid's speed test (reference §1.9): ping = round trips of GET ?is_ping=1, download
// = a timed GET of the node's sample, upload = a timed POST. Units are syft.js's: milliseconds and
// Mbit/s (KotlinSyft sends KB/s; the node compares numbers as they come, so a process's minimums are in
// the units of the workers it expects). Bounded: at most `bytes` each way, whatever the sample's size.

import * as http from 'node:http';
import * as https from 'node:https';
import { GridError, gridError, toGridError } from './errors';

export interface SpeedTestOptions {
  /** Bytes timed each way. Default 8 MiB (the node's sample is 64 MiB; a shorter read is enough on a LAN). */
  bytes?: number;
  /** Round trips for the ping (the median is taken). Default 5. */
  pings?: number;
  timeoutMs: number;
  ca?: string | Buffer | (string | Buffer)[];
  signal?: AbortSignal;
}

export interface MeasuredSpeeds {
  /** Median round trip, ms. */
  ping: number;
  /** Mbit/s. */
  download: number;
  /** Mbit/s. */
  upload: number;
}

const DEFAULT_BYTES = 8 * 1024 * 1024;

interface Exchange { status: number; bytes: number; seconds: number; body: Buffer }

/** One request; the response body is counted (kept only when small), and cut off after `readLimit` bytes. */
function exchange(url: URL, opts: { method: 'GET' | 'POST'; upload?: number; readLimit: number; timeoutMs: number; ca?: SpeedTestOptions['ca']; signal?: AbortSignal }): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) { reject(toGridError(opts.signal.reason, 'ABORTED')); return; }
    const mod = url.protocol === 'https:' ? https : http;
    const t0 = performance.now();
    let settled = false;
    const finish = (err: GridError | undefined, ex?: Exchange) => {
      if (settled) return;
      settled = true;
      opts.signal?.removeEventListener('abort', onAbort);
      if (err) reject(err); else resolve(ex!);
    };
    const req = mod.request(url, {
      method: opts.method, timeout: opts.timeoutMs, ...(opts.ca !== undefined && { ca: opts.ca }),
      ...(opts.upload !== undefined && { headers: { 'content-type': 'application/octet-stream', 'content-length': String(opts.upload) } }),
    }, (res) => {
      const status = res.statusCode ?? 0;
      const kept: Buffer[] = [];
      let bytes = 0;
      res.on('data', (c: Buffer) => {
        bytes += c.length;
        if (bytes <= 64 * 1024) kept.push(c);
        if (bytes >= opts.readLimit) {
          const seconds = (performance.now() - t0) / 1000;
          res.destroy();
          finish(undefined, { status, bytes, seconds, body: Buffer.concat(kept) });
        }
      });
      res.on('end', () => finish(undefined, { status, bytes, seconds: (performance.now() - t0) / 1000, body: Buffer.concat(kept) }));
      res.on('error', (e) => finish(gridError('CONNECTION_DROPPED', `${url.pathname}: the speed test broke off (${e.message})`)));
    });
    req.on('timeout', () => req.destroy(gridError('TIMEOUT', `${url.host} did not answer the speed test within ${opts.timeoutMs} ms`)));
    req.on('error', (e) => finish(e instanceof GridError ? e : gridError('NOT_CONNECTED', `${url.host}: the speed test failed (${e.message})`)));
    const onAbort = () => req.destroy(toGridError(opts.signal!.reason, 'ABORTED'));
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    if (opts.upload === undefined) { req.end(); return; }
    // The upload body: one shared block of "x", written with backpressure.
    const block = Buffer.alloc(Math.min(opts.upload, 256 * 1024), 'x');
    let left = opts.upload;
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, block.length);
        left -= n;
        if (!req.write(n === block.length ? block : block.subarray(0, n))) { req.once('drain', pump); return; }
      }
      req.end();
    };
    pump();
  });
}

function refused(ex: Exchange, what: string): GridError {
  let message = `HTTP ${ex.status}`;
  try {
    const body = JSON.parse(ex.body.toString('utf8')) as { error?: unknown };
    if (typeof body.error === 'string') message = body.error;
  } catch { /* not JSON */ }
  return gridError(ex.status === 401 || ex.status === 403 ? 'FORBIDDEN' : ex.status === 404 ? 'NOT_FOUND' : 'INTERNAL', `the node refused the speed test's ${what}: ${message}`, { http_status: ex.status });
}

const mbps = (bytes: number, seconds: number) => (bytes * 8) / 1e6 / Math.max(seconds, 1e-6);

/** Measures ping, download and upload against `<base>model-centric/speed-test` for an authenticated worker. */
export async function measureSpeeds(base: URL, workerId: string, opts: SpeedTestOptions): Promise<MeasuredSpeeds> {
  const bytes = opts.bytes ?? DEFAULT_BYTES;
  const pings = opts.pings ?? 5;
  if (!(Number.isInteger(bytes) && bytes > 0)) throw new RangeError(`opts.bytes must be a positive integer, got ${opts.bytes}`);
  if (!(Number.isInteger(pings) && pings > 0)) throw new RangeError(`opts.pings must be a positive integer, got ${opts.pings}`);
  const url = (extra: Record<string, string> = {}) => {
    const u = new URL('model-centric/speed-test', base);
    u.searchParams.set('worker_id', workerId);
    u.searchParams.set('random', String(Math.random()));
    for (const [k, v] of Object.entries(extra)) u.searchParams.set(k, v);
    return u;
  };
  const common = { timeoutMs: opts.timeoutMs, ...(opts.ca !== undefined && { ca: opts.ca }), ...(opts.signal !== undefined && { signal: opts.signal }) };
  const rtts: number[] = [];
  for (let i = 0; i < pings; i++) {
    const ex = await exchange(url({ is_ping: '1' }), { method: 'GET', readLimit: 64 * 1024, ...common });
    if (ex.status !== 200) throw refused(ex, 'ping');
    rtts.push(ex.seconds * 1000);
  }
  rtts.sort((a, b) => a - b);
  const down = await exchange(url(), { method: 'GET', readLimit: bytes, ...common });
  if (down.status !== 200) throw refused(down, 'download');
  const up = await exchange(url(), { method: 'POST', upload: bytes, readLimit: 64 * 1024, ...common });
  if (up.status !== 200) throw refused(up, 'upload');
  return { ping: rtts[Math.floor(rtts.length / 2)]!, download: mbps(down.bytes, down.seconds), upload: mbps(bytes, up.seconds) };
}
