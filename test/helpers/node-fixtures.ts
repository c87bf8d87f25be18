// Models built in code with the compute/onnx codec, and a real grid node in a temp dir, for the node tests.

import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { encodeModel, makeNode, makeValueInfo, ONNX_DTYPE_CODES, tensorToProto } from '../../src/compute/onnx';
import { GraphProtoType, ModelProtoType, TensorProtoType } from '../../src/compute/onnx/schema';
import { DTYPES, type DType, type Tensor } from '../../src/core/protocol/tensor';
import { GridClient } from '../../src/core/client';
import { GridError } from '../../src/core/errors';
import { GridNode, type GridNodeOptions } from '../../src/node/server';
import { testDatabase } from './postgres';
import './check-replies';

export const ADMIN_PASSWORD = 'correct horse battery staple';

/** Deterministic pseudo-random floats in [-0.5, 0.5). */
export function seededFloats(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    out[i] = s / 0x100000000 - 0.5;
  }
  return out;
}

const f32 = (dims: number[], seed: number): Tensor => ({ dtype: 'float32', dims, data: seededFloats(dims.reduce((a, b) => a * b, 1), seed) });

/** MLP in → hidden (Relu) → out, with a symbolic batch dimension. Input "x", output "y". */
export function mlpModel(inDim = 784, hidden = 128, outDim = 10, seed = 1): Uint8Array {
  return encodeModel({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    producerName: 'grid-workbench-tests',
    graph: {
      name: 'mlp',
      node: [
        makeNode('MatMul', ['x', 'w1'], ['h0']),
        makeNode('Add', ['h0', 'b1'], ['h1']),
        makeNode('Relu', ['h1'], ['h2']),
        makeNode('MatMul', ['h2', 'w2'], ['h3']),
        makeNode('Add', ['h3', 'b2'], ['y']),
      ],
      initializer: [
        tensorToProto('w1', f32([inDim, hidden], seed)),
        tensorToProto('b1', f32([hidden], seed + 1)),
        tensorToProto('w2', f32([hidden, outDim], seed + 2)),
        tensorToProto('b2', f32([outDim], seed + 3)),
      ],
      input: [makeValueInfo('x', ONNX_DTYPE_CODES.float32, ['batch', inDim])],
      output: [makeValueInfo('y', ONNX_DTYPE_CODES.float32, ['batch', outDim])],
    },
  });
}

/**
 * One Identity per dtype (in_<dtype> → out_<dtype>, any shape) plus a real computation on two inputs
 * (sum = a + b, float32 [n]), so one model exercises several inputs/outputs and every dtype.
 */
export function dtypesModel(): Uint8Array {
  const nodes = DTYPES.map((d) => makeNode('Identity', [`in_${d}`], [`out_${d}`]));
  nodes.push(makeNode('Add', ['a', 'b'], ['sum']));
  return encodeModel({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'dtypes',
      node: nodes,
      input: [
        ...DTYPES.map((d) => makeValueInfo(`in_${d}`, ONNX_DTYPE_CODES[d], ['n'])),
        makeValueInfo('a', ONNX_DTYPE_CODES.float32, ['n']),
        makeValueInfo('b', ONNX_DTYPE_CODES.float32, ['n']),
      ],
      output: [
        ...DTYPES.map((d) => makeValueInfo(`out_${d}`, ONNX_DTYPE_CODES[d], ['n'])),
        makeValueInfo('sum', ONNX_DTYPE_CODES.float32, ['n']),
      ],
    },
  });
}

/** A tensor of `dtype` with `n` elements whose values differ per element. */
export function sampleTensor(dtype: DType, n: number): Tensor {
  const idx = Array.from({ length: n }, (_, i) => i);
  switch (dtype) {
    case 'string': return { dtype, dims: [n], data: idx.map((i) => `s${i}-ü`) };
    case 'bool': return { dtype, dims: [n], data: Uint8Array.from(idx, (i) => i % 2) };
    case 'int64': return { dtype, dims: [n], data: BigInt64Array.from(idx, (i) => BigInt(i) * 10n ** 15n - 7n) };
    case 'uint64': return { dtype, dims: [n], data: BigUint64Array.from(idx, (i) => 2n ** 63n + BigInt(i)) };
    case 'float16': return { dtype, dims: [n], data: Uint16Array.from(idx, (i) => 0x3c00 + i) };
    case 'float32': return { dtype, dims: [n], data: Float32Array.from(idx, (i) => i / 3) };
    case 'float64': return { dtype, dims: [n], data: Float64Array.from(idx, (i) => i / 7) };
    case 'int8': return { dtype, dims: [n], data: Int8Array.from(idx, (i) => -i) };
    case 'int16': return { dtype, dims: [n], data: Int16Array.from(idx, (i) => -300 * i) };
    case 'int32': return { dtype, dims: [n], data: Int32Array.from(idx, (i) => -70000 * i) };
    case 'uint8': return { dtype, dims: [n], data: Uint8Array.from(idx, (i) => 250 - i) };
    case 'uint16': return { dtype, dims: [n], data: Uint16Array.from(idx, (i) => 65000 + i) };
    case 'uint32': return { dtype, dims: [n], data: Uint32Array.from(idx, (i) => 4e9 + i) };
  }
}

export function tempDir(prefix = 'grid-node-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export interface TestNode {
  node: GridNode;
  dir: string;
  /** A client logged in as admin. */
  admin(): Promise<GridClient>;
  /** A client without a session. */
  anonymous(): Promise<GridClient>;
  close(): Promise<void>;
}

/** A real node on 127.0.0.1, port 0, in a fresh temp dir (removed on close unless `dataDir` was given). */
export async function startTestNode(opts: GridNodeOptions = {}): Promise<TestNode> {
  const dir = opts.dataDir ?? tempDir();
  const node = await GridNode.start({ port: 0, adminPassword: ADMIN_PASSWORD, processMetrics: false, name: 'test-node', ...await testDatabase(dir), ...opts, dataDir: dir });
  const clients: GridClient[] = [];
  const open = async (login: boolean) => {
    const c = await GridClient.connect(node.url, { reconnect: { maxAttempts: 0 }, ...(login && { credentials: { username: 'admin', password: ADMIN_PASSWORD } }) });
    clients.push(c);
    return c;
  };
  return {
    node,
    dir,
    admin: () => open(true),
    anonymous: () => open(false),
    async close() {
      for (const c of clients) c.dispose();
      await node.close();
      if (opts.dataDir === undefined) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

function varint(n: number): Buffer {
  const bytes: number[] = [];
  while (n > 0x7f) { bytes.push((n % 128) | 0x80); n = Math.floor(n / 128); }
  bytes.push(n);
  return Buffer.from(bytes);
}

/**
 * Writes a valid ONNX model (y = Gather(w, i)) whose float32 initializer `w` is `bytes` large, streaming
 * the initializer so the model is never held in memory. Protobuf lets us append the big fields after
 * the encoded small ones: TensorProto.raw_data (9), GraphProto.initializer (5), ModelProto.graph (7).
 */
export function writeBigModel(file: string, bytes: number, cols = 1024): { rows: number; cols: number } {
  const rows = bytes / 4 / cols;
  const header = Buffer.from(TensorProtoType.encode({ name: 'w', dims: [rows, cols], dataType: ONNX_DTYPE_CODES.float32 }).finish());
  const tensorLen = header.length + 1 + varint(bytes).length + bytes;
  const graph = Buffer.from(GraphProtoType.encode({
    name: 'big', node: [makeNode('Gather', ['w', 'i'], ['y'])],
    input: [makeValueInfo('i', ONNX_DTYPE_CODES.int64, [1])],
    output: [makeValueInfo('y', ONNX_DTYPE_CODES.float32, [1, cols])],
  }).finish());
  const graphLen = graph.length + 1 + varint(tensorLen).length + tensorLen;
  const model = Buffer.from(ModelProtoType.encode({ irVersion: 8, opsetImport: [{ domain: '', version: 13 }], producerName: 'grid-bench' }).finish());
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, Buffer.concat([model, Buffer.from([0x3a]), varint(graphLen), graph, Buffer.from([0x2a]), varint(tensorLen), header, Buffer.from([0x4a]), varint(bytes)]));
    const row = new Float32Array(cols);
    const block = Buffer.alloc(4 * 1024 * 1024);
    for (let r = 0, off = 0; r < rows; r++) {
      row.fill(r % 1000); // row r holds the value r mod 1000: checkable after the round trip
      Buffer.from(row.buffer).copy(block, off);
      off += cols * 4;
      if (off === block.length || r === rows - 1) { fs.writeSync(fd, block, 0, off); off = 0; }
    }
  } finally {
    fs.closeSync(fd);
  }
  return { rows, cols };
}

/** The coded error `p` is refused with; fails the test when it resolves or throws anything else. */
export async function failure(p: Promise<unknown>): Promise<GridError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof GridError, `a coded error, got ${String(err)}`);
    return err;
  }
  assert.fail('expected the request to be refused');
}
