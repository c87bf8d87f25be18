// What the grid's wire format costs a batch-1 run-inference, one change at a time (bench/wire-variants.ts):
// the floor peer (bench/servers/node-peer.ts) in its own process on core 1, this client on core 0, as in
// bench/node-inference.ts. Every variant interleaved with the floor, REPS times; medians and spread.
// Run: node scripts/bench.mjs bench/wire-attribution.ts   (WIRE_REPS, WIRE_ROUNDS, WIRE_WARMUP)

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import { GridClient } from '../src/core/client';
import { GridSocket } from '../src/core/socket/grid-socket';
import type { NamedTensors } from '../src/core/protocol/tensor';
import { loadModel } from '../src/compute/backend';
import { mlpModel, seededFloats } from '../test/helpers/node-fixtures';
import { startNodeScript } from '../test/helpers/processes';
import { attributeWire, describe, openWireVariant, WIRE_KINDS, wireGeometry, type WireKind } from './wire-variants';

const PEER = fs.existsSync(path.join(__dirname, 'servers/node-peer.js')) ? path.join(__dirname, 'servers/node-peer.js') : path.join(__dirname, 'servers/node-peer.ts');
const REPS = Number(process.env.WIRE_REPS ?? 9);
const ROUNDS = Number(process.env.WIRE_ROUNDS ?? 600);
const WARM_UP = Number(process.env.WIRE_WARMUP ?? 3000);
const KINDS = (process.env.WIRE_KINDS?.split(',') ?? WIRE_KINDS) as WireKind[];
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const out = (line: string) => process.stdout.write(`${line}\n`);

function pin(pid: number, cpus: string): void {
  const r = spawnSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`taskset failed: ${r.stderr || r.error?.message}`);
}

/** The frame GridClient sends for a run-inference of `inputs`, captured by a ws server that never answers. */
export async function captureRequest(inputs: NamedTensors): Promise<Buffer> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false });
  await new Promise((r) => wss.once('listening', r));
  const captured = new Promise<Buffer>((resolve) => wss.on('connection', (ws) => ws.on('message', (d, isBinary) => { if (isBinary) { resolve(Buffer.from(d as Buffer)); ws.close(); } })));
  const socket = new GridSocket();
  try {
    await socket.connect(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`, { heartbeatMs: 0 }, { enabled: false });
    new GridClient(socket, { sharedMemory: { enabled: false } }).runInference('mlp', inputs, { timeoutMs: 60_000 }).catch(() => {});
    return await captured;
  } finally {
    socket.dispose();
    wss.close();
  }
}

async function main(): Promise<void> {
  const peer = await startNodeScript(PEER, []);
  try {
    out(`machine: ${os.availableParallelism()} cores, load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')} at start`);
    const mlp = mlpModel(784, 128, 10);
    const one: NamedTensors = { x: { dtype: 'float32', dims: [1, 784], data: seededFloats(784, 1) } };
    const local = await loadModel(mlp, { intraOpNumThreads: 1 });
    const geometry = wireGeometry(await captureRequest(one), 'mlp', 'x', await local.run(one));
    await local.dispose();
    if (os.availableParallelism() >= 2) { pin(process.pid, '0'); pin(peer.child.pid!, '1'); }
    const conns = [];
    for (const kind of KINDS) conns.push(await openWireVariant(peer.url, peer.child.pid!, mlp, one.x!.data as Float32Array, { kind, ...geometry }));
    const res = await attributeWire(conns, { reps: REPS, rounds: ROUNDS, warmUp: WARM_UP });
    for (const c of conns) c.close();
    const floor = res.get('floor');
    out(`wire attribution, batch-1 run-inference (${REPS} reps × ${ROUNDS} round trips, interleaved; median [min–max] over reps; µs)`);
    out(`  frames: request ${geometry.requestBytes} B (raw ${geometry.requestBytes - geometry.requestDataAt}), reply ${geometry.replyBytes} B (raw ${geometry.replyBytes - geometry.replyDataAt})`);
    out(`  ${'variant'.padEnd(10)} ${'p50 round trip'.padEnd(18)} ${'Δ vs floor'.padEnd(16)} ${'server CPU'.padEnd(16)} ${'Δ server'.padEnd(16)} ${'client CPU'.padEnd(16)} ${'Δ client'.padEnd(16)} Δ server main  Δ client main  ORT run in server  GC server/client`);
    for (const [kind, m] of res) {
      const d = (xs: number[], f: number[] | undefined) => (f === undefined || kind === 'floor' ? '' : describe(xs, f));
      out(`  ${kind.padEnd(10)} ${describe(m.p50).padEnd(18)} ${d(m.p50, floor?.p50).padEnd(16)} ${describe(m.server).padEnd(16)} ${d(m.server, floor?.server).padEnd(16)} ${describe(m.client).padEnd(16)} ${d(m.client, floor?.client).padEnd(16)} ${d(m.serverMain, floor?.serverMain).padEnd(14)} ${d(m.clientMain, floor?.clientMain).padEnd(14)} ${describe(m.run).padEnd(18)} ${median(m.serverGc).toFixed(1)}/${median(m.clientGc).toFixed(1)}`);
    }
    out(`machine load average at the end: ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  } finally {
    await peer.kill('SIGTERM');
  }
}

void main();
