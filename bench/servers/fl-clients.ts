// Client thread of bench/fl-cycle.ts and bench/replicas.ts (driven through bench/fl-workers.ts): many
// lightweight protocol-only FL workers on raw `ws`, each with its own connection, spread round-robin over
// `urls` (the replicas of one node). 'join': authenticate + cycle-request for each (the node's JSON
// envelope, as a PyGrid worker speaks it). 'report': each sends the same precomputed diff (base64 State) in a report
// frame, `window` reports in flight at most; against the baseline sink the frames are byte-for-byte
// the same size. Not a simulation of training: the point is the node.

import { parentPort, workerData } from 'node:worker_threads';
import { WebSocket } from 'ws';

export interface ClientsInit {
  urls: string[];
  /** Index of this thread's first worker among all threads' (round-robin over urls, source addresses). */
  first: number;
  workers: number; window: number; name: string; version: string; diffB64: string; baseline: boolean;
  /**
   * Each worker connects from its own loopback address (127.1.x.y), as real workers come from their own:
   * the node bounds authenticate + cycle-request per address (600 a minute), and grid-node has no flag
   * to lift it for a thousand workers on one address.
   */
  spreadAddresses: boolean;
}
export type ClientsCmd = { type: 'join' } | { type: 'report' } | { type: 'stop' };
export type ClientsMsg =
  | { type: 'joined'; accepted: number; errors: string[] }
  | { type: 'reported'; ok: number; errors: string[]; firstSend: number; lastReply: number; bytes: number };

const init = workerData as ClientsInit;
const port = parentPort!;
const now = () => performance.timeOrigin + performance.now();

interface Conn { ws: WebSocket; next: ((m: Record<string, any>) => void) | undefined; workerId: string; requestKey: string }
const conns: Conn[] = [];
let seq = 0;

function open(index: number): Promise<Conn> {
  return new Promise((resolve, reject) => {
    const url = init.urls[index % init.urls.length]!;
    const localAddress = init.spreadAddresses ? `127.1.${Math.floor(index / 250) % 256}.${1 + (index % 250)}` : undefined;
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 64 * 1024 * 1024, ...(localAddress !== undefined && { localAddress }) });
    // Fake ids of the real ids' lengths (a UUID, a sha256 hex) until the node gives the real ones.
    const c: Conn = { ws, next: undefined, workerId: '00000000-0000-4000-8000-000000000000', requestKey: '0'.repeat(64) };
    ws.on('message', (raw) => { const f = c.next; c.next = undefined; f?.(JSON.parse(String(raw)) as Record<string, any>); });
    ws.once('open', () => resolve(c));
    ws.once('error', reject);
  });
}

function call(c: Conn, frame: string | Buffer): Promise<Record<string, any>> {
  return new Promise((resolve) => { c.next = resolve; c.ws.send(frame, { binary: false }); });
}

const req = (type: string, data: unknown) => JSON.stringify({ type, request_id: `q${++seq}`, data });

/** Runs fn over every connection with at most `window` at once. */
async function windowed(fn: (c: Conn) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(Array.from({ length: Math.min(init.window, conns.length) }, async () => {
    while (i < conns.length) await fn(conns[i++]!);
  }));
}

const diff = Buffer.from(init.diffB64, 'latin1');
function reportFrame(c: Conn): Buffer {
  const head = Buffer.from(`{"type":"model-centric/report","request_id":"r${++seq}","data":{"worker_id":"${c.workerId}","request_key":"${c.requestKey}","num_samples":10,"diff":"`);
  return Buffer.concat([head, diff, Buffer.from('"}}')]);
}

port.on('message', (m: ClientsCmd) => {
  if (m.type === 'stop') {
    for (const c of conns) c.ws.terminate();
    port.close();
    return;
  }
  if (m.type === 'join') {
    void (async () => {
      const errors: string[] = [];
      let accepted = 0;
      for (let i = 0; i < init.workers; i++) conns.push(await open(init.first + i));
      if (init.baseline) { port.postMessage({ type: 'joined', accepted: conns.length, errors } satisfies ClientsMsg); return; }
      await windowed(async (c) => {
        const auth = await call(c, req('model-centric/authenticate', { model_name: init.name, model_version: init.version }));
        if (auth.data?.worker_id === undefined) { errors.push(JSON.stringify(auth.data)); return; }
        c.workerId = auth.data.worker_id as string;
        const cyc = await call(c, req('model-centric/cycle-request', { worker_id: c.workerId, model: init.name, version: init.version, ping: 0, download: 0, upload: 0 }));
        if (cyc.data?.status !== 'accepted') { errors.push(JSON.stringify(cyc.data)); return; }
        c.requestKey = cyc.data.request_key as string;
        accepted++;
      });
      port.postMessage({ type: 'joined', accepted, errors: errors.slice(0, 3) } satisfies ClientsMsg);
    })();
    return;
  }
  void (async () => {
    const errors: string[] = [];
    let ok = 0, bytes = 0;
    const firstSend = now();
    await windowed(async (c) => {
      const frame = reportFrame(c);
      bytes += frame.length;
      const r = await call(c, frame);
      if (r.data?.status === 'success') ok++;
      else errors.push(JSON.stringify(r.data ?? r).slice(0, 200));
    });
    port.postMessage({ type: 'reported', ok, errors: errors.slice(0, 3), firstSend, lastReply: now(), bytes } satisfies ClientsMsg);
  })();
});
