// encodeNamedTensorsParts (big inference outputs held for download) must be byte for byte encodeNamedTensors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeNamedTensors, DTYPES, encodeNamedTensors, encodeNamedTensorsParts, type NamedTensors } from '../../src/core/protocol/tensor';
import { sampleTensor } from '../helpers/node-fixtures';

test('the parts of named tensors concatenate to their encoding, for every dtype, scalars and empty tensors', () => {
  const tensors: NamedTensors = {};
  for (const d of DTYPES) tensors[`x_${d}`] = sampleTensor(d, 5);
  tensors.scalar = { dtype: 'float32', dims: [], data: Float32Array.of(1.25) };
  tensors.empty = { dtype: 'int8', dims: [0, 3], data: new Int8Array(0) };
  tensors['naïve name'] = { dtype: 'uint8', dims: [3], data: Uint8Array.of(1, 2, 3) };
  const joined = Buffer.concat(encodeNamedTensorsParts(tensors));
  assert.ok(joined.equals(encodeNamedTensors(tensors)));
  assert.deepEqual(Object.keys(decodeNamedTensors(joined)), Object.keys(tensors));
  assert.ok(Buffer.concat(encodeNamedTensorsParts({})).equals(encodeNamedTensors({})));
});

test('numeric data is not copied into the parts', () => {
  const data = new Float64Array(1024).fill(3);
  const parts = encodeNamedTensorsParts({ y: { dtype: 'float64', dims: [1024], data } });
  assert.ok(parts.some((p) => p.buffer === data.buffer && p.byteLength === data.byteLength));
});

test('names short and long, ASCII or not, encode and decode as UTF-8, in parts as in one buffer', () => {
  const tensors: NamedTensors = {};
  const names = ['x', 'input_ids', 'é', 'naïve name', 'n'.repeat(64), 'n'.repeat(65), `${'n'.repeat(70)}é`, '日本', '\u{1F600}'];
  names.forEach((name, i) => { tensors[name] = { dtype: 'float32', dims: [i + 1], data: new Float32Array(i + 1).fill(i) }; });
  const joined = Buffer.concat(encodeNamedTensorsParts(tensors));
  assert.ok(joined.equals(encodeNamedTensors(tensors)));
  // The oracle for the names: each entry's name bytes are Buffer's UTF-8 encoding, and decode to the same names.
  let p = 8;
  for (const name of names) {
    const len = joined.readUInt16LE(p);
    assert.ok(joined.subarray(p + 2, p + 2 + len).equals(Buffer.from(name, 'utf8')), name);
    p += ((2 + len + 7) & ~7);
    p += 8 + ((joined.readDoubleLE(p) + 7) & ~7);
  }
  assert.deepEqual(Object.keys(decodeNamedTensors(joined)), names);
});

test('a name that is not UTF-8 decodes as Buffer decodes it (replacement characters), short or long', () => {
  for (const raw of [Buffer.from([0x61, 0xff, 0x62]), Buffer.concat([Buffer.alloc(70, 0x61), Buffer.from([0xc3])])]) {
    // Built by hand: no encoder writes a name that is not UTF-8.
    const nameBytes = raw.length;
    const entry = Buffer.alloc(8 + ((2 + nameBytes + 7) & ~7) + 8 + 16);
    entry.writeUInt32LE(1, 0);
    entry.writeUInt16LE(nameBytes, 8);
    raw.copy(entry, 10);
    const at = 8 + ((2 + nameBytes + 7) & ~7);
    entry.writeDoubleLE(9, at);
    entry.writeUInt16LE(0, at + 8 + 2);
    entry[at + 8] = DTYPES.indexOf('uint8');
    entry[at + 16] = 7;
    assert.deepEqual(Object.keys(decodeNamedTensors(entry)), [raw.toString('utf8')]);
  }
});

test('a tensor whose bytes are not a multiple of 8 is padded with zeros before the next, and at the end', () => {
  const tensors: NamedTensors = { a: { dtype: 'uint8', dims: [3], data: Uint8Array.of(255, 255, 255) }, b: { dtype: 'int16', dims: [1], data: Int16Array.of(-1) } };
  const joined = Buffer.concat(encodeNamedTensorsParts(tensors));
  assert.ok(joined.equals(encodeNamedTensors(tensors)));
  assert.equal(joined.length % 8, 0);
  const decoded = decodeNamedTensors(joined);
  assert.deepEqual([...decoded.a!.data as Uint8Array], [255, 255, 255]);
  assert.deepEqual([...decoded.b!.data as Int16Array], [-1]);
});

test('decoded tensors are own properties of a map that inherits nothing, whatever their names, for a user or a session', () => {
  const t = { dtype: 'uint8', dims: [1], data: Uint8Array.of(1) } as const;
  const named: NamedTensors = Object.create(null) as NamedTensors;
  for (const name of ['__proto__', 'constructor', 'x']) named[name] = t;
  for (const forSession of [false, true]) {
    const out = decodeNamedTensors(encodeNamedTensors(named), { forSession });
    assert.deepEqual(Object.keys(out), ['__proto__', 'constructor', 'x']);
    assert.ok(Object.hasOwn(out, '__proto__') && (out['__proto__']!.data as Uint8Array)[0] === 1);
    const plain = decodeNamedTensors(encodeNamedTensors({ x: t }), { forSession });
    for (const inherited of ['constructor', 'toString', 'hasOwnProperty', '__proto__']) assert.equal((plain as Record<string, unknown>)[inherited], undefined, inherited);
    assert.equal('toString' in plain, false);
  }
  // What a user gets (a notebook shows it): a null-prototype map, as before.
  assert.equal(Object.getPrototypeOf(decodeNamedTensors(encodeNamedTensors({ x: t }))), null);
});
