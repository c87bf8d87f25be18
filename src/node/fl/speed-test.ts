// PyGrid's `/model-centric/speed-test` (§1.9): the route FL workers measure their link with before a
// cycle-request. GET sends a 64 MiB multipart sample (download), GET ?is_ping=1 answers `{}` (latency),
// POST swallows an upload and answers `{}` (upload). The sample is streamed from one shared 1 MiB buffer
// with backpressure, so a transfer costs the node about a megabyte however many workers test at once.

import { randomBytes } from 'node:crypto';
import type http from 'node:http';

/** PyGrid's `b"x" * 67108864`. */
export const SPEED_TEST_SAMPLE_BYTES = 64 * 1024 * 1024;
/** An upload is drained up to this many bytes (KotlinSyft's 64 MiB multipart fits with room); past it, 413 and close. */
export const SPEED_TEST_MAX_UPLOAD_BYTES = 128 * 1024 * 1024;
const CHUNK_BYTES = 1024 * 1024;
const MAX_WORKER_ID_CHARS = 256;

let chunk: Buffer | undefined; // shared, never written after it is filled

/**
 * Answers one speed-test request. `query` is the request's parsed query string (syft.js appends
 * `?<random>` to its URL, so `random` arrives as `0.1?0.2`; any non-empty value is accepted).
 * `worker_id` must be a worker this node authenticated. Errors are PyGrid-style `{"error": …}` bodies.
 */
export function handleSpeedTest(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  query: URLSearchParams,
  isKnownWorker: (workerId: string) => boolean,
  cors: Record<string, string> = {},
): void {
  const method = req.method ?? 'GET';
  if (method !== 'GET' && method !== 'POST') {
    return refuse(req, res, 405, `${method} is not supported on the speed test; workers GET it (download, or ?is_ping=1) and POST to it (upload)`, { ...cors, allow: 'GET, POST' });
  }
  // PyGrid: `if not _worker_id or not _random` — empty counts as missing.
  const workerId = query.get('worker_id') ?? '';
  const random = query.get('random') ?? '';
  const missing = [workerId === '' ? 'worker_id' : undefined, random === '' ? 'random' : undefined].filter((m): m is string => m !== undefined);
  if (missing.length > 0) {
    return refuse(req, res, 400, `the speed test needs the query parameter${missing.length > 1 ? 's' : ''} ${missing.join(' and ')} (worker_id from model-centric/authenticate, random to defeat caches)`, cors);
  }
  if (workerId.length > MAX_WORKER_ID_CHARS || !isKnownWorker(workerId)) {
    return refuse(req, res, 401, 'worker_id is not a worker of this node; authenticate first (model-centric/authenticate)', cors);
  }
  if (method === 'POST') return drainUpload(req, res, cors);
  // PyGrid tests `is_ping is None`: any is_ping, even empty, asks for a ping.
  if (query.has('is_ping')) return sendJson(res, 200, {}, cors);
  sendSample(res, cors);
}

// requests_toolbelt's MultipartEncoder({"sample": b"x" * 64 MiB}), byte for byte, with a length up front
// (syft.js meters the download through XHR progress events).
function sendSample(res: http.ServerResponse, cors: Record<string, string>): void {
  const boundary = randomBytes(16).toString('hex');
  const head = Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="sample"\r\n\r\n`, 'latin1');
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`, 'latin1');
  chunk ??= Buffer.alloc(CHUNK_BYTES, 'x');
  const body = chunk;
  res.writeHead(200, {
    ...cors,
    'content-type': `multipart/form-data; boundary=${boundary}`,
    'content-length': String(head.length + SPEED_TEST_SAMPLE_BYTES + tail.length),
    'cache-control': 'no-store',
  });
  res.write(head);
  let sent = 0;
  const pump = (): void => {
    // A worker that stops listening (syft.js aborts once its estimate is stable) ends the transfer.
    while (!res.destroyed) {
      if (sent >= SPEED_TEST_SAMPLE_BYTES) {
        res.end(tail);
        return;
      }
      const n = Math.min(body.length, SPEED_TEST_SAMPLE_BYTES - sent);
      sent += n;
      if (!res.write(n === body.length ? body : body.subarray(0, n))) {
        res.once('drain', pump);
        return;
      }
    }
  };
  res.once('close', () => res.off('drain', pump));
  pump();
}

// The upload's bytes are counted and dropped (PyGrid ignores the body; syft.js sends it raw, KotlinSyft as
// multipart). The answer comes when the whole body is in, which is what the worker's clock measures.
function drainUpload(req: http.IncomingMessage, res: http.ServerResponse, cors: Record<string, string>): void {
  let received = 0;
  const onData = (data: Buffer): void => {
    received += data.length;
    if (received > SPEED_TEST_MAX_UPLOAD_BYTES) {
      req.off('data', onData);
      req.off('end', onEnd);
      req.pause(); // read no further; the connection closes once the answer is out
      sendJson(res, 413, { error: `the speed test reads at most ${SPEED_TEST_MAX_UPLOAD_BYTES} bytes of upload` }, { ...cors, connection: 'close' });
    }
  };
  const onEnd = (): void => sendJson(res, 200, {}, cors);
  req.on('data', onData);
  req.once('end', onEnd);
  req.on('error', () => undefined); // a worker that aborts its upload (syft.js does, once stable) is not an error of ours
}

function refuse(req: http.IncomingMessage, res: http.ServerResponse, status: number, error: string, headers: Record<string, string>): void {
  // An unread request body must not keep the connection busy: close it after the answer.
  const hasBody = req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0';
  const chunked = req.headers['transfer-encoding'] !== undefined;
  sendJson(res, status, { error }, hasBody || chunked ? { ...headers, connection: 'close' } : headers);
}

function sendJson(res: http.ServerResponse, status: number, body: object, headers: Record<string, string>): void {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)) });
  res.end(text);
}
