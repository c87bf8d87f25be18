// Section 3 of bench/node-inference.ts: upload of a 1 GiB ONNX model (chunked, sha256 on both ends,
// written and fsync'd on the node) vs raw `ws` binary frames carrying the same file into a sink, and vs
// this disk's best write rate; targets ≥ 0.6× raw ws, ≥ 0.9× min(raw ws, disk), RSS growth < 64 MiB per side.
// Every run has processes of its own, a fresh server and a fresh client: the RSS growth measured is the
// upload's alone (the bench's earlier sections leave freed memory in a process, which an upload then reuses
// without growing its RSS). Raw and grid runs alternate; the median is reported. The last grid run's
// model is then validated (loaded) by the node and checked with a remote Gather.

import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { GridClient } from '../src/core/client';
import { HostModel } from '../src/core/protocol/messages';
import { fileSource } from '../src/core/socket/transfer';
import { writeBigModel } from '../test/helpers/node-fixtures';
import { startNodeScript } from '../test/helpers/processes';
import { processCpuSeconds, processRss, rssSampler } from './rss';
import { diskWrite, rawSend, rawWs, sha256CpuPerGiB, storeCpuPerGiB } from './upload-baselines';

const MiB = 1024 * 1024;
const PASSWORD = 'bench-upload-password-1';

/** What one run's client reports once the bytes are sent (and, for grid, committed). */
interface ClientReport { mibps: number; rss: number; cpu: number; transfer_id?: string }
interface Run { mibps: number; clientRss: number; serverRss: number; clientCpu: number; serverCpu: number }

/**
 * The client half of one run, in its own process: `raw URL FILE` or `grid URL FILE [host]`. Once connected
 * (and signed in) it prints `ready` and waits for a line on stdin, so the server's CPU is counted from
 * there; then prints a JSON ClientReport line once the upload is done; with `host`, then has the node
 * validate the model and prints a second line with what that took and the remote row check.
 */
async function ready(): Promise<void> {
  process.stdout.write('ready\n');
  await new Promise((r) => process.stdin.once('data', r));
  process.stdin.pause();
}

export async function uploadClient(args: string[]): Promise<void> {
  const [kind, url, file, host] = args as [string, string, string, string | undefined];
  const source = await fileSource(file);
  const size = source.size;
  if (kind === 'raw') {
    const ws = rawWs(url);
    await new Promise((r) => ws.once('open', r));
    ws.send(JSON.stringify({ sink: size }));
    await new Promise((r) => ws.once('message', r));
    await ready();
    const rss = rssSampler();
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    const done = new Promise<Buffer>((r) => ws.once('message', (d) => r(d as Buffer)));
    // Read from the same file as the grid upload, into reused buffers, with GridSocket's flow control.
    await rawSend(ws, size, (into, pos) => source.readInto!(into, pos));
    const res = JSON.parse(String(await done)) as { received: number };
    const secs = (performance.now() - t0) / 1000;
    const c = process.cpuUsage(c0);
    if (res.received !== size) throw new Error(`raw sink got ${res.received} of ${size} bytes`);
    process.stdout.write(`${JSON.stringify({ mibps: size / MiB / secs, rss: rss.stop(), cpu: (c.user + c.system) / 1e6 } satisfies ClientReport)}\n`);
    await source.close?.();
    ws.close();
    return;
  }
  const client = await GridClient.connect(url, { connect: { heartbeatMs: 0 }, credentials: { username: 'admin', password: PASSWORD }, sharedMemory: { enabled: false } });
  try {
    await ready();
    const rss = rssSampler();
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    const up = await client.socket.upload(source);
    const secs = (performance.now() - t0) / 1000;
    const c = process.cpuUsage(c0);
    process.stdout.write(`${JSON.stringify({ mibps: size / MiB / secs, rss: rss.stop(), cpu: (c.user + c.system) / 1e6, transfer_id: up.transfer_id } satisfies ClientReport)}\n`);
    if (host === undefined) return;
    const t1 = performance.now();
    const hosted = await client.socket.request(HostModel, { model_id: 'big', transfer_id: up.transfer_id, allow_remote_inference: true }, { timeout: 600_000 });
    const validateSecs = (performance.now() - t1) / 1000;
    const row = await client.runInference('big', { i: { dtype: 'int64', dims: [1], data: BigInt64Array.from([777n]) } });
    const ok = (row.y!.data as Float32Array).every((v) => v === 777) && row.y!.dims[1] === Number(host);
    process.stdout.write(`${JSON.stringify({ validateSecs, sha256: hosted.model.sha256, ok })}\n`);
  } finally {
    client.dispose();
  }
}

/**
 * Runs this script's client half (`--upload-client ...`) against a server process, sampling the server's
 * RSS (every 20 ms, from /proc) and CPU from just before the client starts until its first report.
 */
async function clientRun(serverPid: number, args: string[], onMore?: (line: string) => void): Promise<Run> {
  const child = spawn(process.execPath, [process.argv[1]!, '--upload-client', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const lines = createInterface({ input: child.stdout! });
  const exited = new Promise<number | null>((r) => child.once('exit', r));
  let sampling: { rss0: number; cpu0: number; peak: number; timer: NodeJS.Timeout } | undefined;
  let report: ClientReport | undefined;
  let serverCpu = 0;
  let serverRss = 0;
  for await (const line of lines) {
    if (line === 'ready') {
      // Connected and signed in: the server's share of the upload starts here.
      const s = { rss0: processRss(serverPid), cpu0: processCpuSeconds(serverPid), peak: 0, timer: setInterval(() => { s.peak = Math.max(s.peak, processRss(serverPid)); }, 20) };
      s.peak = s.rss0;
      sampling = s;
      child.stdin!.end('go\n');
    } else if (report === undefined && sampling !== undefined) {
      clearInterval(sampling.timer);
      serverCpu = processCpuSeconds(serverPid) - sampling.cpu0;
      serverRss = Math.max(sampling.peak, processRss(serverPid)) - sampling.rss0;
      report = JSON.parse(line) as ClientReport;
    } else {
      onMore?.(line);
    }
  }
  if (sampling) clearInterval(sampling.timer);
  const code = await exited;
  if (report === undefined || code !== 0) throw new Error(`upload client ${args[0]} failed (exit ${code}):\n${err}`);
  return { mibps: report.mibps, clientRss: report.rss, serverRss, clientCpu: report.cpu, serverCpu };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function uploadSection(dir: string, out: (line: string) => void, opts: { nodeMain: string; peer: string; bytes: number; reps: number }): Promise<void> {
  const file = path.join(dir, 'big.onnx');
  const shape = writeBigModel(file, opts.bytes);
  const size = fs.statSync(file).size;
  const GiBs = size / 1024 ** 3;
  const runs = { raw: [] as Run[], grid: [] as Run[], disk: [] as { mbps: number; pattern: string }[] };
  let hosted: { validateSecs: number; sha256: string; ok: boolean } | undefined;
  // Alternating, so load from the rest of the machine hits both alike.
  for (let rep = 0; rep < opts.reps; rep++) {
    const peer = await startNodeScript(opts.peer, []);
    try {
      runs.raw.push(await clientRun(peer.child.pid!, ['raw', peer.url, file]));
    } finally {
      await peer.kill('SIGTERM');
    }
    const dataDir = path.join(dir, `node-${rep}`);
    const node = await startNodeScript(opts.nodeMain, ['--port', '0', '--data-dir', dataDir, '--log-level', 'warn'], { ...process.env, GRID_ADMIN_PASSWORD: PASSWORD },
      // GRID_BENCH_PROFILE=DIR writes a CPU profile of the node process there, for finding where time goes.
      process.env.GRID_BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.GRID_BENCH_PROFILE}`] : []);
    try {
      const last = rep === opts.reps - 1;
      runs.grid.push(await clientRun(node.child.pid!, ['grid', node.url, file, ...(last ? [String(shape.cols)] : [])], (line) => { hosted = JSON.parse(line); }));
    } finally {
      await node.kill('SIGTERM');
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
    runs.disk.push(await diskWrite(dir, size));
  }
  fs.rmSync(file, { force: true });
  const sha = Math.min(sha256CpuPerGiB(), sha256CpuPerGiB(), sha256CpuPerGiB());
  const store = Math.min(await storeCpuPerGiB(dir, size), await storeCpuPerGiB(dir, size));
  const [raw, grid] = [median(runs.raw.map((r) => r.mibps)), median(runs.grid.map((r) => r.mibps))];
  const disk = runs.disk.sort((a, b) => b.mbps - a.mbps)[0]!;
  const most = (xs: Run[], f: (r: Run) => number) => (Math.max(...xs.map(f)) / MiB).toFixed(1);
  const perGiB = (xs: Run[], f: (r: Run) => number) => median(xs.map(f)) / GiBs;
  const cpu = {
    raw: { client: perGiB(runs.raw, (r) => r.clientCpu), server: perGiB(runs.raw, (r) => r.serverCpu) },
    grid: { client: perGiB(runs.grid, (r) => r.clientCpu), server: perGiB(runs.grid, (r) => r.serverCpu) },
  };
  const rawCpu = cpu.raw.client + cpu.raw.server;
  const gridCpu = cpu.grid.client + cpu.grid.server;
  out(`upload of a ${(size / MiB).toFixed(0)} MiB ONNX model (1 MiB chunks, sha256 both ends, fsync'd on the node); fresh processes per run, median of ${opts.reps}`);
  out(`  raw ws binary frames    ${raw.toFixed(0)} MiB/s  (same file, reused buffers, zero mask on loopback as GridSocket; peak RSS growth client ${most(runs.raw, (r) => r.clientRss)} MiB, server ${most(runs.raw, (r) => r.serverRss)} MiB)`);
  out(`  grid upload             ${grid.toFixed(0)} MiB/s  (peak RSS growth client ${most(runs.grid, (r) => r.clientRss)} MiB, node ${most(runs.grid, (r) => r.serverRss)} MiB, the most of ${opts.reps} runs)`);
  out(`  this machine's disk     ${disk.mbps.toFixed(0)} MiB/s  (best write pattern, ${disk.pattern}, + fsync; bytes already in memory, warm; no network)`);
  out(`  ratio grid / raw ws     ${(grid / raw).toFixed(2)}×  (target ≥ 0.6×; RSS growth target < 64 MiB per side)`);
  out(`  ratio grid / min(raw ws, disk)  ${(grid / Math.min(raw, disk.mbps)).toFixed(2)}×  (target ≥ 0.9×)`);
  out(`  CPU per GiB, raw ws     client ${cpu.raw.client.toFixed(2)} s + server ${cpu.raw.server.toFixed(2)} s = ${rawCpu.toFixed(2)} s  (one core per side: ≤ ${(1024 / Math.max(cpu.raw.client, cpu.raw.server)).toFixed(0)} MiB/s)`);
  out(`  CPU per GiB, grid       client ${cpu.grid.client.toFixed(2)} s + node ${cpu.grid.server.toFixed(2)} s = ${gridCpu.toFixed(2)} s  (one core per side: ≤ ${(1024 / Math.max(cpu.grid.client, cpu.grid.server)).toFixed(0)} MiB/s)`);
  // The limit where the CPU is what holds it: an upload does what raw ws does plus sha256 of every byte on
  // each side (the client to announce it, the node to check what it stored) plus storing it.
  const floor = rawCpu + 2 * sha + store;
  out(`  sha256 here: ${sha.toFixed(2)} s of CPU per GiB (one side); storing alone (the node's aligned copy + O_DIRECT writes + fsync): ${store.toFixed(2)} s; raw ws + 2 × sha256 + storing = ${floor.toFixed(2)} s per GiB, the least an upload can cost`);
  out(`  limit where the CPU is shared (2 cores, ${os.loadavg()[0]!.toFixed(1)} load): ratio vs raw ws ≤ ${(rawCpu / floor).toFixed(2)}× by that least; the grid upload's own CPU allows ${(rawCpu / gridCpu).toFixed(2)}×`);
  const rawBusier = Math.max(cpu.raw.client, cpu.raw.server);
  const nodeLeast = cpu.raw.server + sha + store;
  out(`  limit with a core per side: the node's ${cpu.grid.server.toFixed(2)} s per GiB vs raw's busier side ${rawBusier.toFixed(2)} s allows ${(rawBusier / Math.max(cpu.grid.client, cpu.grid.server)).toFixed(2)}×; the node's least is raw server + sha256 + storing = ${nodeLeast.toFixed(2)} s (≤ ${(rawBusier / nodeLeast).toFixed(2)}×)`);
  out(`  beyond that least, the grid upload spends client +${(cpu.grid.client - cpu.raw.client - sha).toFixed(2)} s, node +${(cpu.grid.server - nodeLeast).toFixed(2)} s per GiB (protocol, acks, promises, scheduling)`);
  if (hosted) out(`  then validated (loaded by onnxruntime) and stored in ${hosted.validateSecs.toFixed(1)} s; sha256 ${hosted.sha256.slice(0, 12)}…; remote Gather row check ${hosted.ok ? 'ok' : 'WRONG'}`);
}
