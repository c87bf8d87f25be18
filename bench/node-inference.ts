// Issue "Grid node" benchmark. The grid node, the raw-ws baseline server and this client each run in
// their own process; every baseline is measured in this same run.
//   1. remote inference, MLP 784-128-10, batch 1: p50 vs (local ORT p50 + raw ws round-trip p50), target ≤ 1.3×
//   2. remote inference, batch 256, requests pipelined: throughput vs local ORT, target ≥ 0.8×
//   3. upload of a 1 GiB ONNX model (chunked, sha256 on both ends, fsync'd on the node) vs raw ws binary
//      frames into a sink, target ≥ 0.6×, RSS growth < 64 MiB per side during the transfer, each run in fresh
//      processes (bench/node-upload.ts); then the node validates (loads) it, which may take memory in
//      proportion to the model.
// Run: npm run bench:node   (BENCH_QUICK=1: fewer rounds and a 128 MiB model; BENCH_ONLY=upload: section 3 alone)

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import WebSocket from 'ws';
import { GridClient } from '../src/core/client';
import { encodeNamedTensors, type NamedTensors } from '../src/core/protocol/tensor';
import { RunInference } from '../src/core/protocol/messages';
import { Ping } from '../src/core/protocol/catalogue';
import { loadModel } from '../src/compute/backend';
import { mlpModel, seededFloats } from '../test/helpers/node-fixtures';
import { startNodeScript, type Started } from '../test/helpers/processes';
import { processCpuSeconds } from './rss';
import { RegionFile } from '../src/core/shm-client';
import { uploadClient, uploadSection } from './node-upload';
import { sharedMemoryDir } from '../src/core/shm';

// Measured as shipped: the node is the built dist/grid-node.js (npm run bench:node builds first), and
// scripts/bench.mjs bundles this file and bench/servers/*. Run from source, both fall back to the .ts files.
const NODE_MAIN = fs.existsSync(path.join(__dirname, '../dist/grid-node.js')) ? path.join(__dirname, '../dist/grid-node.js') : path.join(__dirname, '../src/node/main.ts');
const PEER = fs.existsSync(path.join(__dirname, 'servers/node-peer.js')) ? path.join(__dirname, 'servers/node-peer.js') : path.join(__dirname, 'servers/node-peer.ts');

const quick = process.env.BENCH_QUICK === '1';
const ROUNDS = quick ? 300 : 2000;
const BATCH_RUNS = quick ? 10 : 40;
const PIPELINE = 4;
const BIG = quick ? 128 * 1024 * 1024 : 1024 ** 3;
const MiB = 1024 * 1024;
const UPLOAD = { nodeMain: NODE_MAIN, peer: PEER, bytes: BIG, reps: quick ? 1 : 3 };
const PASSWORD = 'bench-password-1';
const out = (line: string) => process.stdout.write(`${line}\n`);

const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * CPU seconds a server process and this client use over the spans between start() and stop(), summed over
 * many spans: what a request costs each side, which a loaded machine's wall clock hides. From /proc (Linux).
 */
class CpuMeter {
  server = 0;
  client = 0;
  count = 0;
  private s0 = 0;
  private c0: NodeJS.CpuUsage | undefined;
  constructor(private readonly pid: number) {}
  start(): void { this.s0 = processCpuSeconds(this.pid); this.c0 = process.cpuUsage(); }
  stop(requests: number): void {
    const c = process.cpuUsage(this.c0);
    this.server += processCpuSeconds(this.pid) - this.s0;
    this.client += (c.user + c.system) / 1e6;
    this.count += requests;
  }
  /** µs per request: server, client, both. */
  perRequest(): { server: number; client: number; total: number } {
    const [server, client] = [(this.server / this.count) * 1e6, (this.client / this.count) * 1e6];
    return { server, client, total: server + client };
  }
}

async function rawRoundTrips(url: string, requestBytes: number, replyBytes: number, rounds: number): Promise<number[]> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((r) => ws.once('open', r));
  ws.send(JSON.stringify({ reply: replyBytes }));
  await new Promise((r) => ws.once('message', r));
  const req = Buffer.alloc(requestBytes, 1);
  const times: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    const reply = new Promise((r) => ws.once('message', r));
    ws.send(req);
    await reply;
    times.push(performance.now() - t0);
  }
  ws.close();
  return times;
}

/** Round trips to a bare ws server that runs the model on each request: remote inference with nothing else. */
async function floorRoundTrips(url: string, model: Uint8Array, x: Float32Array, rounds: number, meter?: CpuMeter): Promise<number[]> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((r) => ws.once('open', r));
  ws.send(JSON.stringify({ model: Buffer.from(model).toString('base64'), input: 'x', cols: x.length }));
  await new Promise((r) => ws.once('message', r));
  const times: number[] = [];
  meter?.start();
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    const reply = new Promise<Buffer>((r) => ws.once('message', (d) => r(d as Buffer)));
    ws.send(Buffer.from(x.buffer, x.byteOffset, x.byteLength));
    if ((await reply).length !== 40) throw new Error('the floor server did not answer with 10 float32 outputs');
    times.push(performance.now() - t0);
  }
  meter?.stop(rounds);
  ws.close();
  return times;
}

/** The same request/reply sizes over raw ws with `inflight` requests pipelined: the transport's ceiling. */
async function rawPipelined(url: string, requestBytes: number, replyBytes: number, count: number, inflight: number): Promise<number> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((r) => ws.once('open', r));
  ws.send(JSON.stringify({ reply: replyBytes }));
  await new Promise((r) => ws.once('message', r));
  const req = Buffer.alloc(requestBytes, 1);
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    let sent = 0;
    let received = 0;
    ws.on('message', () => {
      received++;
      if (received === count) resolve();
      else if (sent < count) { sent++; ws.send(req); }
    });
    for (; sent < Math.min(inflight, count); sent++) ws.send(req);
  });
  const secs = (performance.now() - t0) / 1000;
  ws.close();
  return count / secs;
}

/**
 * The floor of inference through shared memory: a bare ws server runs the model on inputs it reads from
 * a /dev/shm file and writes the outputs back (bench/servers/node-peer.ts), `inflight` requests pipelined
 * as the grid client does. What any design with the model in another process gets on this machine.
 */
async function shmFloorPipelined(url: string, model: Uint8Array, x: Float32Array, cols: number, count: number, inflight: number, meter?: CpuMeter): Promise<number> {
  const dir = sharedMemoryDir();
  if (dir === undefined) return Number.NaN;
  const slot = 4 * MiB;
  const region = RegionFile.create(dir, slot * inflight + 64);
  const ws = new WebSocket(url, { perMessageDeflate: false });
  try {
    await new Promise((r) => ws.once('open', r));
    ws.send(JSON.stringify({ shm: region.path, model: Buffer.from(model).toString('base64'), input: 'x', cols, threads: 1 }));
    await new Promise((r) => ws.once('message', r));
    const bytes = new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
    const waiting: ((reply: Buffer) => void)[] = [];
    ws.on('message', (d) => waiting.shift()!(d as Buffer));
    const one = async (s: number) => {
      const at = 64 + s * slot;
      region.write([bytes], at);
      const frame = Buffer.alloc(24);
      frame.writeDoubleLE(at, 0); frame.writeDoubleLE(bytes.length, 8); frame.writeDoubleLE(at + slot / 2, 16);
      const reply = new Promise<Buffer>((r) => waiting.push(r));
      ws.send(frame);
      region.read(at + slot / 2, (await reply).readDoubleLE(0));
    };
    for (let i = 0; i < 3; i++) await one(0);
    meter?.start();
    const t0 = performance.now();
    let next = 0;
    await Promise.all(Array.from({ length: inflight }, async (_, s) => { while (next < count) { next++; await one(s); } }));
    const rate = count / ((performance.now() - t0) / 1000);
    meter?.stop(count);
    return rate;
  } finally {
    ws.close();
    region.retire();
  }
}


/** Pins every thread of a process to the given CPUs (taskset from util-linux). */
function pin(pid: number, cpus: string): void {
  const r = spawnSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`taskset failed: ${r.stderr || r.error?.message}`);
}

async function main(): Promise<void> {
  // The client half of one upload run, in a process of its own (bench/node-upload.ts).
  if (process.argv[2] === '--upload-client') { await uploadClient(process.argv.slice(3)); return; }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-grid-node-'));
  // BENCH_ONLY=upload runs section 3 alone.
  if (process.env.BENCH_ONLY === 'upload') {
    try { await uploadSection(dir, out, UPLOAD); } finally { fs.rmSync(dir, { recursive: true, force: true }); }
    return;
  }
  const procs: Started[] = [];
  let client: GridClient | undefined;
  let shmClient: GridClient | undefined;
  try {
    const [node, peer] = await Promise.all([
      startNodeScript(NODE_MAIN, ['--port', '0', '--data-dir', path.join(dir, 'node'), '--log-level', 'warn'], { ...process.env, GRID_ADMIN_PASSWORD: PASSWORD },
        // GRID_BENCH_PROFILE=DIR writes a CPU profile of the node process there, for finding where time goes.
        process.env.GRID_BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.GRID_BENCH_PROFILE}`] : []),
      startNodeScript(PEER, []),
    ]);
    procs.push(node, peer);
    // The socket measures keep shared memory off; section 2b measures it with a client of its own.
    client = await GridClient.connect(node.url, { connect: { heartbeatMs: 0 }, credentials: { username: 'admin', password: PASSWORD }, sharedMemory: { enabled: false } });
    shmClient = await GridClient.connect(node.url, { connect: { heartbeatMs: 0 }, credentials: { username: 'admin', password: PASSWORD } });
    // Ratios only mean something on a quiet machine: say how busy it was.
    out(`machine: ${os.availableParallelism()} cores, load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')} at start`);
    const mlp = mlpModel(784, 128, 10);
    await client.hostModel(mlp, { id: 'mlp', allowRemoteInference: true });

    // 1. Batch 1 latency. The client on core 0, the node and the raw ws server on core 1: every round trip
    // crosses cores alike. Unpinned, whether a pair happens to share a core (and skip a cross-core wake-up,
    // ~100 µs on this VM) decides more than the software does.
    const cores = os.availableParallelism();
    if (cores >= 2) { pin(process.pid, '0'); pin(node.child.pid!, '1'); pin(peer.child.pid!, '1'); }
    // Created after pinning, as the node's session (made at its first run) and the floor's are: onnxruntime
    // sizes its intra-op pool from the CPUs the process may use, so every side gets the same thread count
    // (one, pinned to one core). Created before, it would get two threads squeezed onto one core.
    const local = await loadModel(mlp);
    const one: NamedTensors = { x: { dtype: 'float32', dims: [1, 784], data: seededFloats(784, 1) } };
    const reqBytes = encodeNamedTensors(one).length + 64; // + envelope and frame header
    const replyBytes = encodeNamedTensors((await local.run(one))).length + 128;
    const localTimes: number[] = [];
    const rawTimes: number[] = [];
    const remoteTimes: number[] = [];
    const nodeRunTimes: number[] = [];
    const pingTimes: number[] = [];
    const floorTimes: number[] = [];
    const attachment = encodeNamedTensors(one);
    const [floorCpu, gridCpu] = [new CpuMeter(peer.child.pid!), new CpuMeter(node.child.pid!)];
    for (let i = 0; i < 200; i++) { await local.run(one); await client.runInference('mlp', one); }
    await rawRoundTrips(peer.url, reqBytes, replyBytes, 200);
    for (let rep = 0; rep < 3; rep++) {
      // Interleaved, so machine noise hits all three alike.
      for (let i = 0; i < ROUNDS / 3; i++) { const t0 = performance.now(); await local.run(one); localTimes.push(performance.now() - t0); }
      rawTimes.push(...await rawRoundTrips(peer.url, reqBytes, replyBytes, ROUNDS / 3));
      floorTimes.push(...await floorRoundTrips(peer.url, mlp, one.x!.data as Float32Array, ROUNDS / 3, floorCpu));
      gridCpu.start();
      for (let i = 0; i < ROUNDS / 3; i++) { const t0 = performance.now(); await client.runInference('mlp', one); remoteTimes.push(performance.now() - t0); }
      gridCpu.stop(ROUNDS / 3);
      for (let i = 0; i < ROUNDS / 3; i++) {
        let t0 = performance.now();
        await client.socket.request(Ping, undefined);
        pingTimes.push(performance.now() - t0);
        t0 = performance.now();
        const r = await client.socket.call(RunInference, { model_id: 'mlp' }, { attachment });
        nodeRunTimes.push(r.data.duration_ms);
      }
    }
    const [l, r, g] = [p50(localTimes), p50(rawTimes), p50(remoteTimes)];
    out(`remote inference, MLP 784-128-10, batch 1 (${ROUNDS} runs each, p50)`);
    out(`  local onnxruntime       ${(l * 1000).toFixed(0)} µs`);
    out(`  raw ws round trip       ${(r * 1000).toFixed(0)} µs  (${reqBytes} B out, ${replyBytes} B back)`);
    out(`  remote via grid node    ${(g * 1000).toFixed(0)} µs`);
    const f = p50(floorTimes);
    out(`  floor: bare ws server running onnxruntime, no protocol  ${(f * 1000).toFixed(0)} µs  = ${(f / (l + r)).toFixed(2)}× (local + raw ws); grid node / floor = ${(g / f).toFixed(2)}×`);
    out(`    (of which: grid ping round trip ${(p50(pingTimes) * 1000).toFixed(0)} µs, onnxruntime inside the node ${(p50(nodeRunTimes) * 1000).toFixed(0)} µs)`);
    // The limit where the CPU is what holds it (a loaded machine: every wake-up waits for a core): a
    // request cannot cost less wall time than the CPU both sides spend on it, relative to the floor's.
    const [fc, gc] = [floorCpu.perRequest(), gridCpu.perRequest()];
    out(`    CPU per request: floor server ${fc.server.toFixed(0)} µs + client ${fc.client.toFixed(0)} µs; grid node ${gc.server.toFixed(0)} µs + client ${gc.client.toFixed(0)} µs: where the CPU is shared, grid node / floor ≥ ${(gc.total / fc.total).toFixed(2)}× (their CPU ratio; target ≤ 1.15×)`);
    out(`  ratio remote / (local + raw ws)   ${(g / (l + r)).toFixed(2)}×  (target ≤ 1.3×)${cores >= 2 ? '  [client on core 0, node and raw ws server on core 1]' : ''}`);
    // What bounds that target here: a server that waits for each request runs onnxruntime cold (its weights
    // out of cache), unlike the back-to-back local loop; the floor pays it with no protocol at all.
    out(`    (bound on this machine: the floor alone is ${(f / (l + r)).toFixed(2)}× (local + raw ws); onnxruntime inside the node ${(p50(nodeRunTimes) * 1000).toFixed(0)} µs vs ${(l * 1000).toFixed(0)} µs back to back locally)`);
    if (cores >= 2) { const all = `0-${cores - 1}`; pin(process.pid, all); pin(node.child.pid!, all); pin(peer.child.pid!, all); }

    // 2. Batch 256 throughput, pipelined.
    const big: NamedTensors = { x: { dtype: 'float32', dims: [256, 784], data: seededFloats(256 * 784, 2) } };
    for (let i = 0; i < 3; i++) { await local.run(big); await client.runInference('mlp', big); }
    let t0 = performance.now();
    for (let i = 0; i < BATCH_RUNS; i++) await local.run(big);
    const localRate = (BATCH_RUNS * 256) / ((performance.now() - t0) / 1000);
    t0 = performance.now();
    let next = 0;
    await Promise.all(Array.from({ length: PIPELINE }, async () => {
      while (next < BATCH_RUNS) { next++; await client!.runInference('mlp', big); }
    }));
    const remoteRate = (BATCH_RUNS * 256) / ((performance.now() - t0) / 1000);
    // 2b. The same batches through shared memory (a client on the node's machine): interleaved with a
    // fresh local measure, so both see the same machine.
    for (let i = 0; i < 3; i++) await shmClient.runInference('mlp', big);
    const shmRates: number[] = [];
    const [shmCpu, shmFloorCpu] = [new CpuMeter(node.child.pid!), new CpuMeter(peer.child.pid!)];
    const localRates: number[] = [];
    for (let rep = 0; rep < 3; rep++) {
      t0 = performance.now();
      for (let i = 0; i < BATCH_RUNS; i++) await local.run(big);
      localRates.push((BATCH_RUNS * 256) / ((performance.now() - t0) / 1000));
      shmCpu.start();
      t0 = performance.now();
      let nextShm = 0;
      await Promise.all(Array.from({ length: PIPELINE }, async () => {
        while (nextShm < BATCH_RUNS) { nextShm++; await shmClient!.runInference('mlp', big); }
      }));
      shmRates.push((BATCH_RUNS * 256) / ((performance.now() - t0) / 1000));
      shmCpu.stop(BATCH_RUNS);
    }
    const shmUsed = shmClient.shm.currentRegion !== undefined;
    const shmFloor = 256 * await shmFloorPipelined(peer.url, mlp, big.x!.data as Float32Array, 784, BATCH_RUNS * 3, PIPELINE, shmFloorCpu);
    // Where shared memory starts to pay: one request at a time, socket vs shared memory, by batch size.
    const sweep: string[] = [];
    for (const rows of [4, 16, 64, 256]) {
      const x: NamedTensors = { x: { dtype: 'float32', dims: [rows, 784], data: seededFloats(rows * 784, 3) } };
      const opts = { sharedMemory: { thresholdBytes: 0 } };
      const forced = await GridClient.connect(node.url, { connect: { heartbeatMs: 0 }, credentials: { username: 'admin', password: PASSWORD }, ...opts });
      const n = quick ? 30 : 150;
      const times = { socket: [] as number[], shm: [] as number[] };
      for (let i = 0; i < 10; i++) { await client.runInference('mlp', x); await forced.runInference('mlp', x); }
      for (let i = 0; i < n; i++) {
        let t = performance.now(); await client.runInference('mlp', x); times.socket.push(performance.now() - t);
        t = performance.now(); await forced.runInference('mlp', x); times.shm.push(performance.now() - t);
      }
      forced.dispose();
      sweep.push(`${rows} rows (${((rows * 784 * 4) / 1024).toFixed(0)} KiB): socket ${(p50(times.socket) * 1000).toFixed(0)} µs, shm ${(p50(times.shm) * 1000).toFixed(0)} µs`);
    }
    await local.dispose();
    const bigReq = encodeNamedTensors(big).length + 64;
    const rawRate = 256 * await rawPipelined(peer.url, bigReq, 256 * 10 * 4 + 128, BATCH_RUNS, PIPELINE);
    out(`remote inference, batch 256 (${BATCH_RUNS} batches, ${PIPELINE} requests in flight)`);
    out(`  local onnxruntime       ${localRate.toFixed(0)} samples/s`);
    out(`  remote via grid node    ${remoteRate.toFixed(0)} samples/s`);
    out(`  ratio remote / local    ${(remoteRate / localRate).toFixed(2)}×  (target ≥ 0.8×)`);
    out(`  (transport ceiling: the same ${(bigReq / 1024).toFixed(0)} KiB requests over raw ws, pipelined alike, carry ${rawRate.toFixed(0)} samples/s = ${(rawRate / localRate).toFixed(2)}× local, with no compute at all; remote / that = ${(remoteRate / rawRate).toFixed(2)}×  (target ≥ 0.9×))`);
    const [shmRate, localAgain] = [p50(shmRates), p50(localRates)];
    out(`remote inference, batch 256, through shared memory (a client on the node's machine; ${BATCH_RUNS} batches × 3, ${PIPELINE} in flight, p50 of the 3)`);
    out(`  local onnxruntime       ${localAgain.toFixed(0)} samples/s  (measured interleaved with the runs below)`);
    out(`  via shared memory       ${shmRate.toFixed(0)} samples/s${shmUsed ? '' : '  [WARNING: the node refused shared memory; these went over the socket]'}`);
    out(`  ratio shm / local       ${(shmRate / localAgain).toFixed(2)}×  (target ≥ 0.8×); shm / socket ${(shmRate / remoteRate).toFixed(2)}×`);
    out(`  floor: a bare ws server running onnxruntime on inputs it reads from /dev/shm, pipelined alike  ${shmFloor.toFixed(0)} samples/s = ${(shmFloor / localAgain).toFixed(2)}× local; grid shm / floor = ${(shmRate / shmFloor).toFixed(2)}×`);
    const [sf, sg] = [shmFloorCpu.perRequest(), shmCpu.perRequest()];
    out(`  CPU per batch: floor server ${sf.server.toFixed(0)} µs + client ${sf.client.toFixed(0)} µs; grid node ${sg.server.toFixed(0)} µs + client ${sg.client.toFixed(0)} µs: where the CPU is shared, grid shm / floor ≤ ${(sf.total / sg.total).toFixed(2)}× (their CPU ratio), so shm / local ≤ ${((shmFloor / localAgain) * (sf.total / sg.total)).toFixed(2)}× by this floor`);
    // What is left once the bytes no longer cross the socket: the request itself.
    const perBatch = (rate: number) => (256 / rate) * 1e6;
    out(`  per batch: local ${perBatch(localAgain).toFixed(0)} µs, via shared memory ${perBatch(shmRate).toFixed(0)} µs; the difference (${(perBatch(shmRate) - perBatch(localAgain)).toFixed(0)} µs) compares with one grid ping round trip (${(p50(pingTimes) * 1000).toFixed(0)} µs, section 1): the protocol's per-request cost, not the tensor bytes, is what remains`);
    out(`  one request at a time, p50: ${sweep.join('; ')}  (GridClient switches to shared memory from 64 KiB of inputs)`);

    // 3. Upload of a big model: fresh processes per run (bench/node-upload.ts).
    await uploadSection(dir, out, UPLOAD);
    out(`machine load average at the end: ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  } finally {
    client?.dispose();
    shmClient?.dispose();
    await Promise.all(procs.map((p) => p.kill('SIGTERM')));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

void main();
