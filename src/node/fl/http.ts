// PyGrid's model-centric HTTP routes (reference §1.5): syft.js and KotlinSyft download the model and
// plans and run the speed test (speed-test.ts) here in every mode, and post authenticate / cycle-request /
// report here in HTTP mode. Bodies are bare (no {type, data} wrapper); errors are {"error": <PyGrid's
// string>} plus our status and code.

import type * as http from 'node:http';
import { toGridError, type GridError } from '../../core/errors';
import { FlAuthenticate, FlCycleRequest, FlReport } from '../../core/protocol/fl-messages';
import { describeIssues } from '../../core/protocol/catalogue';
import { gridError } from '../../core/errors';
import type { Logger } from '../../core/logger';
import type { CycleRequest, FlEngine } from './cycles';
import { flErrorData } from './handlers';
import { clientAddress } from '../client-address';
import { handleSpeedTest } from './speed-test';
import type { FlStore } from './store';

/** Largest POST body: a report carries a whole model's diff in base64. */
export const MAX_FL_BODY_BYTES = 256 * 1024 * 1024;
/** Largest authenticate / cycle-request body (a token and a few fields): anyone may send these. */
const MAX_SMALL_BODY_BYTES = 64 * 1024;

export interface FlHttp {
  /** Answers a /model-centric/… request; false when `pathname` is not one of these routes. */
  handle(req: http.IncomingMessage, res: http.ServerResponse, pathname: string, headers: Record<string, string>): Promise<boolean>;
}

const POSTS = {
  '/model-centric/authenticate': FlAuthenticate,
  '/model-centric/cycle-request': FlCycleRequest,
  '/model-centric/report': FlReport,
} as const;

function statusOf(err: GridError, route: string): number {
  if (err.code === 'GRID_ERR_FORBIDDEN') return 401;
  if (err.code === 'GRID_ERR_NOT_FOUND' && route === '/model-centric/retrieve-model') return 404;
  if (err.code === 'GRID_ERR_INTERNAL') return 500;
  if (err.code === 'GRID_ERR_PAYLOAD_TOO_LARGE') return 413;
  if (err.code === 'GRID_ERR_RATE_LIMITED') return 429;
  return 400;
}

function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string>): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sendBytes(res: http.ServerResponse, bytes: Uint8Array, headers: Record<string, string>): void {
  res.writeHead(200, { ...headers, 'content-type': 'application/octet-stream', 'content-length': bytes.length });
  res.end(bytes);
}

function readBody(req: http.IncomingMessage, limit: number): Promise<unknown> {
  if (Number(req.headers['content-length'] ?? 0) > limit) return Promise.reject(gridError('PAYLOAD_TOO_LARGE', `the body is over this node's ${limit}-byte limit`));
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) { req.pause(); reject(gridError('PAYLOAD_TOO_LARGE', `the body is over this node's ${limit}-byte limit`)); return; }
      parts.push(c);
    });
    req.on('end', () => {
      try { resolve(JSON.parse(Buffer.concat(parts).toString('utf8'))); } catch { reject(gridError('INVALID_MESSAGE', 'the body is not JSON')); }
    });
    req.on('error', reject);
  });
}

function intParam(q: URLSearchParams, name: string): number {
  const v = q.get(name);
  if (v === null || !/^\d{1,15}$/.test(v)) throw gridError('INVALID_MESSAGE', `query parameter "${name}" must be a whole number`);
  return Number(v);
}

function strParam(q: URLSearchParams, name: string): string {
  const v = q.get(name);
  if (v === null || v.length === 0) throw gridError('INVALID_MESSAGE', `query parameter "${name}" is required`);
  return v;
}

export function flHttp(engine: FlEngine, store: FlStore, opts: { log: Logger; maxBodyBytes?: number }): FlHttp {
  const limit = opts.maxBodyBytes ?? MAX_FL_BODY_BYTES;

  async function get(pathname: string, q: URLSearchParams): Promise<Uint8Array | undefined> {
    switch (pathname) {
      case '/model-centric/get-model': {
        const p = await engine.checkKey(strParam(q, 'worker_id'), strParam(q, 'request_key'), intParam(q, 'model_id'));
        return (await engine.checkpointBytes(p.id))!.bytes;
      }
      case '/model-centric/get-plan':
      case '/model-centric/get-protocol': {
        const p = await engine.checkKey(strParam(q, 'worker_id'), strParam(q, 'request_key'));
        const plan = pathname === '/model-centric/get-plan';
        const id = intParam(q, plan ? 'plan_id' : 'protocol_id');
        const asset = await store.asset(p.id, plan ? 'plan' : 'protocol', id, q.get('receive_operations_as') ?? 'list');
        if (asset === undefined) throw gridError('NOT_FOUND', `this FL process has no ${plan ? 'plan' : 'protocol'} ${id}`);
        return asset.bytes;
      }
      case '/model-centric/retrieve-model': {
        const name = strParam(q, 'name');
        const version = q.get('version') ?? undefined;
        const p = await store.findProcess(name, version);
        if (p === undefined) throw gridError('NOT_FOUND', `no FL process ${name}${version !== undefined ? ` version ${version}` : ''}`);
        // Open as in PyGrid, except where workers must authenticate: the model would leak past that check.
        if (p.serverConfig.authentication !== undefined) {
          throw gridError('FORBIDDEN', `FL process ${p.name} ${p.version} requires worker authentication; its owner downloads checkpoints over the node's WebSocket (fl-download-checkpoint)`);
        }
        // A process hosted from a model on this node: its checkpoints are that model's versions, whose own
        // permissions (allow_download) govern them, and checkpoint 1 is the model itself.
        if (p.linkedModel !== undefined) {
          throw gridError('FORBIDDEN', `FL process ${p.name} ${p.version} trains the node's model ${p.linkedModel}: its checkpoints are that model's versions, downloaded as models (download-model, by the model's permissions) or by the process's owner (fl-download-checkpoint)`);
        }
        const which = q.get('checkpoint') ?? 'latest';
        const c = await engine.checkpointBytes(p.id, /^\d+$/.test(which) ? Number(which) : which);
        if (c === undefined) throw gridError('NOT_FOUND', `FL process ${p.name} ${p.version} has no checkpoint ${JSON.stringify(which)}`);
        return c.bytes;
      }
      default:
        return undefined;
    }
  }

  return {
    async handle(req, res, pathname, headers) {
      if (pathname === '/model-centric/speed-test') {
        // Only workers this node authenticated may pull 64 MiB or push 128 MiB (speed-test.ts answers 401 otherwise).
        const query = new URL(req.url ?? '/', 'http://node').searchParams;
        const asked = query.get('worker_id') ?? '';
        const known = asked !== '' && asked.length <= 256 && await store.worker(asked) !== undefined;
        handleSpeedTest(req, res, query, (id) => known && id === asked, headers);
        return true;
      }
      const post = POSTS[pathname as keyof typeof POSTS];
      const isGet = req.method === 'GET' || req.method === 'HEAD';
      if (post === undefined && !['/model-centric/get-model', '/model-centric/get-plan', '/model-centric/get-protocol', '/model-centric/retrieve-model'].includes(pathname)) return false;
      try {
        if (post !== undefined) {
          if (req.method !== 'POST') throw gridError('INVALID_MESSAGE', `${pathname} takes POST with a JSON body`);
          const body = await readBody(req, pathname === '/model-centric/report' ? limit : Math.min(limit, MAX_SMALL_BODY_BYTES));
          const parsed = post.request.safeParse(body);
          if (!parsed.success) throw gridError('INVALID_MESSAGE', describeIssues(parsed.error, 'body'));
          const d = parsed.data as Record<string, unknown>;
          const reply = pathname === '/model-centric/authenticate'
            ? await engine.authenticate(d as never, clientAddress(req))
            : pathname === '/model-centric/cycle-request'
              ? await engine.cycleRequest({ ...(d as unknown as CycleRequest), version: (d.version as string | null | undefined) ?? undefined }, clientAddress(req))
              : await engine.report(d as never);
          sendJson(res, 200, reply, headers);
          return true;
        }
        if (!isGet) throw gridError('INVALID_MESSAGE', `${pathname} takes GET`);
        const bytes = await get(pathname, new URL(req.url ?? '/', 'http://node').searchParams);
        sendBytes(res, bytes!, headers);
      } catch (err) {
        let e = toGridError(err);
        if (e.code === 'GRID_ERR_INTERNAL') {
          // Its text can hold server paths: the client gets a fixed message, the log the rest.
          opts.log.error({ err, route: pathname }, 'FL http route failed');
          e = gridError('INTERNAL', 'the node failed to answer this request; its log has the details');
        }
        // The body PyGrid-era clients read; our code rides in a header (KotlinSyft parses bodies strictly).
        // An unread body is not drained: past the limit the connection closes with the answer.
        const tooLarge = e.code === 'GRID_ERR_PAYLOAD_TOO_LARGE';
        sendJson(res, statusOf(e, pathname), flErrorData('model-centric/', e), { ...headers, 'x-grid-error-code': e.code, ...(tooLarge && { connection: 'close' }) });
      }
      return true;
    },
  };
}
