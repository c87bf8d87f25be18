// The wire formats, from raw bytes: envelopes, binary frames, tensors, the error catalogue, backoff.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ErrorCodes, GridError, isErrorCode } from '../../src/core/errors';
import { allocChunk, checkEnvelope, chunkFrameInto, chunkHeaderBytes, decodeBinaryFrame, encodeChunk, encodeMessageFrame, FrameKind, parseEnvelope } from '../../src/core/protocol/envelope';
import {
  decodeNamedTensors, decodeTensor, DTYPES, encodeNamedTensors, encodeTensor, tensorFromValues, validateTensor, type Tensor,
} from '../../src/core/protocol/tensor';
import { backoffDelay, resolveReconnect } from '../../src/core/socket/backoff';
import { FramePool, POOLED_FRAME_BYTES } from '../../src/core/socket/frame-pool';
import { requestText } from '../../src/core/socket/request-text';
import { defineRequest } from '../../src/core/protocol/catalogue';
import { z } from 'zod';

function throwsCode(fn: () => unknown, code: string, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof GridError, String(err));
    assert.equal(err.code, code);
    if (message) assert.match(err.message, message);
    return true;
  });
}

describe('error catalogue', () => {
  test('every key maps to GRID_ERR_<key>', () => {
    for (const [key, code] of Object.entries(ErrorCodes)) assert.equal(code, `GRID_ERR_${key}`);
  });
  test('a wire error with an unknown code becomes INTERNAL but keeps its message', () => {
    const e = GridError.fromWire({ code: 'SOMETHING_ELSE', message: 'the node said no' });
    assert.equal(e.code, ErrorCodes.INTERNAL);
    assert.equal(e.message, 'the node said no');
    assert.equal(isErrorCode('GRID_ERR_TIMEOUT'), true);
  });
});

describe('envelope', () => {
  test('parses a PyGrid envelope without request_id', () => {
    assert.deepEqual(parseEnvelope('{"type":"get-id","data":{}}'), { type: 'get-id', data: {} });
  });
  test('names what is wrong with a bad envelope', () => {
    throwsCode(() => parseEnvelope('{"type":'), ErrorCodes.MALFORMED_FRAME, /not JSON/);
    throwsCode(() => parseEnvelope('[1,2]'), ErrorCodes.MALFORMED_FRAME, /not a JSON object/);
    throwsCode(() => parseEnvelope('{"data":{}}'), ErrorCodes.MALFORMED_FRAME, /no "type"/);
    throwsCode(() => parseEnvelope('{"type":"x","request_id":7}'), ErrorCodes.MALFORMED_FRAME, /request_id/);
    throwsCode(() => checkEnvelope({ type: 'x', stream: 'maybe' }), ErrorCodes.MALFORMED_FRAME, /stream/);
    throwsCode(() => checkEnvelope({ type: 'x', error: 'nope' }), ErrorCodes.MALFORMED_FRAME, /error/);
  });
});

describe('binary frames', () => {
  test('a chunk round-trips with its id, index and last flag', () => {
    const body = Buffer.from('some model bytes');
    const f = decodeBinaryFrame(encodeChunk('tx-1', 41, body, true));
    assert.equal(f.kind, FrameKind.CHUNK);
    if (f.kind !== FrameKind.CHUNK) return;
    assert.equal(f.id, 'tx-1');
    assert.equal(f.index, 41);
    assert.equal(f.last, true);
    assert.deepEqual(f.body, body);
  });
  test('a frame id is at most 255 bytes of UTF-8, counted in bytes, not characters', () => {
    const fits = `${'é'.repeat(127)}a`; // 255 bytes
    const f = decodeBinaryFrame(encodeChunk(fits, 0, Buffer.from([1]), true));
    assert.equal(f.kind === FrameKind.CHUNK && f.id, fits);
    throwsCode(() => encodeChunk('é'.repeat(128), 0, Buffer.from([1]), true), ErrorCodes.INVALID_MESSAGE, /256 bytes; at most 255/);
    throwsCode(() => encodeMessageFrame({ type: 'x', request_id: 'r'.repeat(256) }, Buffer.alloc(0)), ErrorCodes.INVALID_MESSAGE, /256 bytes/);
  });
  test('a message frame carries its envelope and an 8-aligned attachment', () => {
    const att = Buffer.from([9, 8, 7, 6, 5]);
    const frame = encodeMessageFrame({ type: 'run-inference', request_id: 'r1', data: { model_id: 'm' } }, att);
    const f = decodeBinaryFrame(frame);
    assert.equal(f.kind, FrameKind.MESSAGE);
    if (f.kind !== FrameKind.MESSAGE) return;
    assert.deepEqual({ ...f.message, attachment: undefined }, { type: 'run-inference', request_id: 'r1', data: { model_id: 'm' }, attachment: undefined });
    assert.deepEqual(f.message.attachment, att);
    assert.equal((f.message.attachment!.byteOffset - frame.byteOffset) % 8, 0);
  });
  test('an attachment given in parts makes the same frame as the joined bytes, non-ASCII ids and JSON included', () => {
    const parts = [Buffer.from([1, 2, 3]), new Uint8Array(0), new Uint8Array([250, 251, 252, 253, 254])];
    const env = { type: 'run-inference', request_id: 'r-é1', data: { model_id: 'modèle' } };
    const frame = encodeMessageFrame(env, parts);
    assert.ok(frame.equals(encodeMessageFrame(env, Buffer.concat(parts))));
    const f = decodeBinaryFrame(frame);
    if (f.kind !== FrameKind.MESSAGE) return assert.fail('not a message frame');
    assert.equal(f.message.request_id, 'r-é1');
    assert.deepEqual(f.message.data, { model_id: 'modèle' });
    assert.deepEqual([...f.message.attachment!], [1, 2, 3, 250, 251, 252, 253, 254]);
  });
  test('truncated, foreign and unknown frames are refused with MALFORMED_FRAME', () => {
    throwsCode(() => decodeBinaryFrame(Buffer.alloc(3)), ErrorCodes.MALFORMED_FRAME, /shorter/);
    throwsCode(() => decodeBinaryFrame(Buffer.alloc(32)), ErrorCodes.MALFORMED_FRAME, /magic/);
    const chunk = encodeChunk('id', 0, Buffer.alloc(100), false);
    throwsCode(() => decodeBinaryFrame(chunk.subarray(0, chunk.length - 1)), ErrorCodes.MALFORMED_FRAME, /announces 100 bytes but carries 99/);
    const odd = Buffer.from(chunk);
    odd[3] = 9;
    throwsCode(() => decodeBinaryFrame(odd), ErrorCodes.MALFORMED_FRAME, /kind 9/);
    const v2 = Buffer.from(chunk);
    v2[2] = 2;
    throwsCode(() => decodeBinaryFrame(v2), ErrorCodes.MALFORMED_FRAME, /version 2/);
  });
});

function sample(dtype: (typeof DTYPES)[number]): Tensor {
  const dims = [2, 3];
  switch (dtype) {
    case 'float32': return { dtype, dims, data: Float32Array.from([0, -1.5, 3.25, NaN, Infinity, -0]) };
    case 'float64': return { dtype, dims, data: Float64Array.from([Math.PI, -Number.MAX_VALUE, Number.MIN_VALUE, 1e-300, 0, -1]) };
    case 'float16': return { dtype, dims, data: Uint16Array.from([0x3c00, 0xc000, 0x7bff, 0x0001, 0x7e00, 0x8000]) };
    case 'int8': return { dtype, dims, data: Int8Array.from([-128, 127, 0, 1, -1, 5]) };
    case 'int16': return { dtype, dims, data: Int16Array.from([-32768, 32767, 0, 1, -1, 5]) };
    case 'int32': return { dtype, dims, data: Int32Array.from([-(2 ** 31), 2 ** 31 - 1, 0, 1, -1, 5]) };
    case 'int64': return { dtype, dims, data: BigInt64Array.from([-(2n ** 63n), 2n ** 63n - 1n, 0n, 1n, -1n, 2n ** 53n + 1n]) };
    case 'uint8': return { dtype, dims, data: Uint8Array.from([0, 255, 1, 2, 3, 4]) };
    case 'uint16': return { dtype, dims, data: Uint16Array.from([0, 65535, 1, 2, 3, 4]) };
    case 'uint32': return { dtype, dims, data: Uint32Array.from([0, 2 ** 32 - 1, 1, 2, 3, 4]) };
    case 'uint64': return { dtype, dims, data: BigUint64Array.from([0n, 2n ** 64n - 1n, 1n, 2n, 3n, 4n]) };
    case 'bool': return { dtype, dims, data: Uint8Array.from([1, 0, 0, 1, 1, 0]) };
    case 'string': return { dtype, dims, data: ['', 'grid', 'naïve', '数据', 'a\u0000b', '🙂'] };
  }
}

describe('tensor codec', () => {
  for (const dtype of DTYPES) {
    test(`${dtype} round-trips exactly`, () => {
      const t = sample(dtype);
      const back = decodeTensor(encodeTensor(t));
      assert.equal(back.dtype, dtype);
      assert.deepEqual(back.dims, [2, 3]);
      if (dtype === 'string') assert.deepEqual(back.data, t.data);
      else assert.deepEqual(Buffer.from((back.data as Uint8Array).buffer, (back.data as Uint8Array).byteOffset, (back.data as Uint8Array).byteLength),
        Buffer.from((t.data as Uint8Array).buffer, (t.data as Uint8Array).byteOffset, (t.data as Uint8Array).byteLength));
    });
  }
  test('scalars, empty tensors and many named tensors round-trip', () => {
    const named = {
      scalar: { dtype: 'float32', dims: [], data: Float32Array.from([7]) } as Tensor,
      empty: { dtype: 'int64', dims: [0, 4], data: new BigInt64Array(0) } as Tensor,
      'input:0/ü': sample('string'),
      x: sample('float64'),
    };
    const back = decodeNamedTensors(encodeNamedTensors(named));
    assert.deepEqual(Object.keys(back), Object.keys(named));
    assert.deepEqual(back.scalar!.dims, []);
    assert.equal((back.scalar!.data as Float32Array)[0], 7);
    assert.deepEqual(back.empty!.dims, [0, 4]);
    assert.deepEqual(back['input:0/ü']!.data, named['input:0/ü'].data);
    assert.deepEqual(back.x!.data, named.x.data);
  });
  test('numeric data decodes as a view (no copy) when aligned, and correctly when not', () => {
    const enc = encodeNamedTensors({ x: sample('float64') });
    const aligned = decodeNamedTensors(enc).x!;
    assert.equal((aligned.data as Float64Array).buffer, enc.buffer);
    const shifted = Buffer.alloc(enc.length + 1);
    enc.copy(shifted, 1);
    const misaligned = decodeNamedTensors(shifted.subarray(1)).x!;
    assert.deepEqual(misaligned.data, sample('float64').data);
  });
  test('bad tensors are refused naming what is wrong', () => {
    throwsCode(() => validateTensor({ dtype: 'float32', dims: [2, 2], data: new Float32Array(3) }), ErrorCodes.INVALID_TENSOR, /hold 4 elements but data has 3/);
    throwsCode(() => validateTensor({ dtype: 'float32', dims: [2], data: new Float64Array(2) } as never), ErrorCodes.INVALID_TENSOR, /Float32Array/);
    throwsCode(() => validateTensor({ dtype: 'complex64', dims: [1], data: new Float32Array(1) } as never), ErrorCodes.INVALID_TENSOR, /unknown dtype/);
    throwsCode(() => validateTensor({ dtype: 'int32', dims: [-1], data: new Int32Array(0) }), ErrorCodes.INVALID_TENSOR, /dimension -1/);
    const enc = encodeTensor(sample('int32'));
    throwsCode(() => decodeTensor(enc.subarray(0, enc.length - 2)), ErrorCodes.INVALID_TENSOR, /needs 24 data bytes, got 22/);
    const bad = Buffer.from(enc);
    bad[0] = 77;
    throwsCode(() => decodeTensor(bad), ErrorCodes.INVALID_TENSOR, /dtype code 77/);
    const strings = encodeTensor(sample('string'));
    throwsCode(() => decodeTensor(strings.subarray(0, strings.length - 1)), ErrorCodes.INVALID_TENSOR, /truncated/);
    const named = encodeNamedTensors({ a: sample('uint8') });
    throwsCode(() => decodeNamedTensors(named.subarray(0, 20)), ErrorCodes.INVALID_TENSOR, /"a"|truncated/);
  });
  test('tensorFromValues builds every dtype from plain values', () => {
    assert.deepEqual([...tensorFromValues('int64', [3], [1, '9007199254740993', 3n]).data as BigInt64Array], [1n, 9007199254740993n, 3n]);
    assert.deepEqual([...tensorFromValues('bool', [2], [true, false]).data as Uint8Array], [1, 0]);
    throwsCode(() => tensorFromValues('float32', [2, 2], [1, 2, 3]), ErrorCodes.INVALID_TENSOR, /hold 4 elements but 3 values/);
  });
});

describe('reconnect backoff', () => {
  test('grows by the factor up to the cap, with jitter inside its bounds', () => {
    const o = resolveReconnect({ initialDelayMs: 100, maxDelayMs: 1000, factor: 2, jitter: 0.2 });
    assert.deepEqual([1, 2, 3, 4, 5, 6].map((a) => backoffDelay(a, o, () => 0.5)), [100, 200, 400, 800, 1000, 1000]);
    assert.equal(backoffDelay(3, o, () => 0), 320);
    assert.equal(backoffDelay(3, o, () => 0.999999), 480);
    assert.equal(backoffDelay(10, o, () => 0.999999), 1000, 'never above the cap');
  });
  test('unlimited attempts are allowed; nonsense is a RangeError naming the option', () => {
    assert.equal(resolveReconnect({}).maxAttempts, Infinity);
    assert.throws(() => resolveReconnect({ factor: 0.5 }), /reconnect\.factor/);
    assert.throws(() => resolveReconnect({ initialDelayMs: 10, maxDelayMs: 5 }), /maxDelayMs/);
    assert.throws(() => resolveReconnect({ jitter: 2 }), /jitter/);
  });
});

test('a chunk frame written into a reused buffer decodes like a fresh one, and a too-small buffer is refused', () => {
  const id = 'abcdefghij-transfer';
  const reused = Buffer.alloc(chunkHeaderBytes(id) + 64, 0xee);
  for (const [index, length, last] of [[0, 64, false], [7, 10, true]] as const) {
    const into = chunkFrameInto(reused, id, index, length, last)!;
    into.body.fill(index + 1);
    const fresh = allocChunk(id, index, length, last);
    fresh.body.fill(index + 1);
    assert.deepEqual(into.frame, fresh.frame, `chunk ${index}: the same bytes on the wire`);
    const decoded = decodeBinaryFrame(into.frame);
    assert.equal(decoded.kind, FrameKind.CHUNK);
  }
  assert.equal(chunkFrameInto(reused, id, 1, 65, false), undefined);
});

test('a message frame written into a reused buffer is the same bytes as a fresh one; a too-small buffer is not used', () => {
  const env = { type: 'run-inference', request_id: 'r-7', data: { model_id: 'mlp' } };
  const parts = [Buffer.from([1, 2, 3]), new Uint8Array([4, 5, 6, 7, 8])];
  const fresh = encodeMessageFrame(env, parts);
  const reused = Buffer.alloc(fresh.length + 100, 0xee);
  let asked = 0;
  const frame = encodeMessageFrame(env, parts, (bytes) => { asked = bytes; return reused; });
  assert.equal(asked, fresh.length);
  assert.ok(frame.equals(fresh));
  assert.equal(frame.buffer, reused.buffer, 'written in the given buffer');
  const small = Buffer.alloc(fresh.length - 1);
  const other = encodeMessageFrame(env, parts, () => small);
  assert.ok(other.equals(fresh));
  assert.notEqual(other.buffer, small.buffer);
});

test('the frame pool gives big buffers back for frames of about their size, and keeps few', () => {
  const pool = new FramePool();
  assert.equal(pool.take(POOLED_FRAME_BYTES - 1), undefined, 'small frames come from Node\'s pool');
  const a = pool.take(800_000)!;
  assert.ok(a.length >= 800_000);
  pool.give(a);
  assert.equal(pool.take(800_000), a, 'taken again');
  pool.give(a);
  assert.notEqual(pool.take(200_000), a, 'a buffer over twice the frame is not pinned by it');
  const many = [1, 2, 3, 4, 5].map(() => pool.take(100_000)!);
  for (const b of many) pool.give(b);
  const back = new Set([1, 2, 3, 4, 5].map(() => pool.take(100_000)));
  assert.equal([...back].filter((b) => many.includes(b!)).length, 4, 'at most 4 idle buffers are kept');
  const huge = [1, 2, 3].map(() => pool.take(15 * 1024 * 1024)!);
  for (const b of huge) pool.give(b);
  assert.ok(pool.bytesIdle <= 32 * 1024 * 1024, `at most 32 MiB idle, held ${pool.bytesIdle}`);
  assert.equal(pool.take(64 * 1024 * 1024), undefined, 'frames over 16 MiB are not pooled');
});

describe('request text (the envelope of a request without an attachment)', () => {
  const Echo = defineRequest('echo-"quoted"\u2028', { request: z.unknown(), reply: z.unknown() });
  const datas: unknown[] = [
    undefined, null, 0, -1.5e-7, 'text with "quotes", \\ and \u0000 \ud800', [1, 'two', { three: [] }],
    { n: 1, text: 'model-info request for digits-mlp', nested: { emoji: '🙂', none: undefined, nan: Number.NaN } },
    { at: new Date(0) }, () => 1, { toJSON: () => ({ replaced: true }) },
  ];
  test('is exactly JSON.stringify of the envelope, with a definition or a bare type', () => {
    for (const data of datas) {
      for (const def of [Echo, undefined]) {
        const id = `0a1b2c3d-${(36 ** 3 + datas.indexOf(data)).toString(36)}`;
        const env = data === undefined ? { type: Echo.type, request_id: id } : { type: Echo.type, request_id: id, data };
        // Twice: the second call uses the head kept for the definition.
        for (let k = 0; k < 2; k++) assert.equal(requestText({ def, env, id }), JSON.stringify(env), `data ${String(data)}`);
      }
    }
  });
});

/** A MESSAGE frame as the wire layout says, built by hand: the oracle the encoder's fast paths are held to. */
function messageFrameByHand(env: object, attachment: Buffer): Buffer {
  const pad = (b: Buffer, fill: number) => Buffer.concat([b, Buffer.alloc((8 - (b.length % 8)) % 8, fill)]);
  const id = Buffer.from((env as { request_id?: string }).request_id ?? '', 'utf8');
  const json = Buffer.from(JSON.stringify(env), 'utf8');
  const header = Buffer.alloc(16);
  header.write('GW', 0, 'latin1');
  header[2] = 1; header[3] = 1; header[5] = id.length;
  header.writeUInt32LE(json.length, 12);
  return Buffer.concat([header, pad(id, 0), pad(json, 0x20), attachment]);
}

test('message frames are the wire layout\'s bytes whether the id and JSON are short ASCII, non-ASCII or long', () => {
  const att = Buffer.from([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const envs = [
    { type: 'run-inference', request_id: '3f9a0c1e-1a', data: { model_id: 'mlp' } },
    { type: 'run-inference', request_id: 'réq-1', data: { model_id: 'mlp' } },
    { type: 'run-inference', request_id: 'r-2', data: { model_id: 'modèle', note: '日本 \u{1F600}' } },
    { type: 'run-inference', request_id: 'r-3', data: { model_id: 'm', pad: 'x'.repeat(1100) } },
    { type: 'run-inference', request_id: 'r-4', data: { model_id: 'm', pad: `${'x'.repeat(1100)}é` } },
    { type: 'ping' },
  ];
  for (const env of envs) {
    const expected = messageFrameByHand(env, att);
    assert.ok(encodeMessageFrame(env, att).equals(expected), JSON.stringify(env).slice(0, 60));
    assert.ok(encodeMessageFrame(env, [att.subarray(0, 4), att.subarray(4)], () => Buffer.alloc(expected.length + 16, 0xee)).equals(expected));
    const f = decodeBinaryFrame(expected);
    if (f.kind !== FrameKind.MESSAGE) return assert.fail('not a message frame');
    assert.deepEqual({ ...f.message, attachment: undefined }, { ...env, attachment: undefined });
  }
});
