// The wire format's per-request pieces, timed warm (back to back) and cold (each after the thread slept
// 150 µs, as a server or client does between requests, so the neighbours on its core run meanwhile):
// what each one costs where a batch-1 request pays it. Run: node scripts/bench.mjs bench/wire-cold.ts
// (WIRE_COLD_PIN=1: on core 1, where bench/node-inference.ts puts its servers)

import { spawnSync } from 'node:child_process';
import * as os from 'node:os';
import { decodeBinaryFrame, encodeMessageFrame, parseEnvelopeBytes, DEFAULT_JSON_LIMITS } from '../src/core/protocol/envelope';
import { decodeNamedTensors, encodeNamedTensorsParts, type NamedTensors } from '../src/core/protocol/tensor';
import { seededFloats } from '../test/helpers/node-fixtures';

const x: NamedTensors = { x: { dtype: 'float32', dims: [1, 784], data: seededFloats(784, 1) } };
const y: NamedTensors = { y: { dtype: 'float32', dims: [1, 10], data: seededFloats(10, 2) } };
const reqEnv = { type: 'run-inference', request_id: '3f9a0c1e-1a', data: { model_id: 'mlp' } };
const request = encodeMessageFrame(reqEnv, encodeNamedTensorsParts(x));
const replyEnv = { type: 'run-inference', data: { model_id: 'mlp', version: '1', outputs: [{ name: 'y', dtype: 'float32', dims: [1, 10] }], duration_ms: 0.0123456789 }, request_id: '3f9a0c1e-1a' };
const reply = encodeMessageFrame(replyEnv, encodeNamedTensorsParts(y));
const reqJsonAt = 16 + 16;
const reqJsonEnd = reqJsonAt + request.readUInt32LE(12);
const replyJsonEnd = reqJsonAt + reply.readUInt32LE(12);
const attachment = request.subarray(reqJsonAt + ((request.readUInt32LE(12) + 7) & ~7));
let sink: unknown;

const ops: [string, () => unknown][] = [
  ['nothing', () => 0],
  ['Buffer.alloc(8)', () => Buffer.alloc(8)],
  ['Buffer.allocUnsafe(3296)', () => Buffer.allocUnsafe(3296)],
  ['toString utf8 (request JSON, 67 B)', () => request.toString('utf8', reqJsonAt, reqJsonEnd)],
  ['toString latin1 (request JSON)', () => request.toString('latin1', reqJsonAt, reqJsonEnd)],
  ['JSON.parse(toString) request envelope', () => JSON.parse(request.toString('utf8', reqJsonAt, reqJsonEnd))],
  ['JSON.parse(toString) reply envelope', () => JSON.parse(reply.toString('utf8', reqJsonAt, replyJsonEnd))],
  ['parseEnvelopeBytes request (limits scan + parse + check)', () => parseEnvelopeBytes(request, reqJsonAt, reqJsonEnd, DEFAULT_JSON_LIMITS)],
  ['decodeBinaryFrame(request, limits)', () => decodeBinaryFrame(request, DEFAULT_JSON_LIMITS)],
  ['decodeBinaryFrame(reply)', () => decodeBinaryFrame(reply)],
  ['decodeNamedTensors request attachment', () => decodeNamedTensors(attachment)],
  ['JSON.stringify reply envelope', () => JSON.stringify(replyEnv)],
  ['encodeNamedTensorsParts(y)', () => encodeNamedTensorsParts(y)],
  ['encodeMessageFrame(reply, parts(y))', () => encodeMessageFrame(replyEnv, encodeNamedTensorsParts(y))],
  ['encodeMessageFrame(request, parts(x))', () => encodeMessageFrame(reqEnv, encodeNamedTensorsParts(x))],
];

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const futex = new Int32Array(new SharedArrayBuffer(4));

function time(op: () => unknown, n: number, sleepUs: number): number {
  const ts: number[] = [];
  for (let i = 0; i < n; i++) {
    if (sleepUs > 0) Atomics.wait(futex, 0, 0, sleepUs / 1000);
    const t0 = performance.now();
    sink = op();
    ts.push(performance.now() - t0);
  }
  return median(ts) * 1000;
}

if (process.env.WIRE_COLD_PIN === '1') spawnSync('taskset', ['-a', '-p', '-c', '1', String(process.pid)]);
process.stdout.write(`load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}\n`);
for (const [, op] of ops) time(op, 5000, 0);
const rows = ops.map(([name]) => ({ name, warm: [] as number[], cold: [] as number[] }));
for (let rep = 0; rep < 5; rep++) {
  ops.forEach(([, op], i) => { rows[i]!.warm.push(time(op, 400, 0)); rows[i]!.cold.push(time(op, 400, 150)); });
}
process.stdout.write(`${'piece'.padEnd(58)} warm µs  cold µs (after 150 µs asleep; median of 5 medians)\n`);
for (const r of rows) process.stdout.write(`${r.name.padEnd(58)} ${median(r.warm).toFixed(2).padStart(7)}  ${median(r.cold).toFixed(2).padStart(7)}\n`);
void sink;
