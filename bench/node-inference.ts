// Issue "Grid node" benchmark. The grid node, the raw-ws baseline server and this client each run in
// their own process; every baseline is measured in this same run.
//   1. remote inference, MLP 784-128-10, batch 1: p50 vs (local ORT p50 + raw ws round-trip p50), target ≤ 1.3×;
//      vs the floor (a bare ws server running onnxruntime), target ≤ 1.15×; and vs the protocol floor (that
//      server and its client speaking the grid's own run-inference bytes): what the wire format costs apart
//      from the node's machinery. CPU per request of every server and client, and of a grid ping.
//   2. remote inference, batch 256, requests pipelined: over the socket vs the same bytes over raw ws (the
//      transport ceiling), target ≥ 0.9×; through shared memory vs local ORT, target ≥ 0.8×; the CPU
//      per batch of every process, and the limits it sets
//   3. upload of a 1 GiB ONNX model (chunked, sha256 on both ends, fsync'd on the node) vs raw ws binary
//      frames into a sink, target ≥ 0.6×, RSS growth < 64 MiB per side during the transfer, each run in fresh
//      processes (bench/node-upload.ts); then the node validates (loads) it, which may take memory in
//      proportion to the model.
// Run: npm run bench:node   (BENCH_QUICK=1: fewer rounds and a 128 MiB model; BENCH_SECTIONS=1 or 1,3: only those;
// BENCH_SECTIONS=3 runs the upload alone, without starting the inference processes)

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import WebSocket, { WebSocketServer } from 'ws';
import type { AddressInfo } from 'node:net';
import { GridClient } from '../src/core/client';
import { GridSocket } from '../src/core/socket/grid-socket';
import { decodeNamedTensors, encodeNamedTensors, encodeNamedTensorsParts, type NamedTensors } from '../src/core/protocol/tensor';
import { encodeMessageFrame } from '../src/core/protocol/envelope';
import { RunInference } from '../src/core/protocol/messages';
import { Ping } from '../src/core/protocol/catalogue';
import { loadModel } from '../src/compute/backend';
import { mlpModel, seededFloats } from '../test/helpers/node-fixtures';
import { startNodeScript, type Started } from '../test/helpers/processes';
import { cpuSince, cpuSnapshot, type CpuSnapshot } from './rss';
import { RegionFile } from '../src/core/shm-client';
import { uploadClient, uploadSection } from './node-upload';
import { sharedMemoryDir } from '../src/core/shm';
import { attributeWire, openWireVariant, wireGeometry, type WireKind } from './wire-variants';

// Measured as shipped: the node is the built dist/grid-node.js (npm run bench:node builds first), and
// scripts/bench.mjs bundles this file and bench/servers/*. Run from source, both fall back to the .ts files.
// GRID_BENCH_NODE=FILE measures another build of the node (an A/B against the same baselines).
const NODE_MAIN = process.env.GRID_BENCH_NODE ?? (fs.existsSync(path.join(__dirname, '../dist/grid-node.js')) ? path.join(__dirname, '../dist/grid-node.js') : path.join(__dirname, '../src/node/main.ts'));
const PEER = fs.existsSync(path.join(__dirname, 'servers/node-peer.js')) ? path.join(__dirname, 'servers/node-peer.js') : path.join(__dirname, 'servers/node-peer.ts');

const quick = process.env.BENCH_QUICK === '1';
const ROUNDS = quick ? 300 : 2000;
const BATCH_RUNS = quick ? 10 : 40;
const WARM_UP = quick ? 300 : 3000;
const PIPELINE = 4;
const BIG = quick ? 128 * 1024 * 1024 : 1024 ** 3;
const MiB = 1024 * 1024;
const UPLOAD = { nodeMain: NODE_MAIN, peer: PEER, bytes: BIG, reps: quick ? 1 : 3 };
const PASSWORD = 'bench-password-1';
// GRID_BENCH_NODE_THREADS=default leaves the node at its own default intra-op thread count (the others stay at
// 1: the ratios then compare unequal threads; for an A/B of the node's default against itself).
const NODE_THREADS = process.env.GRID_BENCH_NODE_THREADS ?? '1';
const SECTIONS = new Set((process.env.BENCH_SECTIONS ?? '1,2,3').split(',').map((x) => x.trim()));
const out = (line: string) => process.stdout.write(`${line}\n`);

const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * CPU a server process and this client use over the spans between start() and stop(), summed over many
 * spans: what a request costs each side, which a loaded machine's wall clock hides. Per thread from
 * /proc (Linux), so the event loop's share (the main thread, which serialises a process's requests)
 * shows apart from the thread pool's and V8's. A meter of this process alone reads it as the client.
 */
class CpuMeter {
  server = 0;
  serverMain = 0;
  client = 0;
  clientMain = 0;
  count = 0;
  private s0: CpuSnapshot | undefined;
  private c0: CpuSnapshot | undefined;
  constructor(private readonly pid: number) {}
  start(): void { if (this.pid !== process.pid) this.s0 = cpuSnapshot(this.pid); this.c0 = cpuSnapshot(process.pid); }
  stop(requests: number): void {
    const c = cpuSince(this.c0!);
    if (this.s0 !== undefined) { const s = cpuSince(this.s0); this.server += s.total; this.serverMain += s.main; }
    this.client += c.total;
    this.clientMain += c.main;
    this.count += requests;
  }
  /** µs per request: server, client, both, and each one's main thread. */
  perRequest(): { server: number; client: number; total: number; serverMain: number; clientMain: number } {
    const per = (s: number) => (s / this.count) * 1e6;
    return { server: per(this.server), client: per(this.client), total: per(this.server + this.client), serverMain: per(this.serverMain), clientMain: per(this.clientMain) };
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
  ws.send(JSON.stringify({ model: Buffer.from(model).toString('base64'), input: 'x', cols: x.length, threads: 1 }));
  await new Promise((r) => ws.once('message', r));
  const times: number[] = [];
  ws.send(JSON.stringify({ runTimes: true })); // forget the warm-up's
  await new Promise((r) => ws.once('message', r));
  meter?.start();
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    const reply = new Promise<Buffer>((r) => ws.once('message', (d) => r(d as Buffer)));
    ws.send(Buffer.from(x.buffer, x.byteOffset, x.byteLength));
    if ((await reply).length !== 40) throw new Error('the floor server did not answer with 10 float32 outputs');
    times.push(performance.now() - t0);
  }
  meter?.stop(rounds);
  const reply = new Promise<Buffer>((r) => ws.once('message', (d) => r(d as Buffer)));
  ws.send(JSON.stringify({ runTimes: true }));
  floorRunTimes.push(...(JSON.parse(String(await reply)) as { runTimes: number[] }).runTimes);
  ws.close();
  return times;
}
/** Wall time of each onnxruntime run inside the floor server (ms), as the node reports its own in duration_ms. */
const floorRunTimes: number[] = [];

/** A MESSAGE frame's parts, read as a minimal client reads them: the id, the JSON envelope, the attachment. */
function messageFrameParts(buf: Buffer): { id: string; json: string; attachment: Buffer } {
  if (buf[0] !== 0x47 || buf[1] !== 0x57 || buf[3] !== 1) throw new Error('not a grid MESSAGE frame');
  const idLength = buf[5]!;
  const jsonBytes = buf.readUInt32LE(12);
  const bodyAt = 16 + ((idLength + 7) & ~7);
  return { id: buf.toString('utf8', 16, 16 + idLength), json: buf.toString('utf8', bodyAt, bodyAt + jsonBytes), attachment: buf.subarray(bodyAt + ((jsonBytes + 7) & ~7)) };
}

/**
 * The grid's real wire bytes for one batch-1 run-inference, both ways, captured: the request frame GridClient
 * sends (to a ws server here that records it), and the grid node's reply to those very bytes (over a raw ws
 * to the node, after authenticate). The protocol floor must speak exactly these; checked, not assumed.
 */
async function captureWire(nodeUrl: string, inputs: NamedTensors): Promise<{ request: Buffer; reply: Buffer }> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false });
  await new Promise((r) => wss.once('listening', r));
  const captured = new Promise<Buffer>((resolve) => wss.on('connection', (ws) => ws.on('message', (d, isBinary) => { if (isBinary) { resolve(d as Buffer); ws.close(); } })));
  const socket = new GridSocket();
  try {
    await socket.connect(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`, { heartbeatMs: 0 }, { enabled: false });
    const client = new GridClient(socket, { sharedMemory: { enabled: false } });
    client.runInference('mlp', inputs, { timeoutMs: 60_000 }).catch(() => {}); // the capture server never answers
    const request = Buffer.from(await captured);
    const ws = new WebSocket(nodeUrl, { perMessageDeflate: false });
    await new Promise((r) => ws.once('open', r));
    ws.send(JSON.stringify({ type: 'authenticate', request_id: 'auth', data: { username: 'admin', password: PASSWORD } }));
    await new Promise((r) => ws.once('message', r));
    const reply = new Promise<Buffer>((r) => ws.once('message', (d) => r(Buffer.from(d as Buffer))));
    ws.send(request);
    const got = await reply;
    ws.close();
    return { request, reply: got };
  } finally {
    socket.dispose();
    wss.close();
  }
}

/**
 * Round trips to the protocol floor (bench/servers/node-peer.ts, `protocol`): the floor's bare ws server and
 * client, speaking the grid's wire bytes for run-inference. Each request is encoded as GridClient encodes it
 * (a fresh id, the envelope, the input tensors copied once into the frame); each reply is read minimally:
 * its id checked, its envelope parsed, its tensors decoded as views.
 */
async function protocolFloorRoundTrips(url: string, model: Uint8Array, x: NamedTensors, wire: { request: Buffer; reply: Buffer }, rounds: number, meter?: CpuMeter): Promise<number[]> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((r) => ws.once('open', r));
  ws.send(JSON.stringify({ model: Buffer.from(model).toString('base64'), input: 'x', cols: x.x!.dims[1], threads: 1, protocol: 'mlp' }));
  await new Promise((r) => ws.once('message', r));
  const sent = messageFrameParts(wire.request);
  const prefix = sent.id.slice(0, sent.id.lastIndexOf('-'));
  let next = 0;
  const one = async (check: boolean): Promise<void> => {
    const id = `${prefix}-${(next++).toString(36)}`;
    const reply = new Promise<Buffer>((r) => ws.once('message', (d) => r(d as Buffer)));
    const frame = encodeMessageFrame({ type: 'run-inference', request_id: id, data: { model_id: 'mlp' } }, encodeNamedTensorsParts(x));
    if (check) {
      // The same bytes GridClient sent, but for the request id's counter.
      const mine = messageFrameParts(frame);
      if (mine.json.replace(id, sent.id) !== sent.json || !mine.attachment.equals(sent.attachment) || frame.length !== wire.request.length) throw new Error(`the protocol floor's request is not GridClient's: ${mine.json} vs ${sent.json}`);
    }
    ws.send(frame);
    const got = messageFrameParts(await reply);
    const env = JSON.parse(got.json) as { request_id?: unknown; data?: { outputs?: unknown } };
    if (env.request_id !== id || got.id !== id || !Array.isArray(env.data?.outputs)) throw new Error('the protocol floor answered with another request\'s reply');
    const outputs = decodeNamedTensors(got.attachment);
    if (check) {
      // The node's reply, field for field (but the time it took), and the same output bytes.
      const node = messageFrameParts(wire.reply);
      const shape = (json: string) => JSON.stringify(JSON.parse(json, (k, v: unknown) => (k === 'duration_ms' || k === 'request_id' ? 0 : v)));
      if (shape(got.json) !== shape(node.json) || !got.attachment.equals(node.attachment)) throw new Error(`the protocol floor's reply is not the grid node's: ${got.json} vs ${node.json}`);
    }
    if (Object.values(outputs)[0]!.data.length !== 10) throw new Error('the protocol floor did not answer with 10 outputs');
  };
  await one(true);
  const runTimes = async (): Promise<number[]> => {
    const r = new Promise<Buffer>((resolve) => ws.once('message', (d) => resolve(d as Buffer)));
    ws.send(JSON.stringify({ runTimes: true }));
    return (JSON.parse(String(await r)) as { runTimes: number[] }).runTimes;
  };
  await runTimes(); // forget the warm-up's
  const times: number[] = [];
  meter?.start();
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    await one(false);
    times.push(performance.now() - t0);
  }
  meter?.stop(rounds);
  protocolRunTimes.push(...await runTimes());
  ws.close();
  return times;
}
/** Wall time of each onnxruntime run inside the protocol floor (ms). */
const protocolRunTimes: number[] = [];

/**
 * The same request/reply sizes over raw ws with `inflight` requests pipelined: the transport's ceiling.
 * Frames go unmasked (a zero key), as GridSocket sends them on loopback: ws otherwise masks a copy of each.
 */
async function rawPipelined(url: string, requestBytes: number, replyBytes: number, count: number, inflight: number, meter?: CpuMeter): Promise<number> {
  const ws = new WebSocket(url, { perMessageDeflate: false, generateMask: (mask) => { mask.fill(0); } });
  await new Promise((r) => ws.once('open', r));
  ws.send(JSON.stringify({ reply: replyBytes }));
  await new Promise((r) => ws.once('message', r));
  const req = Buffer.alloc(requestBytes, 1);
  meter?.start();
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
  meter?.stop(count);
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
  // BENCH_SECTIONS=3 runs the upload alone: it starts its own processes.
  if (SECTIONS.size === 1 && SECTIONS.has('3')) {
    try { await uploadSection(dir, out, UPLOAD); } finally { fs.rmSync(dir, { recursive: true, force: true }); }
    return;
  }
  const procs: Started[] = [];
  let client: GridClient | undefined;
  let shmClient: GridClient | undefined;
  try {
    const [node, peer] = await Promise.all([
      startNodeScript(NODE_MAIN, ['--port', '0', '--data-dir', path.join(dir, 'node'), '--log-level', 'warn', ...(NODE_THREADS === 'default' ? [] : ['--intra-op-threads', NODE_THREADS])], { ...process.env, GRID_ADMIN_PASSWORD: PASSWORD },
        // GRID_BENCH_PROFILE=DIR writes a CPU profile of the node process there, for finding where time goes (GRID_BENCH_PROFILE_INTERVAL: µs between samples, default 1000; ~50 resolves one request's parts).
        process.env.GRID_BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.GRID_BENCH_PROFILE}`, `--cpu-prof-interval=${process.env.GRID_BENCH_PROFILE_INTERVAL ?? '1000'}`] : []),
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
    // One onnxruntime intra-op thread on every side, said outright (the node's --intra-op-threads, the
    // floors' `threads`): left to its default, a session sizes its pool from the CPUs its process may use
    // when it is created, so the count would hang on when each was created relative to the pinning.
    const local = await loadModel(mlp, { intraOpNumThreads: 1 });
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
    const [floorCpu, gridCpu, protocolCpu, pingCpu] = [new CpuMeter(peer.child.pid!), new CpuMeter(node.child.pid!), new CpuMeter(peer.child.pid!), new CpuMeter(node.child.pid!)];
    const protocolTimes: number[] = [];
    const wire = await captureWire(node.url, one);
    // Warm-up, the same count on every side, long enough for the node's larger code to reach its steady
    // state (the JIT still compiled its request path through the first ~2000 requests: ~60 µs of compiler
    // threads' CPU per request then, ~3 µs after); the floor's few lines get there sooner, so it is warmed alike.
    for (let i = 0; i < WARM_UP; i++) { await local.run(one); await client.runInference('mlp', one); await client.socket.request(Ping, undefined); }
    await rawRoundTrips(peer.url, reqBytes, replyBytes, WARM_UP);
    await floorRoundTrips(peer.url, mlp, one.x!.data as Float32Array, WARM_UP);
    await protocolFloorRoundTrips(peer.url, mlp, one, wire, WARM_UP);
    protocolRunTimes.length = 0;
    floorRunTimes.length = 0;
    for (let rep = 0; rep < 3; rep++) {
      // Interleaved, so machine noise hits all three alike.
      for (let i = 0; i < ROUNDS / 3; i++) { const t0 = performance.now(); await local.run(one); localTimes.push(performance.now() - t0); }
      rawTimes.push(...await rawRoundTrips(peer.url, reqBytes, replyBytes, ROUNDS / 3));
      floorTimes.push(...await floorRoundTrips(peer.url, mlp, one.x!.data as Float32Array, ROUNDS / 3, floorCpu));
      protocolTimes.push(...await protocolFloorRoundTrips(peer.url, mlp, one, wire, ROUNDS / 3, protocolCpu));
      gridCpu.start();
      for (let i = 0; i < ROUNDS / 3; i++) { const t0 = performance.now(); await client.runInference('mlp', one); remoteTimes.push(performance.now() - t0); }
      gridCpu.stop(ROUNDS / 3);
      pingCpu.start();
      for (let i = 0; i < ROUNDS / 3; i++) await client.socket.request(Ping, undefined);
      pingCpu.stop(ROUNDS / 3);
      for (let i = 0; i < ROUNDS / 3; i++) {
        let t0 = performance.now();
        await client.socket.request(Ping, undefined);
        pingTimes.push(performance.now() - t0);
        t0 = performance.now();
        const r = await client.socket.call(RunInference, { model_id: 'mlp' }, { attachment });
        nodeRunTimes.push(r.data.duration_ms);
      }
    }
    // onnxruntime after its thread sat idle (a futex wait, as a server waiting on its socket): on this VM a
    // run slows with the idle time before it, by how much depends on the neighbours on that core (measured:
    // ~11 µs back to back; after 30–250 µs idle ~20 µs on a quiet core, 32–63 µs on a busy one), while busy JS
    // work of the same length, allocating 20 KiB or touching 512 KiB costs it nothing. So a server whose round trip is longer runs onnxruntime colder: that, not different session
    // options or extra work in the run, is what "inside the node" vs "inside the floor" shows.
    const idleRuns = new Map<number, number[]>([[60, []], [120, []], [250, []]]);
    // Measured on the servers' core (their neighbours there are what evicts the caches), while they wait.
    const futex = new Int32Array(new SharedArrayBuffer(4));
    if (cores >= 2) pin(process.pid, '1');
    for (let i = 0; i < ROUNDS / 2; i++) {
      for (const [us, times] of idleRuns) { Atomics.wait(futex, 0, 0, us / 1000); const t0 = performance.now(); await local.run(one); times.push(performance.now() - t0); }
    }
    if (cores >= 2) pin(process.pid, '0');
    const [l, r, g] = [p50(localTimes), p50(rawTimes), p50(remoteTimes)];
    out(`remote inference, MLP 784-128-10, batch 1 (${ROUNDS} runs each, p50)`);
    out(`  local onnxruntime       ${(l * 1000).toFixed(0)} µs`);
    out(`  raw ws round trip       ${(r * 1000).toFixed(0)} µs  (${reqBytes} B out, ${replyBytes} B back)`);
    out(`  remote via grid node    ${(g * 1000).toFixed(0)} µs`);
    const f = p50(floorTimes);
    out(`  floor: bare ws server running onnxruntime, no protocol  ${(f * 1000).toFixed(0)} µs  = ${(f / (l + r)).toFixed(2)}× (local + raw ws); grid node / floor = ${(g / f).toFixed(2)}×`);
    const pc1 = pingCpu.perRequest();
    out(`    (of which: grid ping round trip ${(p50(pingTimes) * 1000).toFixed(0)} µs (CPU: node ${pc1.server.toFixed(0)} µs + client ${pc1.client.toFixed(0)} µs), onnxruntime inside the node ${(p50(nodeRunTimes) * 1000).toFixed(0)} µs; inside the floor ${(p50(floorRunTimes) * 1000).toFixed(0)} µs; back to back locally ${(l * 1000).toFixed(0)} µs)`);
    out(`    (onnxruntime locally after its thread sat idle ${[...idleRuns].map(([us, t]) => `${us} µs: ${(p50(t) * 1000).toFixed(0)} µs`).join(', ')}: a server's run follows the idle time between its requests, which the round trip sets)`);
    // The limit where the CPU is what holds it (a loaded machine: every wake-up waits for a core): a
    // request cannot cost less wall time than the CPU both sides spend on it, relative to the floor's.
    const [fc, gc] = [floorCpu.perRequest(), gridCpu.perRequest()];
    out(`    CPU per request: floor server ${fc.server.toFixed(0)} µs + client ${fc.client.toFixed(0)} µs; grid node ${gc.server.toFixed(0)} µs + client ${gc.client.toFixed(0)} µs: where the CPU is shared, grid node / floor ≥ ${(gc.total / fc.total).toFixed(2)}× (their CPU ratio; target ≤ 1.15×)`);
    // What the wire format itself costs, apart from the node's machinery: the floor speaking the grid's bytes.
    const [pf, pc] = [p50(protocolTimes), protocolCpu.perRequest()];
    out(`  protocol floor: the same bare ws server and client, speaking the grid's wire bytes (GridClient's request frame, the node's reply frame; checked byte for byte)  ${(pf * 1000).toFixed(0)} µs = ${(pf / f).toFixed(2)}× floor; grid node / protocol floor = ${(g / pf).toFixed(2)}×  (onnxruntime inside it ${(p50(protocolRunTimes) * 1000).toFixed(0)} µs)`);
    out(`    CPU per request: protocol floor server ${pc.server.toFixed(0)} µs + client ${pc.client.toFixed(0)} µs (the wire format: +${(pc.server - fc.server).toFixed(0)} µs + ${(pc.client - fc.client).toFixed(0)} µs over the floor); event loops: floor server ${fc.serverMain.toFixed(0)} µs, protocol floor server ${pc.serverMain.toFixed(0)} µs, grid node ${gc.serverMain.toFixed(0)} µs; grid node / protocol floor ≥ ${(gc.total / pc.total).toFixed(2)}× (their CPU ratio), node alone ${(gc.server / pc.server).toFixed(2)}×`);
    {
      // Where the wire format's cost goes (bench/wire-variants.ts; bench/wire-attribution.ts prints the whole table):
      // the floor's bytes vs the grid's sizes with no codec, the grid's frames written and read by hand, and
      // GridClient's/the node's codec; each interleaved with the floor, deltas paired with it per rep.
      const kinds: WireKind[] = ['floor', 'pad', 'lean', 'full'];
      const geometry = wireGeometry(wire.request, 'mlp', 'x', await local.run(one));
      const conns = [];
      for (const kind of kinds) conns.push(await openWireVariant(peer.url, peer.child.pid!, mlp, one.x!.data as Float32Array, { kind, ...geometry }));
      const res = await attributeWire(conns, { reps: quick ? 3 : 5, rounds: quick ? 100 : 400, warmUp: quick ? 300 : 1500 });
      for (const c of conns) c.close();
      const fl = res.get('floor')!;
      const delta = (xs: number[], f: number[]) => { const d = p50(xs.map((x, i) => x - f[i]!)); return `${d >= 0 ? '+' : '−'}${Math.abs(d).toFixed(0)}`; };
      const cell = (k: WireKind) => { const m = res.get(k)!; return `${delta(m.p50, fl.p50)}/${delta(m.server, fl.server)}/${delta(m.client, fl.client)} (onnxruntime ${p50(m.run).toFixed(0)})`; };
      out(`    wire format, over the floor (round trip/server CPU/client CPU µs; onnxruntime inside the peer ${p50(fl.run).toFixed(0)} µs for the floor): the grid's frame sizes, no codec ${cell('pad')}; the grid's frames written and read by hand ${cell('lean')}; with the product codec ${cell('full')}`);
    }
    out(`  ratio remote / (local + raw ws)   ${(g / (l + r)).toFixed(2)}×  (target ≤ 1.3×)${cores >= 2 ? '  [client on core 0, node and raw ws server on core 1]' : ''}`);
    // What bounds that target here: a server that waits for each request runs onnxruntime cold (its weights
    // out of cache), unlike the back-to-back local loop; the floor pays it with no protocol at all.
    out(`    (bound on this machine: the floor alone is ${(f / (l + r)).toFixed(2)}× (local + raw ws); onnxruntime inside the node ${(p50(nodeRunTimes) * 1000).toFixed(0)} µs vs ${(l * 1000).toFixed(0)} µs back to back locally)`);
    if (cores >= 2) { const all = `0-${cores - 1}`; pin(process.pid, all); pin(node.child.pid!, all); pin(peer.child.pid!, all); }

    if (SECTIONS.has('2')) {
      // 2. Batch 256 throughput, pipelined: local onnxruntime, the grid node over the socket, the same bytes
      // over raw ws (the transport's ceiling) and through shared memory, interleaved 3 times so machine noise
      // hits them alike (p50 of the 3). CPU per batch of every process, to the nanosecond: on a shared
      // machine wall time says how busy the neighbours were, CPU what each path costs.
      const big: NamedTensors = { x: { dtype: 'float32', dims: [256, 784], data: seededFloats(256 * 784, 2) } };
      const bigReq = encodeNamedTensors(big).length + 64;
      const [socketClient, viaShm] = [client, shmClient];
      const pipelined = async (c: GridClient) => {
        const t = performance.now();
        let next = 0;
        await Promise.all(Array.from({ length: PIPELINE }, async () => { while (next < BATCH_RUNS) { next++; await c.runInference('mlp', big); } }));
        return (BATCH_RUNS * 256) / ((performance.now() - t) / 1000);
      };
      for (let i = 0; i < 3; i++) { await local.run(big); await client.runInference('mlp', big); await shmClient.runInference('mlp', big); }
      const rates = { local: [] as number[], socket: [] as number[], raw: [] as number[], shm: [] as number[] };
      const cpu = { local: new CpuMeter(process.pid), socket: new CpuMeter(node.child.pid!), raw: new CpuMeter(peer.child.pid!), shm: new CpuMeter(node.child.pid!), ping: new CpuMeter(node.child.pid!) };
      const measures: (() => Promise<void>)[] = [
        async () => {
          cpu.local.start();
          const t = performance.now();
          for (let i = 0; i < BATCH_RUNS; i++) await local.run(big);
          rates.local.push((BATCH_RUNS * 256) / ((performance.now() - t) / 1000));
          cpu.local.stop(BATCH_RUNS);
        },
        async () => { cpu.socket.start(); rates.socket.push(await pipelined(socketClient)); cpu.socket.stop(BATCH_RUNS); },
        async () => { rates.raw.push(256 * await rawPipelined(peer.url, bigReq, 256 * 10 * 4 + 128, BATCH_RUNS, PIPELINE, cpu.raw)); },
        async () => { cpu.shm.start(); rates.shm.push(await pipelined(viaShm)); cpu.shm.stop(BATCH_RUNS); },
        async () => {
          cpu.ping.start();
          for (let i = 0; i < 100; i++) await socketClient.socket.request(Ping, undefined);
          cpu.ping.stop(100);
        },
      ];
      // Each round starts one measure later, so none always follows the same one (and its garbage).
      for (let rep = 0; rep < 3; rep++) for (let m = 0; m < measures.length; m++) await measures[(m + rep) % measures.length]!();
      const shmUsed = shmClient.shm.currentRegion !== undefined;
      const shmFloorCpu = new CpuMeter(peer.child.pid!);
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
      const [localRate, remoteRate, rawRate, shmRate] = [p50(rates.local), p50(rates.socket), p50(rates.raw), p50(rates.shm)];
      const [lc, sc, rc, mc, pc, fc2] = [cpu.local.perRequest(), cpu.socket.perRequest(), cpu.raw.perRequest(), cpu.shm.perRequest(), cpu.ping.perRequest(), shmFloorCpu.perRequest()];
      const us = (x: number) => `${x.toFixed(0)} µs`;
      out(`remote inference, batch 256 (${BATCH_RUNS} batches × 3 interleaved, ${PIPELINE} requests in flight, p50 of the 3; onnxruntime: 1 intra-op thread on every side)`);
      out(`  local onnxruntime       ${localRate.toFixed(0)} samples/s  (CPU ${us(lc.client)} per batch)`);
      out(`  remote via grid node    ${remoteRate.toFixed(0)} samples/s  = ${(remoteRate / localRate).toFixed(2)}× local`);
      out(`  transport ceiling: the same ${(bigReq / 1024).toFixed(0)} KiB requests over raw ws (unmasked on loopback, as GridSocket sends them), pipelined alike, no compute: ${rawRate.toFixed(0)} samples/s`);
      out(`  ratio remote / ceiling  ${(remoteRate / rawRate).toFixed(2)}×  (target ≥ 0.9×)`);
      out(`    CPU per batch: ceiling server ${us(rc.server)} (event loop ${us(rc.serverMain)}) + client ${us(rc.client)}; grid node ${us(sc.server)} (event loop ${us(sc.serverMain)}) + client ${us(sc.client)}`);
      out(`    limits: where the CPU is shared, remote / ceiling ≤ ${(rc.total / sc.total).toFixed(2)}× (their CPU ratio); with cores to spare, each server's event loop (the thread that serialises its requests) bounds its rate, so remote / ceiling ≤ ${(rc.serverMain / sc.serverMain).toFixed(2)}× (${us(rc.serverMain)} / ${us(sc.serverMain)}, onnxruntime's ~${us(lc.client)} a batch on the node's)`);
      out(`remote inference, batch 256, through shared memory (a client on the node's machine; same runs as above)`);
      out(`  via shared memory       ${shmRate.toFixed(0)} samples/s${shmUsed ? '' : '  [WARNING: the node refused shared memory; these went over the socket]'}; shm / socket ${(shmRate / remoteRate).toFixed(2)}×`);
      out(`  ratio shm / local       ${(shmRate / localRate).toFixed(2)}×  (target ≥ 0.8×)`);
      out(`    CPU per batch: local ${us(lc.client)}; grid node ${us(mc.server)} (event loop ${us(mc.serverMain)}) + client ${us(mc.client)} (event loop ${us(mc.clientMain)}); a grid ping alone costs node ${us(pc.server)} + client ${us(pc.client)}`);
      out(`    limits: where the CPU is shared, shm / local ≤ ${(lc.client / mc.total).toFixed(2)}× (their CPU ratio); with cores to spare, the node's event loop (${us(mc.serverMain)} a batch: onnxruntime ~${us(lc.client)}, the rest ${us(mc.serverMain - lc.client)}) bounds it at ${(lc.client / mc.serverMain).toFixed(2)}× local`);
      out(`  floor: a bare ws server running onnxruntime on inputs it reads from /dev/shm, pipelined alike  ${shmFloor.toFixed(0)} samples/s = ${(shmFloor / localRate).toFixed(2)}× local; grid shm / floor = ${(shmRate / shmFloor).toFixed(2)}×; its CPU per batch: server ${us(fc2.server)} (event loop ${us(fc2.serverMain)}) + client ${us(fc2.client)}, so even it is ≤ ${(lc.client / fc2.total).toFixed(2)}× local where the CPU is shared`);
      out(`  one request at a time, p50: ${sweep.join('; ')}  (GridClient switches to shared memory from 64 KiB of inputs)`);
    }
    await local.dispose();

    // 3. Upload of a big model: fresh processes per run (bench/node-upload.ts).
    if (SECTIONS.has('3')) await uploadSection(dir, out, UPLOAD);
    out(`machine load average at the end: ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  } finally {
    client?.dispose();
    shmClient?.dispose();
    await Promise.all(procs.map((p) => p.kill('SIGTERM')));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

void main();
