// One model-centric FL cycle of N lightweight workers (default 250 and 1000) on loopback against a real
// node in its own process, a ~100k-parameter model, every worker reporting a precomputed diff. Measured
// in the same run, against baselines:
//   - reports/s of the node vs frames/s of a raw `ws` sink (bench/servers/fl-ws-sink.ts) taking the
//     same frames over the same number of connections with the same window in flight (target ≥ 0.5×),
//     and the same comparison in CPU time per report, which the machine's other load moves far less;
//   - the node's RSS growth from all workers accepted to the checkpoint written (target < 2 × model
//     size + 64 MiB, and the same at 250 and 1000 workers), beside the sink's growth for the same frames;
//   - averaging (the node's RunningSum.add) vs memcpy doing the same memory traffic: each diff read once
//     and the running sum (float64) written (target ≥ 0.5×).
// Usage: npm run bench:fl [-- --workers 250,1000 --threads 2 --window 16 --hidden 128 --node-flags "--cpu-prof --cpu-prof-dir=/tmp/p" --node-stdout /tmp/node.log]
// (--node-flags: node options for the grid node's process only, e.g. to profile it.)

import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { GridClient } from '../src/core/client';
import { FlHostTraining } from '../src/core/protocol/fl-messages';
import { FlListProcesses, FlReport } from '../src/core/protocol/fl-messages';
import { DEFAULT_JSON_LIMITS, parseTextFrame } from '../src/core/protocol/envelope';
import { decodeState, decodeText, encodeState, type StateTensor } from '../src/core/protocol/syft-state';
import { decodeBase64Transient, type JsonText } from '../src/core/protocol/text-bytes';
import { bufferSource } from '../src/core/socket/transfer';
import { mlp } from '../src/compute/plan';
import { flParams } from '../src/federation';
import { RunningSum } from '../src/node/fl/averaging';
import { processCpuSeconds, processRss } from './rss';
import { FlWorkers } from './fl-workers';

const ms = (s: number) => `${(s * 1000).toFixed(2)} ms`;

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}
const WORKERS = arg('workers', '250,1000').split(',').map(Number);
const THREADS = Number(arg('threads', '2'));
const WINDOW = Number(arg('window', '16'));
const HIDDEN = Number(arg('hidden', '128'));
const NODE_FLAGS = arg('node-flags', '').split(' ').filter((f) => f.length > 0);
/** --node-stdout FILE: the grid node's stdout appended to FILE (e.g. what --trace-gc in --node-flags prints). */
const NODE_STDOUT = arg('node-stdout', '');
const PASSWORD = 'bench-admin-password';
const MiB = 1024 * 1024;

const model = mlp([784, HIDDEN, 10], { seed: 1 });
const params = flParams(model);
const P = params.reduce((a, p) => a + p.tensor.data.length, 0);
const modelBytes = P * 4;
// Every worker sends the same small diff: old − new = 1e-3·pattern, so the checkpoint is old − that.
const diffTensors: StateTensor[] = params.map((p) => ({ dims: p.tensor.dims, data: Float32Array.from({ length: p.tensor.data.length }, (_, i) => ((i % 13) - 6) * 1e-3) }));
const diffB64 = Buffer.from(encodeState(diffTensors)).toString('base64');

function startServer(script: string, args: string[] = [], flags: string[] = []): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [...flags, join(__dirname, 'servers', script), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d;
      const m = /listening on (\S+)/.exec(out);
      if (m) resolve({ child, url: m[1]! });
    });
    child.once('exit', (code) => reject(new Error(`${script} exited with ${code} before listening`)));
  });
}

interface GcPauses { ms: number; full: number; young: number }

/** The server's GC pauses so far (bench/servers/gc-meter.ts: asked with SIGUSR2, answered on its stdout). */
function gcPauses(child: ChildProcess): Promise<GcPauses> {
  return new Promise((resolve) => {
    let out = '';
    const onData = (d: Buffer) => {
      out += d;
      const m = /gc (\S+) (\d+) (\d+)\n/.exec(out);
      if (m === null) return;
      child.stdout!.off('data', onData);
      resolve({ ms: Number(m[1]), full: Number(m[2]), young: Number(m[3]) });
    };
    child.stdout!.on('data', onData);
    child.kill('SIGUSR2');
  });
}

const gcSince = (a: GcPauses, b: GcPauses): GcPauses => ({ ms: b.ms - a.ms, full: b.full - a.full, young: b.young - a.young });

async function stopServer(child: ChildProcess): Promise<void> {
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  if (await Promise.race([exited.then(() => true), delay(10_000, false)]) === false) child.kill('SIGKILL');
}

/** The bench's workers against one node (or the raw ws sink). */
function clients(url: string, workers: number, baseline: boolean, name = '', version = ''): FlWorkers {
  return new FlWorkers({ urls: [url], workers, threads: THREADS, window: WINDOW, diffB64, baseline, name, version });
}

async function baseline(n: number): Promise<{ rate: number; bytes: number; rssGrowth: number; cpuPerFrame: number; gc: GcPauses }> {
  const { child, url } = await startServer('fl-ws-sink.js');
  const c = clients(url, n, true);
  let sampler: NodeJS.Timeout | undefined;
  try {
    await c.join();
    await delay(200);
    const rssBase = processRss(child.pid!);
    let peak = rssBase;
    sampler = setInterval(() => { peak = Math.max(peak, processRss(child.pid!)); }, 20);
    const gc0 = await gcPauses(child);
    const cpu0 = processCpuSeconds(child.pid!);
    const r = await c.report();
    const cpu = processCpuSeconds(child.pid!) - cpu0;
    const gc = gcSince(gc0, await gcPauses(child));
    clearInterval(sampler);
    if (r.ok !== n) throw new Error(`baseline: ${r.ok} of ${n} frames answered`);
    return { rate: n / r.seconds, bytes: r.bytes / n, rssGrowth: Math.max(peak, processRss(child.pid!)) - rssBase, cpuPerFrame: cpu / n, gc };
  } finally {
    if (sampler) clearInterval(sampler);
    await c.stop();
    await stopServer(child);
  }
}

interface NodeRun { gc: GcPauses; rate: number; reportSeconds: number; joinSeconds: number; cycleSeconds: number; closeSeconds: number; rssBase: number; rssGrowth: number; maxErr: number; cpuPerJoin: number; cpuPerReport: number }

async function node(n: number): Promise<NodeRun> {
  const { child, url } = await startServer('fl-node.js', [PASSWORD], NODE_FLAGS);
  if (NODE_STDOUT !== '') child.stdout!.on('data', (d: Buffer) => appendFileSync(NODE_STDOUT, d));
  const admin = await GridClient.connect(url, { credentials: { username: 'admin', password: PASSWORD }, reconnect: { maxAttempts: 0 } });
  let workers: FlWorkers | undefined;
  let sampler: NodeJS.Timeout | undefined;
  try {
    const name = `bench-${n}`;
    const up = await admin.socket.upload(bufferSource(model));
    await admin.socket.request(FlHostTraining, {
      model_transfer_id: up.transfer_id, client_config: { name, version: '1.0' },
      server_config: { max_workers: n, max_diffs: n, num_cycles: 1, cycle_length: 3600 },
    }, { timeout: 120_000 });
    workers = clients(url, n, false, name, '1.0');
    const t0 = performance.now();
    const cpuJoin0 = processCpuSeconds(child.pid!);
    const accepted = await workers.join();
    const cpuJoin = processCpuSeconds(child.pid!) - cpuJoin0;
    if (accepted !== n) throw new Error(`node: ${accepted} of ${n} workers accepted`);
    const tJoined = performance.now();
    await delay(200);
    const rssBase = processRss(child.pid!);
    let peak = rssBase;
    sampler = setInterval(() => { peak = Math.max(peak, processRss(child.pid!)); }, 20);
    const gc0 = await gcPauses(child);
    const cpu0 = processCpuSeconds(child.pid!);
    const r = await workers.report();
    const cpuReports = processCpuSeconds(child.pid!) - cpu0;
    const gc = gcSince(gc0, await gcPauses(child));
    if (r.ok !== n) throw new Error(`node: ${r.ok} of ${n} reports acknowledged`);
    const tReported = performance.now();
    for (;;) {
      const { processes } = await admin.socket.request(FlListProcesses, {});
      if (processes.find((p) => p.name === name && p.version === '1.0')!.completed_cycles >= 1) break;
      await delay(10);
    }
    const tClosed = performance.now();
    clearInterval(sampler);
    peak = Math.max(peak, processRss(child.pid!));
    // The checkpoint is old − the (identical) diff every worker sent.
    const res = await fetch(`${url.replace(/^ws/, 'http')}/model-centric/retrieve-model?name=${name}&version=1.0&checkpoint=latest`);
    const after = flParams(new Uint8Array(await res.arrayBuffer()));
    let maxErr = 0;
    after.forEach((p, i) => { for (let k = 0; k < p.tensor.data.length; k++) maxErr = Math.max(maxErr, Math.abs(p.tensor.data[k]! - (params[i]!.tensor.data[k]! - diffTensors[i]!.data[k]!))); });
    return {
      gc, rate: n / r.seconds, reportSeconds: r.seconds, joinSeconds: (tJoined - t0) / 1000, cycleSeconds: (tClosed - t0) / 1000,
      closeSeconds: (tClosed - tReported) / 1000, rssBase, rssGrowth: peak - rssBase, maxErr, cpuPerJoin: cpuJoin / n, cpuPerReport: cpuReports / n,
    };
  } finally {
    if (sampler) clearInterval(sampler);
    await workers?.stop();
    admin.dispose();
    await stopServer(child);
  }
}

/**
 * What the node must do with each report beyond carrying its bytes, stage by stage on one report frame
 * (median of interleaved runs, in this process: warm, without the node's GC pressure, so a lower bound):
 * the envelope parsed (the diff becomes a string: PyGrid's wire puts it in JSON as base64), the base64
 * decoded, the State decoded and its values checked finite, the diff added to the running sum.
 */
function stages(): { envelope: number; base64: number; state: number; sum: number } {
  const frame = Buffer.from(`{"type":"model-centric/report","request_id":"r1","data":{"worker_id":"00000000-0000-4000-8000-000000000000","request_key":"${'0'.repeat(64)}","num_samples":10,"diff":"${diffB64}"}}`);
  // As the node parses a report: its diff left as the frame's bytes (FlReport.textBytes).
  const textBytes = (type: string) => (type === FlReport.type ? FlReport.textBytes : undefined);
  // parseTextFrame: the node checks a text frame's UTF-8 itself (its ws skips that), so the stage includes it.
  const text = (parseTextFrame(frame, DEFAULT_JSON_LIMITS, textBytes)!.data as { diff: string | JsonText }).diff;
  // As decodeStateText does: decoded into the text kernels' memory, where decodeState walks it (each
  // base64 run below decodes the same frame there again).
  const b64 = (t: string | JsonText) => (typeof t === 'string' ? decodeText(t, 'base64') : decodeBase64Transient(t.bytes));
  const bytes = b64(text)!;
  // Its floats into a buffer reused from report to report, as the node's (FlEngine's DiffBuffers).
  const floats = new ArrayBuffer(P * 4);
  const place = () => floats;
  const diff = decodeState(bytes, 'the diff', {}, place).map((t) => ({ dims: t.dims, data: t.data.slice() }));
  const sum = new RunningSum(params.map((p) => p.tensor.dims));
  const fns = {
    envelope: () => parseTextFrame(frame, DEFAULT_JSON_LIMITS, textBytes),
    base64: () => b64(text),
    state: () => decodeState(bytes, 'the diff', {}, place),
    sum: () => sum.add(diff, 10),
  };
  const times: Record<keyof typeof fns, number[]> = { envelope: [], base64: [], state: [], sum: [] };
  for (let r = 0; r < 60; r++) {
    for (const k of Object.keys(fns) as (keyof typeof fns)[]) { const t = performance.now(); fns[k](); times[k].push((performance.now() - t) / 1000); }
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1]!;
  return { envelope: median(times.envelope), base64: median(times.base64), state: median(times.state), sum: median(times.sum) };
}

/** RunningSum.add over K distinct diffs vs memcpy of the same traffic (diff read once, float64 sum written), best of reps, interleaved. */
function averaging(): { ratio: number; gbps: number; memcpyGbps: number } {
  const K = 64, reps = 7;
  const shapes = params.map((p) => p.tensor.dims);
  const diffs = Array.from({ length: K }, (_, k) => diffTensors.map((t) => ({ dims: t.dims, data: t.data.map((v) => v * (k + 1)) })));
  const flat = diffs.map((d) => { const f = new Float32Array(P); let at = 0; for (const t of d) { f.set(t.data, at); at += t.data.length; } return new Uint8Array(f.buffer); });
  const sumBytes = new Uint8Array(P * 8);
  const fns = [
    () => { const s = new RunningSum(shapes); diffs.forEach((d, k) => s.add(d, 10 + k)); },
    () => { for (const f of flat) { sumBytes.set(f, 0); sumBytes.set(f, P * 4); } },
  ];
  for (const fn of fns) fn();
  const best = fns.map(() => Infinity);
  for (let r = 0; r < reps; r++) fns.forEach((fn, i) => { const t = performance.now(); fn(); best[i] = Math.min(best[i]!, performance.now() - t); });
  const traffic = K * P * 12; // per diff: 4P read, 8P written
  return { ratio: best[1]! / best[0]!, gbps: traffic / (best[0]! / 1000) / 1e9, memcpyGbps: traffic / (best[1]! / 1000) / 1e9 };
}

async function main(): Promise<void> {
  const limit = 2 * modelBytes + 64 * MiB;
  console.log(`FL cycle on loopback: model mlp 784-${HIDDEN}-10, ${P} parameters (${(modelBytes / MiB).toFixed(2)} MiB); report frame ${(diffB64.length / MiB).toFixed(2)} MiB of base64; ${THREADS} client threads, ${WINDOW} reports in flight per thread`);
  const rows: { n: number; base: { rate: number; rssGrowth: number; cpuPerFrame: number; gc: GcPauses }; run: NodeRun }[] = [];
  for (const n of WORKERS) {
    const base = await baseline(n);
    const run = await node(n);
    rows.push({ n, base, run });
    console.log(`\n${n} workers:`);
    console.log(`  cycle wall time ${run.cycleSeconds.toFixed(2)} s (authenticate + cycle-request ${run.joinSeconds.toFixed(2)} s, reports ${run.reportSeconds.toFixed(2)} s, last report → checkpoint ${(run.closeSeconds * 1000).toFixed(0)} ms)`);
    console.log(`  reports/s ${run.rate.toFixed(0)} vs raw ws ${base.rate.toFixed(0)} frames/s (${(base.bytes / MiB).toFixed(2)} MiB each): ratio ${(run.rate / base.rate).toFixed(2)}× (target ≥ 0.5×)`);
    console.log(`  CPU per report ${ms(run.cpuPerReport)} vs raw ws ${ms(base.cpuPerFrame)} per frame: ratio ${(base.cpuPerFrame / run.cpuPerReport).toFixed(2)}× (the same target, far less moved by the machine's other load than wall time); authenticate + cycle-request ${ms(run.cpuPerJoin)} per worker`);
    // GC pauses on the main thread while the reports arrived: wall time, which the machine's other load
    // stretches (the counts it does not); the collector's helper threads are in the CPU times only.
    console.log(`  GC pauses (wall time) per report ${ms(run.gc.ms / 1000 / n)} (${run.gc.full} full, ${run.gc.young} young collections) vs raw ws ${ms(base.gc.ms / 1000 / n)} per frame (${base.gc.full} full, ${base.gc.young} young)`);
    console.log(`  node RSS ${(run.rssBase / MiB).toFixed(0)} MiB → growth ${(run.rssGrowth / MiB).toFixed(1)} MiB (limit 2 × model + 64 MiB = ${(limit / MiB).toFixed(1)} MiB): ${(run.rssGrowth / limit).toFixed(2)}× of the limit`);
    // The floor: a process that only receives these frames with ws grows this much, because V8 frees a
    // received frame's buffers only at a GC, which their external memory triggers ~64 MiB later.
    const above = run.rssGrowth - base.rssGrowth;
    console.log(`  RSS floor: the raw ws sink grew ${(base.rssGrowth / MiB).toFixed(1)} MiB taking the same frames (${(base.rssGrowth / limit).toFixed(2)}× of the limit); the node's growth above that floor ${(above / MiB).toFixed(1)} MiB vs 2 × model = ${(2 * modelBytes / MiB).toFixed(1)} MiB`);
    console.log(`  checkpoint = old − mean(diff): max |err| ${run.maxErr.toExponential(2)}`);
  }
  if (rows.length >= 2) {
    const [a, b] = [rows[0]!, rows.at(-1)!];
    console.log(`\nRSS growth ${b.n} vs ${a.n} workers: ${(b.run.rssGrowth / MiB).toFixed(1)} / ${(a.run.rssGrowth / MiB).toFixed(1)} MiB = ${(b.run.rssGrowth / Math.max(1, a.run.rssGrowth)).toFixed(2)}× for ${(b.n / a.n).toFixed(0)}× the workers`);
  }
  const st = stages();
  const need = st.envelope + st.base64 + st.state + st.sum;
  const sink = rows.reduce((a, r) => a + r.base.cpuPerFrame, 0) / Math.max(1, rows.length);
  console.log(`\nper report beyond carrying its bytes (one frame, warm, in this process: a lower bound): envelope (the diff left as the frame's bytes) ${ms(st.envelope)}, base64 → bytes ${ms(st.base64)}, State decode + finite check ${ms(st.state)}, running sum ${ms(st.sum)} = ${ms(need)}`);
  console.log(`  with the raw ws sink's ${ms(sink)} CPU per frame, the best CPU ratio this work leaves is ${(sink / (sink + need)).toFixed(2)}× (target ≥ 0.5×)`);
  // What the node spends per report besides the sink's work and the decode: routing and validation, the
  // store (lookups, the report's row, the group commit's sum file and fsyncs) and the garbage collector.
  for (const r of rows) {
    const rest = r.run.cpuPerReport - r.base.cpuPerFrame - need;
    const gcMore = (r.run.gc.ms - r.base.gc.ms) / 1000 / r.n;
    console.log(`  ${r.n} workers: the node's CPU per report ${ms(r.run.cpuPerReport)} = the sink's ${ms(r.base.cpuPerFrame)} + the decode ${ms(need)} + the rest ${ms(rest)} (routing, store, group commit, GC: its pauses beyond the sink's ${ms(gcMore)} of wall time); 0.5× needs the decode and the rest within ${ms(r.base.cpuPerFrame)}`);
  }
  const avg = averaging();
  console.log(`\naveraging (RunningSum.add, 64 diffs of ${P}): ${avg.gbps.toFixed(2)} GB/s of traffic vs memcpy of the same traffic ${avg.memcpyGbps.toFixed(2)} GB/s: ratio ${avg.ratio.toFixed(2)}× (target ≥ 0.5×)`);
}

void main().catch((err: unknown) => { console.error(err); process.exit(1); });
