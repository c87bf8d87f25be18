// Baseline server for bench/node-inference.ts, in its own process: a raw `ws` endpoint that answers
// each binary frame with a binary frame of a chosen size (the inference round-trip baseline), or sinks
// a bulk transfer and reports its RSS growth (the upload baseline). Prints `listening on ws://…`.

import * as fs from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { rssSampler } from '../rss';
import { loadModel, type ModelHandle } from '../../src/compute/backend';
import { encodeMessageFrame } from '../../src/core/protocol/envelope';
import { decodeNamedTensors, encodeNamedTensorsParts } from '../../src/core/protocol/tensor';
import { gcTime, serveWireVariant, type WireVariant } from '../wire-variants';

const http = createServer();
const rss = rssSampler();
const wss = new WebSocketServer({ server: http, maxPayload: 64 * 1024 * 1024, perMessageDeflate: false });
const runTimes: number[] = [];
const gcMs = gcTime();
wss.on('connection', (ws) => {
  let replyBytes = Buffer.alloc(0);
  let sink: { total: number; received: number } | undefined;
  // The floor of remote inference: each binary frame is a float32 batch for a model loaded here, run by
  // onnxruntime and answered with the output's bytes. No envelope, no checks, no session cache.
  let model: { handle: ModelHandle; input: string; cols: number; protocol: string | undefined; variant: WireVariant | undefined } | undefined;
  // The floor of inference through shared memory: the model as above, its inputs and outputs in a file
  // the client names (`shm`), each binary frame three float64s (input offset, input bytes, output offset),
  // answered with the output's byte count. One reused input buffer, no envelope, no checks.
  let shm: { fd: number; buf: Buffer } | undefined;
  ws.on('message', (data, isBinary) => {
    if (!isBinary) {
      const cmd = JSON.parse(String(data)) as { reply?: number; sink?: number; model?: string; input?: string; cols?: number; shm?: string; threads?: number; runTimes?: boolean; protocol?: string; variant?: WireVariant };
      // The wall time of each onnxruntime run here (the floor's side of "onnxruntime inside the node"), then forgotten.
      if (cmd.runTimes) { ws.send(JSON.stringify({ runTimes, gcMs: gcMs.total })); runTimes.length = 0; gcMs.total = 0; return; }
      if (cmd.shm !== undefined) shm = { fd: fs.openSync(cmd.shm, 'r+'), buf: Buffer.alloc(0) };
      if (cmd.reply !== undefined) { replyBytes = Buffer.alloc(cmd.reply, 7); sink = undefined; model = undefined; }
      if (cmd.sink !== undefined) { sink = { total: cmd.sink, received: 0 }; rss.reset(); }
      if (cmd.model !== undefined) {
        void loadModel(Buffer.from(cmd.model, 'base64'), cmd.threads !== undefined ? { intraOpNumThreads: cmd.threads } : {}).then((handle) => {
          model = { handle, input: cmd.input!, cols: cmd.cols!, protocol: cmd.protocol, variant: cmd.variant };
          sink = undefined;
          ws.send('{"ready":true}');
        });
        return;
      }
      ws.send('{"ready":true}');
      return;
    }
    const buf = data as Buffer;
    if (sink) {
      sink.received += buf.length;
      if (sink.received >= sink.total) ws.send(JSON.stringify({ received: sink.received, ...rss.read() }));
      return;
    }
    if (model && shm) {
      const [m, r] = [model, shm];
      const inAt = buf.readDoubleLE(0), inLen = buf.readDoubleLE(8), outAt = buf.readDoubleLE(16);
      if (r.buf.length < inLen) r.buf = Buffer.allocUnsafeSlow(inLen);
      fs.readSync(r.fd, r.buf, 0, inLen, inAt);
      const x = new Float32Array(r.buf.buffer, 0, inLen / 4);
      void m.handle.run({ [m.input]: { dtype: 'float32', dims: [x.length / m.cols, m.cols], data: x } }).then((out) => {
        const y = Object.values(out)[0]!.data as Float32Array;
        fs.writeSync(r.fd, new Uint8Array(y.buffer, y.byteOffset, y.byteLength), 0, y.byteLength, outAt);
        const reply = Buffer.alloc(8);
        reply.writeDoubleLE(y.byteLength, 0);
        ws.send(reply);
      }, (err: Error) => process.stderr.write(`run failed: ${err.message}\n`));
      return;
    }
    if (model?.variant !== undefined) {
      wireVariant(ws, model.handle, model.variant, buf);
      return;
    }
    if (model?.protocol !== undefined) {
      protocolFloor(ws, model.handle, model.protocol, buf);
      return;
    }
    if (model) {
      const m = model;
      // As the node decodes a tensor: a view of the frame when aligned (measured: no different from a copy).
      const x = buf.byteOffset % 4 === 0 ? new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4) : new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
      const started = performance.now();
      void m.handle.run({ [m.input]: { dtype: 'float32', dims: [x.length / m.cols, m.cols], data: x } }).then((out) => {
        if (runTimes.length < 100_000) runTimes.push(performance.now() - started);
        const y = Object.values(out)[0]!.data as Float32Array;
        ws.send(Buffer.from(y.buffer, y.byteOffset, y.byteLength));
      }, (err: Error) => process.stderr.write(`run failed: ${err.message}\n`));
      return;
    }
    // Touch the request as a server would (it must be read to be used), then answer.
    if (buf.length > 0 && buf[buf.length - 1] === 255) replyBytes[0] = 1;
    ws.send(replyBytes);
  });
});
/**
 * The protocol floor (`protocol`: the model id it answers to): the floor above, speaking the grid's own
 * wire bytes for run-inference. A MESSAGE frame in (header, JSON envelope, named tensors), parsed with
 * JSON.parse and checked minimally, the tensors decoded as views; the reply built as the node builds it
 * (envelope with model_id, version, outputs, duration_ms, and the output tensors in one frame). No
 * schema, no router, no session lookup, no permissions, no metrics: what the wire format itself costs.
 */
function protocolFloor(ws: WebSocket, handle: ModelHandle, modelId: string, buf: Buffer): void {
  if (buf[0] !== 0x47 || buf[1] !== 0x57 || buf[2] !== 1 || buf[3] !== 1) throw new Error('not a grid MESSAGE frame');
  const idLength = buf[5]!;
  const jsonBytes = buf.readUInt32LE(12);
  const bodyAt = 16 + ((idLength + 7) & ~7);
  const env = JSON.parse(buf.toString('utf8', bodyAt, bodyAt + jsonBytes)) as { type?: unknown; request_id?: unknown; data?: { model_id?: unknown } };
  if (env.type !== 'run-inference' || typeof env.request_id !== 'string' || env.data?.model_id !== modelId) throw new Error('not a run-inference request for the floor\'s model');
  const feeds = decodeNamedTensors(buf.subarray(bodyAt + ((jsonBytes + 7) & ~7)), { forSession: true });
  const started = performance.now();
  void handle.run(feeds).then((out) => {
    const ms = performance.now() - started;
    if (runTimes.length < 100_000) runTimes.push(ms);
    const outputs: { name: string; dtype: string; dims: readonly number[] }[] = [];
    for (const name in out) { const t = out[name]!; outputs.push({ name, dtype: t.dtype, dims: t.dims }); }
    ws.send(encodeMessageFrame({ type: env.type as string, data: { model_id: modelId, version: '1', outputs, duration_ms: ms }, request_id: env.request_id as string }, encodeNamedTensorsParts(out)));
  }, (err: Error) => process.stderr.write(`run failed: ${err.message}\n`));
}

/** One of the attribution variants between the floor and the protocol floor (bench/wire-variants.ts). */
function wireVariant(ws: WebSocket, handle: ModelHandle, variant: WireVariant, buf: Buffer): void {
  serveWireVariant(variant, buf, (feeds) => handle.run(feeds), (reply, runMs) => {
    if (runTimes.length < 100_000) runTimes.push(runMs);
    ws.send(reply);
  });
}

http.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening on ws://127.0.0.1:${(http.address() as AddressInfo).port}\n`);
});
process.on('SIGTERM', () => {
  // Connections a failed bench left open must not keep the server alive.
  for (const c of wss.clients) c.terminate();
  wss.close();
  http.close(() => process.exit(0));
});
