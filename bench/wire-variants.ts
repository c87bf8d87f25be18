// Attribution of the wire format's cost (issue 18): variants between the floor (raw float32 frames both
// ways) and the protocol floor (the grid's exact frames both ways), each changing one thing. The peer side
// (serveWireVariant) runs in bench/servers/node-peer.ts, the client side (wireVariantRoundTrips) in the bench.
//   floor      raw request, raw reply                         (the floor, on a connection of its own)
//   full       grid request, grid reply, parsed and encoded as the protocol floor does
//   req        grid request (encoded, JSON.parse'd, tensors decoded), raw reply
//   reply      raw request, grid reply (encoded, JSON.parse'd, tensors decoded)
//   pad        frames of the grid's sizes both ways, each a fresh buffer with the floats copied in at the
//              grid's offsets, the rest padding: no JSON, no codec (size and per-frame buffer alone)
//   pad-reuse  the same sizes, one buffer per side reused: frame size alone
//   hand       the grid's frames, encoded as the grid does, read by hand (header, id, tensor offsets): no
//              JSON.parse, no decodeNamedTensors
//   lean       the grid's frames, byte for byte, written by hand too (template JSON, header and tensor
//              written in place into one buffer) and read by hand: the least JS any framing needs
//   sleep30    the floor, its server asleep 30 µs before each reply: a longer round trip, no work at all
//   spin10     the floor, its server spinning 10 µs before each reply (JS that touches no memory)
//   garbage    the floor, its server making ~8 KiB of short-lived objects and strings before each reply

import { PerformanceObserver } from 'node:perf_hooks';
import WebSocket from 'ws';
import { encodeMessageFrame } from '../src/core/protocol/envelope';
import { decodeNamedTensors, encodeNamedTensorsParts, type NamedTensors } from '../src/core/protocol/tensor';
import { cpuSince, cpuSnapshot } from './rss';

export const WIRE_KINDS = ['floor', 'full', 'req', 'reply', 'pad', 'pad-reuse', 'hand', 'lean', 'sleep30', 'spin10', 'garbage'] as const;
export type WireKind = (typeof WIRE_KINDS)[number];

/** A variant and the frame geometry both sides agree on (from the grid's captured request and a reply encoded alike). */
export interface WireVariant {
  kind: WireKind;
  modelId: string;
  input: string;
  /** Request ids: `${idPrefix}-${counter in base 36}`, as GridSocket makes them. */
  idPrefix: string;
  requestBytes: number;
  /** Where the input floats start in the grid's request frame. */
  requestDataAt: number;
  replyBytes: number;
  /** Where the output floats start in the grid's reply frame. */
  replyDataAt: number;
}

const pad8 = (n: number) => (n + 7) & ~7;

/** Milliseconds this process spent in garbage collection since `total` was last zeroed. */
export function gcTime(): { total: number } {
  const t = { total: 0 };
  new PerformanceObserver((list) => { for (const e of list.getEntries()) t.total += e.duration; }).observe({ entryTypes: ['gc'] });
  return t;
}
const clientGc = gcTime();

/** The floats of the one tensor of a grid MESSAGE frame, read by hand; the frame's id checked against `id` when given. */
function handRead(buf: Buffer, id: string | undefined): { id: string; data: Float32Array } {
  if (buf[0] !== 0x47 || buf[1] !== 0x57 || buf[2] !== 1 || buf[3] !== 1) throw new Error('not a grid MESSAGE frame');
  const idLength = buf[5]!;
  const frameId = id !== undefined && idLength === id.length && buf.toString('latin1', 16, 16 + idLength) === id ? id : buf.toString('latin1', 16, 16 + idLength);
  if (id !== undefined && frameId !== id) throw new Error('a reply to another request');
  const at = 16 + pad8(idLength) + pad8(buf.readUInt32LE(12));
  if (buf.readUInt32LE(at) !== 1) throw new Error('not one tensor');
  const p = at + 8 + pad8(2 + buf.readUInt16LE(at + 8)) + 8;
  if (buf[p] !== 0) throw new Error('not float32');
  const rank = buf.readUInt16LE(p + 2);
  let n = 1;
  for (let i = 0; i < rank; i++) n *= buf.readDoubleLE(p + 8 + 8 * i);
  const dataAt = p + 8 + 8 * rank;
  if (dataAt + 4 * n > buf.length) throw new Error('tensor truncated');
  return { id: frameId, data: floatsAt(buf, dataAt, n) };
}

function floatsAt(buf: Buffer, at: number, n: number): Float32Array {
  const o = buf.byteOffset + at;
  return o % 4 === 0 ? new Float32Array(buf.buffer, o, n) : new Float32Array(buf.buffer.slice(o, o + 4 * n));
}

/** The grid's JSON envelope of a request frame, parsed and checked as the protocol floor does. */
function parseRequest(buf: Buffer, modelId: string): { id: string; feeds: NamedTensors } {
  if (buf[0] !== 0x47 || buf[1] !== 0x57 || buf[2] !== 1 || buf[3] !== 1) throw new Error('not a grid MESSAGE frame');
  const idLength = buf[5]!;
  const jsonBytes = buf.readUInt32LE(12);
  const bodyAt = 16 + pad8(idLength);
  const env = JSON.parse(buf.toString('utf8', bodyAt, bodyAt + jsonBytes)) as { type?: unknown; request_id?: unknown; data?: { model_id?: unknown } };
  if (env.type !== 'run-inference' || typeof env.request_id !== 'string' || env.data?.model_id !== modelId) throw new Error('not a run-inference request for this model');
  return { id: env.request_id, feeds: decodeNamedTensors(buf.subarray(bodyAt + pad8(jsonBytes)), { forSession: true }) };
}

function encodeReply(id: string, modelId: string, out: NamedTensors, ms: number): Buffer {
  const outputs: { name: string; dtype: string; dims: readonly number[] }[] = [];
  for (const name in out) { const t = out[name]!; outputs.push({ name, dtype: t.dtype, dims: t.dims }); }
  return encodeMessageFrame({ type: 'run-inference', data: { model_id: modelId, version: '1', outputs, duration_ms: ms }, request_id: id }, encodeNamedTensorsParts(out));
}

/**
 * The grid's MESSAGE frame for `json` and one float32 tensor [1, n] named `name`, written in place: the
 * bytes encodeMessageFrame(env, encodeNamedTensorsParts(...)) makes for an ASCII id, name and JSON.
 */
function leanFrame(id: string, json: string, name: string, data: Float32Array): Buffer {
  const bodyAt = 16 + pad8(id.length);
  const at = bodyAt + pad8(json.length);
  const nameBytes = pad8(2 + name.length);
  const tensorAt = at + 8 + nameBytes + 8;
  const size = tensorAt + 24 + data.byteLength;
  const f = Buffer.allocUnsafe(pad8(size));
  f[0] = 0x47; f[1] = 0x57; f[2] = 1; f[3] = 1; f[4] = 0; f[5] = id.length; f[6] = 0; f[7] = 0;
  f.writeUInt32LE(0, 8); f.writeUInt32LE(json.length, 12);
  f.write(id, 16, 'latin1');
  f.fill(0, 16 + id.length, bodyAt);
  f.write(json, bodyAt, 'latin1');
  f.fill(0x20, bodyAt + json.length, at);
  f.writeUInt32LE(1, at); f.writeUInt32LE(0, at + 4);
  f.writeUInt16LE(name.length, at + 8); f.write(name, at + 10, 'latin1'); f.fill(0, at + 10 + name.length, at + 8 + nameBytes);
  f.writeDoubleLE(24 + data.byteLength, at + 8 + nameBytes);
  f[tensorAt] = 0; f[tensorAt + 1] = 0; f.writeUInt16LE(2, tensorAt + 2); f.writeUInt32LE(0, tensorAt + 4);
  f.writeDoubleLE(1, tensorAt + 8); f.writeDoubleLE(data.length, tensorAt + 16);
  f.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), tensorAt + 24);
  f.fill(0, size);
  return f;
}

function firstFloats(out: NamedTensors): Float32Array {
  for (const name in out) return out[name]!.data as Float32Array;
  throw new Error('no output');
}

let litter: unknown;
/** What the garbage variant made last (kept reachable until the next, so it is not optimised away). */
export const lastLitter = (): unknown => litter;
const napping = new Int32Array(new SharedArrayBuffer(4));
const serverState = new WeakMap<WireVariant, { next: number; reply?: Buffer }>();

/** The peer's side of one request of `v`: decode as the variant says, run, and send the reply it says. */
export function serveWireVariant(v: WireVariant, buf: Buffer, run: (feeds: NamedTensors) => Promise<NamedTensors>, send: (reply: Buffer, runMs: number) => void): void {
  let state = serverState.get(v);
  if (state === undefined) serverState.set(v, (state = { next: 0 }));
  const st = state;
  const rows = (n: number) => [1, n] as const;
  let id = '';
  let feeds: NamedTensors;
  switch (v.kind) {
    case 'full': case 'req': ({ id, feeds } = parseRequest(buf, v.modelId)); break;
    case 'hand': case 'lean': { const r = handRead(buf, undefined); id = r.id; feeds = { [v.input]: { dtype: 'float32', dims: rows(r.data.length), data: r.data } }; break; }
    case 'pad': case 'pad-reuse': { const x = floatsAt(buf, v.requestDataAt, (buf.length - v.requestDataAt) / 4); feeds = { [v.input]: { dtype: 'float32', dims: rows(x.length), data: x } }; break; }
    default: { const x = floatsAt(buf, 0, buf.length / 4); feeds = { [v.input]: { dtype: 'float32', dims: rows(x.length), data: x } }; }
  }
  const started = performance.now();
  void run(feeds).then((out) => {
    const ms = performance.now() - started;
    const y = firstFloats(out);
    switch (v.kind) {
      case 'lean': {
        let name = '';
        for (const k in out) { name = k; break; }
        send(leanFrame(id, `{"type":"run-inference","data":{"model_id":"${v.modelId}","version":"1","outputs":[{"name":"${name}","dtype":"float32","dims":[1,${y.length}]}],"duration_ms":${ms}},"request_id":"${id}"}`, name, y), ms);
        return;
      }
      case 'full': case 'hand': send(encodeReply(id, v.modelId, out, ms), ms); return;
      case 'reply': send(encodeReply(`${v.idPrefix}-${(st.next++).toString(36)}`, v.modelId, out, ms), ms); return;
      case 'pad': case 'pad-reuse': {
        const reply = v.kind === 'pad-reuse' ? (st.reply ??= Buffer.alloc(v.replyBytes, 0x20)) : Buffer.allocUnsafe(v.replyBytes);
        if (v.kind === 'pad') reply.fill(0x20, 0, v.replyDataAt);
        reply.set(new Uint8Array(y.buffer, y.byteOffset, y.byteLength), v.replyDataAt);
        send(reply, ms);
        return;
      }
      case 'sleep30': Atomics.wait(napping, 0, 0, 0.03); break;
      case 'spin10': { const until = performance.now() + 0.01; while (performance.now() < until); break; }
      case 'garbage': { const a: { i: number; s: string }[] = []; for (let i = 0; i < 128; i++) a.push({ i, s: `k${i}:${ms}` }); litter = a; break; }
    }
    send(Buffer.from(y.buffer, y.byteOffset, y.byteLength), ms);
  }, (err: Error) => process.stderr.write(`run failed: ${err.message}\n`));
}

/** A connection to the peer set up for one variant, its model loaded: `rounds` round trips at a time, timed. */
export interface WireVariantConnection {
  readonly variant: WireVariant;
  /** Wall times (ms) of `rounds` sequential round trips; CPU (s) of this process and of the peer over them. */
  roundTrips(rounds: number): Promise<{ times: number[]; client: number; server: number; clientMain: number; serverMain: number; run: number[]; serverGc: number; clientGc: number }>;
  close(): void;
}

export async function openWireVariant(url: string, peerPid: number, model: Uint8Array, x: Float32Array, v: WireVariant): Promise<WireVariantConnection> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((r) => ws.once('open', r));
  ws.send(JSON.stringify({ model: Buffer.from(model).toString('base64'), input: v.input, cols: x.length, threads: 1, variant: v }));
  await new Promise((r) => ws.once('message', r));
  const one: NamedTensors = { [v.input]: { dtype: 'float32', dims: [1, x.length], data: x } };
  const raw = Buffer.from(x.buffer, x.byteOffset, x.byteLength);
  const reused = Buffer.alloc(v.requestBytes, 0x20);
  reused.set(raw, v.requestDataAt);
  let next = 0;
  const request = (): { frame: Buffer; id: string } => {
    const id = `${v.idPrefix}-${(next++).toString(36)}`;
    switch (v.kind) {
      case 'full': case 'req': case 'hand': return { id, frame: encodeMessageFrame({ type: 'run-inference', request_id: id, data: { model_id: v.modelId } }, encodeNamedTensorsParts(one)) };
      case 'pad': { const f = Buffer.allocUnsafe(v.requestBytes); f.fill(0x20, 0, v.requestDataAt); f.set(raw, v.requestDataAt); return { id, frame: f }; }
      case 'pad-reuse': return { id, frame: reused };
      case 'lean': return { id, frame: leanFrame(id, `{"type":"run-inference","request_id":"${id}","data":{"model_id":"${v.modelId}"}}`, v.input, x) };
      default: return { id, frame: raw };
    }
  };
  const check = (buf: Buffer, id: string): void => {
    let y: Float32Array;
    switch (v.kind) {
      case 'full': case 'reply': {
        const idLength = buf[5]!;
        const jsonBytes = buf.readUInt32LE(12);
        const bodyAt = 16 + pad8(idLength);
        if (buf[0] !== 0x47 || buf[1] !== 0x57 || buf[3] !== 1) throw new Error('not a grid MESSAGE frame');
        const env = JSON.parse(buf.toString('utf8', bodyAt, bodyAt + jsonBytes)) as { request_id?: unknown; data?: { outputs?: unknown } };
        if (env.request_id !== id || buf.toString('utf8', 16, 16 + idLength) !== id || !Array.isArray(env.data?.outputs)) throw new Error('a reply to another request');
        y = firstFloats(decodeNamedTensors(buf.subarray(bodyAt + pad8(jsonBytes)))) ;
        break;
      }
      case 'hand': case 'lean': y = handRead(buf, id).data; break;
      case 'pad': case 'pad-reuse': if (buf.length !== v.replyBytes) throw new Error('reply of the wrong size'); y = floatsAt(buf, v.replyDataAt, (buf.length - v.replyDataAt) / 4); break;
      default: y = floatsAt(buf, 0, buf.length / 4);
    }
    if (y.length !== 10) throw new Error(`${v.kind}: the peer did not answer with 10 outputs`);
  };
  const peerStats = async (): Promise<{ runTimes: number[]; gcMs: number }> => {
    const r = new Promise<Buffer>((resolve) => ws.once('message', (d) => resolve(d as Buffer)));
    ws.send(JSON.stringify({ runTimes: true }));
    return JSON.parse(String(await r)) as { runTimes: number[]; gcMs: number };
  };
  if (v.kind === 'lean') {
    // The hand-written frames are the grid's bytes: the request as encodeMessageFrame makes it, the reply as the peer's encodeReply would.
    const { frame, id } = request();
    const grid = encodeMessageFrame({ type: 'run-inference', request_id: id, data: { model_id: v.modelId } }, encodeNamedTensorsParts(one));
    if (!frame.equals(grid)) throw new Error('lean: the request frame is not the grid\'s');
    const reply = new Promise<Buffer>((r) => ws.once('message', (d) => r(Buffer.from(d as Buffer))));
    ws.send(frame);
    const got = await reply;
    const jsonAt = 16 + pad8(got[5]!);
    const env = JSON.parse(got.toString('utf8', jsonAt, jsonAt + got.readUInt32LE(12))) as { data: { duration_ms: number; outputs: { name: string }[] } };
    const y = handRead(got, id).data;
    if (!got.equals(encodeReply(id, v.modelId, { [env.data.outputs[0]!.name]: { dtype: 'float32', dims: [1, y.length], data: y } }, env.data.duration_ms))) throw new Error('lean: the reply frame is not the grid\'s');
  }
  return {
    variant: v,
    async roundTrips(rounds) {
      const times: number[] = [];
      await peerStats();
      const s0 = cpuSnapshot(peerPid), c0 = cpuSnapshot(process.pid);
      clientGc.total = 0;
      for (let i = 0; i < rounds; i++) {
        const t0 = performance.now();
        const { frame, id } = request();
        const reply = new Promise<Buffer>((r) => ws.once('message', (d) => r(d as Buffer)));
        ws.send(frame);
        check(await reply, id);
        times.push(performance.now() - t0);
      }
      const [s, c] = [cpuSince(s0), cpuSince(c0)];
      const gc = clientGc.total;
      const stats = await peerStats();
      return { times, client: c.total, server: s.total, clientMain: c.main, serverMain: s.main, run: stats.runTimes, serverGc: stats.gcMs / 1000, clientGc: gc / 1000 };
    },
    close() { ws.close(); },
  };
}

/** The variants' geometry from the grid's own request frame (GridClient's, captured) and a reply encoded as the node encodes it. */
export function wireGeometry(request: Buffer, modelId: string, input: string, outputs: NamedTensors): Omit<WireVariant, 'kind'> {
  const idLength = request[5]!;
  const id = request.toString('utf8', 16, 16 + idLength);
  const inputBytes = (firstFloats(decodeNamedTensors(request.subarray(16 + pad8(idLength) + pad8(request.readUInt32LE(12)))))).byteLength;
  const y = firstFloats(outputs);
  const reply = encodeReply(id, modelId, outputs, 0.012345678901234);
  return { modelId, input, idPrefix: id.slice(0, id.lastIndexOf('-')), requestBytes: request.length, requestDataAt: request.length - pad8(inputBytes), replyBytes: reply.length, replyDataAt: reply.length - pad8(y.byteLength) };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * Runs every variant `reps` times, interleaved (each rep in a rotated order), `rounds` round trips each,
 * after a warm-up. Per variant: medians over the reps of its p50 round trip and its CPU per request on
 * each side, and the reps' spread; deltas are paired with the floor of the same rep.
 */
export async function attributeWire(conns: WireVariantConnection[], opts: { reps: number; rounds: number; warmUp: number }): Promise<Map<WireKind, { p50: number[]; server: number[]; client: number[]; serverMain: number[]; clientMain: number[]; run: number[]; serverGc: number[]; clientGc: number[] }>> {
  for (const c of conns) await c.roundTrips(opts.warmUp);
  const res = new Map(conns.map((c) => [c.variant.kind, { p50: [] as number[], server: [] as number[], client: [] as number[], serverMain: [] as number[], clientMain: [] as number[], run: [] as number[], serverGc: [] as number[], clientGc: [] as number[] }]));
  for (let rep = 0; rep < opts.reps; rep++) {
    for (let k = 0; k < conns.length; k++) {
      const c = conns[(k + rep) % conns.length]!;
      const r = await c.roundTrips(opts.rounds);
      const m = res.get(c.variant.kind)!;
      m.p50.push(median(r.times) * 1000);
      m.server.push((r.server / opts.rounds) * 1e6);
      m.client.push((r.client / opts.rounds) * 1e6);
      m.serverMain.push((r.serverMain / opts.rounds) * 1e6);
      m.clientMain.push((r.clientMain / opts.rounds) * 1e6);
      m.run.push(median(r.run) * 1000);
      m.serverGc.push((r.serverGc / opts.rounds) * 1e6);
      m.clientGc.push((r.clientGc / opts.rounds) * 1e6);
    }
  }
  return res;
}

/** "median [min–max]" of per-rep values, and of their paired differences from the floor's. */
export function describe(xs: number[], floor?: number[]): string {
  const d = floor === undefined ? xs : xs.map((x, i) => x - floor[i]!);
  const s = [...d].sort((a, b) => a - b);
  const sign = floor === undefined ? '' : '+';
  return `${sign}${median(d).toFixed(0)} [${s[0]!.toFixed(0)}–${s[s.length - 1]!.toFixed(0)}]`.replace('+-', '−');
}
