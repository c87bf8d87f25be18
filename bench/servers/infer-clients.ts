// Client thread of bench/replicas.ts: `clients` GridClients (each its own connection, signed in), spread
// round-robin over `urls` (the replicas of one node). 'run': each client runs the model on a batch of
// `rows`, one request at a time, back to back until `ms` have passed; the thread answers with how many
// succeeded, how many failed, and every request's latency. Shared memory off: a client behind a load
// balancer is on another machine, and every replica should see the same bytes.

import { parentPort, workerData } from 'node:worker_threads';
import { GridClient } from '../../src/core/client';
import type { NamedTensors } from '../../src/core/protocol/tensor';

export interface InferInit { urls: string[]; first: number; clients: number; password: string; modelId: string; cols: number }
export type InferCmd = { type: 'run'; ms: number; rows: number } | { type: 'stop' };
export type InferMsg =
  | { type: 'ready'; connected: number; errors: string[] }
  | { type: 'ran'; ok: number; failed: number; errors: string[]; latenciesMs: number[] };

const init = workerData as InferInit;
const port = parentPort!;
const clients: GridClient[] = [];

function feeds(rows: number): NamedTensors {
  const data = new Float32Array(rows * init.cols);
  for (let i = 0; i < data.length; i++) data[i] = ((i * 7919) % 1000) / 1000 - 0.5;
  return { x: { dtype: 'float32', dims: [rows, init.cols], data } };
}

async function connect(): Promise<void> {
  const errors: string[] = [];
  // One sign-in at a time: the node charges a sign-in as a failure until it succeeds, and locks a user
  // out of an address past 5 at once (src/node/signin-limits.ts).
  for (let i = 0; i < init.clients; i++) {
    try {
      clients.push(await GridClient.connect(init.urls[(init.first + i) % init.urls.length]!, {
        connect: { heartbeatMs: 0 }, reconnect: { maxAttempts: 0 }, sharedMemory: { enabled: false },
        credentials: { username: 'admin', password: init.password },
      }));
    } catch (err) {
      errors.push((err as Error).message);
    }
  }
  port.postMessage({ type: 'ready', connected: clients.length, errors: errors.slice(0, 3) } satisfies InferMsg);
}

async function run(ms: number, rows: number): Promise<void> {
  const x = feeds(rows);
  const errors: string[] = [];
  const latenciesMs: number[] = [];
  let ok = 0, failed = 0;
  const end = performance.now() + ms;
  await Promise.all(clients.map(async (c) => {
    while (performance.now() < end) {
      const t0 = performance.now();
      try {
        await c.runInference(init.modelId, x);
        latenciesMs.push(performance.now() - t0);
        ok++;
      } catch (err) {
        failed++;
        if (errors.length < 3) errors.push((err as Error).message);
      }
    }
  }));
  port.postMessage({ type: 'ran', ok, failed, errors, latenciesMs } satisfies InferMsg);
}

port.on('message', (m: InferCmd) => {
  if (m.type === 'stop') {
    for (const c of clients) c.dispose();
    port.close();
    return;
  }
  void run(m.ms, m.rows);
});
void connect();
