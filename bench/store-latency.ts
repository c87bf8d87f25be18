// Issue 16 benchmark, first part: the latency PostgreSQL adds over the embedded store for what a user
// does most (list models, run inference, host a small model), each node in-process on 127.0.0.1 with one
// client, both measured in this same run. The PostgreSQL server is a real one started here
// (test/helpers/postgres.ts). Replica scaling (requests/s with 1-3 replicas): bench/replicas.ts.
// Run: node --import tsx bench/store-latency.ts   (BENCH_QUICK=1: fewer rounds)

import * as fs from 'node:fs';
import { GridClient } from '../src/core/client';
import type { NamedTensors } from '../src/core/protocol/tensor';
import { GridNode } from '../src/node/server';
import { mlpModel, seededFloats, tempDir } from '../test/helpers/node-fixtures';
import { postgresUnavailable, startPostgres } from '../test/helpers/postgres';

const quick = process.env.BENCH_QUICK === '1';
const ROUNDS = quick ? 200 : 1000;
const HOSTS = quick ? 10 : 40;
const PASSWORD = 'bench-password-1';
const out = (line: string) => process.stdout.write(`${line}\n`);
const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function measure(database: string | undefined): Promise<{ list: number; infer: number; host: number }> {
  const dir = tempDir('grid-bench-store-');
  const node = await GridNode.start({ port: 0, dataDir: dir, adminPassword: PASSWORD, processMetrics: false, ...(database !== undefined && { database }) });
  const c = await GridClient.connect(node.url, { reconnect: { maxAttempts: 0 }, credentials: { username: 'admin', password: PASSWORD } });
  try {
    const model = mlpModel(16, 16, 4);
    await c.hostModel(model, { id: 'm', allowRemoteInference: true });
    const feeds: NamedTensors = { x: { dtype: 'float32', dims: [1, 16], data: seededFloats(16, 1) } };
    const time = async (n: number, fn: (i: number) => Promise<unknown>) => {
      const ms: number[] = [];
      for (let i = 0; i < n; i++) { const t0 = performance.now(); await fn(i); ms.push(performance.now() - t0); }
      return p50(ms);
    };
    await time(50, () => c.runInference('m', feeds)); // warm-up
    return {
      list: await time(ROUNDS, () => c.listModels()),
      infer: await time(ROUNDS, () => c.runInference('m', feeds)),
      host: await time(HOSTS, (i) => c.hostModel(model, { id: `h${i}` })),
    };
  } finally {
    c.dispose();
    await node.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const why = postgresUnavailable();
  if (why !== undefined) { out(`skipped: ${why}`); return; }
  const pg = await startPostgres();
  try {
    const embedded = await measure(undefined);
    const postgres = await measure(await pg.createDatabase());
    out(`p50 latency, one client, ${ROUNDS} rounds (host: ${HOSTS}); embedded store vs PostgreSQL:`);
    for (const k of ['list', 'infer', 'host'] as const) {
      out(`  ${k.padEnd(6)} embedded ${embedded[k].toFixed(3)} ms   postgres ${postgres[k].toFixed(3)} ms   ratio ${(postgres[k] / embedded[k]).toFixed(2)}x   (+${(postgres[k] - embedded[k]).toFixed(3)} ms)`);
    }
  } finally {
    await pg.close();
  }
}

void main().catch((err: unknown) => { process.stderr.write(`${(err as Error).stack ?? String(err)}\n`); process.exit(1); });
