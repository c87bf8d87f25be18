// How values look in a notebook: mime bundles, tensor tables, and image-like tensors as real PNGs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { PNG } from 'pngjs';
import { tensorFromValues, type Tensor } from '../../src/core/protocol/tensor';
import { toMimeBundle } from '../../src/kernel/display';
import { toArray } from '../../src/kernel/grid-api';
import { formatTensorHtml, formatTensorText } from '../../src/kernel/tensor-format';

const text = (s: string | Uint8Array | undefined) => (typeof s === 'string' ? s : assert.fail('expected text'));
const bytes = (s: string | Uint8Array | undefined) => (s instanceof Uint8Array ? s : assert.fail('expected bytes'));

/** The first digits of the UCI set shipped in media/datasets: 64 pixel values 0..16, then the label. */
function digits(count: number): { pixels: number[]; label: number }[] {
  const csv = gunzipSync(readFileSync(join(__dirname, '../../media/datasets/digits.csv.gz'))).toString('utf8');
  return csv.trim().split('\n').slice(0, count).map((line) => {
    const values = line.split(',').map(Number);
    return { pixels: values.slice(0, 64), label: values[64]! };
  });
}

test('a float32 [2, 3] tensor prints as a header over aligned rows', () => {
  const t = tensorFromValues('float32', [2, 3], [1, 2, 3, 4, 5, 6.5]);
  assert.equal(formatTensorText(t), 'float32 [2, 3]\n[[1.0, 2.0, 3.0],\n [4.0, 5.0, 6.5]]');
  const bundle = toMimeBundle(t);
  assert.deepEqual(Object.keys(bundle).sort(), ['text/html', 'text/plain']);
  const html = text(bundle['text/html']);
  assert.match(html, /float32 \[2, 3\]/);
  assert.equal(html.match(/<tr>/g)?.length, 3, 'a header row and two data rows');
  assert.equal(html.match(/<td /g)?.length, 6);
  assert.match(html, />6\.5</);
});

test('a float16 tensor prints its values, not its raw half bits', () => {
  const t = tensorFromValues('float16', [2, 2], [0x3c00, 0xc000, 0x3800, 0x7c00]);
  assert.equal(formatTensorText(t), 'float16 [2, 2]\n[[     1.0,     -2.0],\n [     0.5, Infinity]]');
});

test('integer, bool and int64 tensors print their values exactly', () => {
  assert.equal(formatTensorText(tensorFromValues('int32', [3], [-1, 20, 300])), 'int32 [3]\n[ -1,  20, 300]');
  assert.equal(formatTensorText(tensorFromValues('bool', [2], [true, false])), 'bool [2]\n[ true, false]');
  assert.equal(formatTensorText(tensorFromValues('int64', [2], [2n ** 62n, -1n])), `int64 [2]\n[${2n ** 62n},                  -1]`);
  assert.equal(formatTensorText(tensorFromValues('float64', [], [0.25])), 'float64 []\n0.25');
});

test('a 100x100 tensor is summarised like numpy: edges around an ellipsis, a few lines', () => {
  const t = tensorFromValues('float32', [100, 100], Array.from({ length: 10_000 }, (_, i) => i));
  const out = formatTensorText(t);
  const lines = out.split('\n');
  assert.equal(lines[0], 'float32 [100, 100]');
  assert.ok(lines.length <= 9, `summarised to ${lines.length} lines`);
  assert.match(lines[1]!, /^\[\[\s*0,\s+1,\s+2,\s+\.\.\.,\s+97,\s+98,\s+99\],$/);
  assert.ok(lines.some((l) => l.trim() === '...,'), 'rows elided');
  assert.match(lines.at(-1)!, /9997, 9998, 9999\]\]$/);

  const html = formatTensorHtml(t);
  assert.ok((html.match(/<tr>/g)?.length ?? 0) <= 22, 'html shows at most 20 rows plus header and ellipsis');
  assert.match(html, /⋮/);
  assert.match(html, />9999</);
});

test('a 3-D tensor shows each leading slice', () => {
  const t = tensorFromValues('int8', [2, 2, 2], [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.equal(formatTensorText(t), 'int8 [2, 2, 2]\n[[[1, 2],\n  [3, 4]],\n\n [[5, 6],\n  [7, 8]]]');
  const html = formatTensorHtml(t);
  assert.match(html, /\[0, :, :\]/);
  assert.match(html, /\[1, :, :\]/);
});

test('an 8x8 digit tensor becomes a PNG whose pixels are the digit, stretched by min/max and scaled up', () => {
  const [digit] = digits(1);
  const t = tensorFromValues('float32', [8, 8], digit!.pixels);
  const bundle = toMimeBundle(t);
  assert.deepEqual(Object.keys(bundle).sort(), ['image/png', 'text/plain'], 'no html, so VS Code shows the picture');
  const png = PNG.sync.read(Buffer.from(bytes(bundle['image/png'])));
  assert.equal(png.width, 128);
  assert.equal(png.height, 128);
  const min = Math.min(...digit!.pixels);
  const max = Math.max(...digit!.pixels);
  for (let y = 0; y < 8; y++) {
    for (let x = 0; x < 8; x++) {
      const expected = Math.round(((digit!.pixels[y * 8 + x]! - min) / (max - min)) * 255);
      for (const [dy, dx] of [[0, 0], [15, 15]] as const) {
        const p = ((y * 16 + dy) * 128 + x * 16 + dx) * 4;
        assert.deepEqual([...png.data.subarray(p, p + 4)], [expected, expected, expected, 255], `pixel (${x}, ${y})`);
      }
    }
  }
});

test('a 1x3xHxW tensor becomes an RGB PNG with its channels in place', () => {
  const h = 16;
  const w = 32;
  const values: number[] = [];
  for (let c = 0; c < 3; c++) for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) values.push(c === 0 ? x / (w - 1) : c === 1 ? y / (h - 1) : 0.5);
  const png = PNG.sync.read(Buffer.from(bytes(toMimeBundle(tensorFromValues('float32', [1, 3, h, w], values))['image/png'])));
  assert.equal(png.width, w * 4);
  assert.equal(png.height, h * 4);
  const at = (x: number, y: number) => [...png.data.subarray((y * png.width + x) * 4, (y * png.width + x) * 4 + 3)];
  assert.deepEqual(at(0, 0), [0, 0, 128]);
  assert.deepEqual(at(png.width - 1, png.height - 1), [255, 255, 128]);
});

test('tensors that are not images get no PNG', () => {
  const notImages: Tensor[] = [
    tensorFromValues('float32', [2, 3], [0, 0.1, 0.2, 0.3, 0.4, 0.5]), // too small to be a picture
    tensorFromValues('float32', [8, 8], Array.from({ length: 64 }, (_, i) => i - 10)), // negative values
    tensorFromValues('float32', [2, 8, 8], Array.from({ length: 128 }, () => 1)), // 2 channels
    tensorFromValues('float32', [8, 8], Array.from({ length: 64 }, (_, i) => (i === 3 ? NaN : 1))),
  ];
  for (const t of notImages) assert.equal(toMimeBundle(t)['image/png'], undefined, `[${t.dims.join(', ')}]`);
});

test('plain objects are JSON plus text, strings are text, bundles pass through, an explicit mime wins', () => {
  const obj = toMimeBundle({ model: 'mnist', accuracy: 0.98, layers: [1, 2] });
  assert.deepEqual(JSON.parse(text(obj['application/json'])), { model: 'mnist', accuracy: 0.98, layers: [1, 2] });
  assert.match(text(obj['text/plain']), /model: 'mnist'/);

  assert.deepEqual(toMimeBundle('hello\nworld'), { 'text/plain': 'hello\nworld' });
  assert.deepEqual(toMimeBundle({ 'text/html': '<b>hi</b>', 'text/plain': 'hi' }), { 'text/html': '<b>hi</b>', 'text/plain': 'hi' });
  assert.deepEqual(toMimeBundle({ 'application/vnd.grid.metrics+json': { loss: [1, 0.5] } }), { 'application/vnd.grid.metrics+json': '{"loss":[1,0.5]}' });
  assert.deepEqual(toMimeBundle('# Title', 'text/markdown'), { 'text/markdown': '# Title' });
  assert.deepEqual(toMimeBundle({ a: 1 }, 'application/json'), { 'application/json': '{"a":1}' });

  const cyclic: Record<string, unknown> = { name: 'loop' };
  cyclic.self = cyclic;
  assert.deepEqual(Object.keys(toMimeBundle(cyclic)), ['text/plain'], 'no JSON for what JSON cannot hold');
  assert.deepEqual(Object.keys(toMimeBundle(new Map([[1, 2]]))), ['text/plain']);
  assert.equal(toMimeBundle(42)['text/plain'], '42');
});

test('grid.toArray gives nested arrays in the tensor shape', () => {
  assert.deepEqual(toArray(tensorFromValues('float32', [2, 2], [1, 2, 3, 4.5])), [[1, 2], [3, 4.5]]);
  assert.deepEqual(toArray(tensorFromValues('int64', [3], [1, 2, 3])), [1n, 2n, 3n]);
  assert.deepEqual(toArray(tensorFromValues('bool', [2, 1], [true, false])), [[true], [false]]);
  assert.equal(toArray(tensorFromValues('float32', [], [7])), 7);
  assert.throws(() => toArray({ dtype: 'float32', dims: [3], data: new Float32Array(2) }), { code: 'GRID_ERR_INVALID_TENSOR' });
});
