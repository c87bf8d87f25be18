// The extension's inference input/output helpers (src/extension/inference.ts has no vscode import):
// JSON inputs as a user types them in an editor, result documents, and image-like outputs as PNG.
import * as assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { PNG } from 'pngjs';
import type { ModelInfo } from '../../src/core/protocol/messages';
import { tensorFromValues } from '../../src/core/protocol/tensor';
import { inputsFromJsonText, renderOutputs } from '../../src/extension/inference';

function model(inputs: ModelInfo['signature']['inputs']): ModelInfo {
  return {
    id: 'm', name: 'm', version: '1', size: 1, sha256: '0', allow_download: false, allow_remote_inference: true, owner: 'admin', created: '',
    signature: { inputs, outputs: [{ name: 'y', dtype: 'float32', dims: [1, 2] }] },
  };
}

const dir = mkdtempSync(join(tmpdir(), 'grid-ext-inference-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('inputsFromJsonText', () => {
  it('takes a one-input model\'s tensor as a bare nested array, dtype from the model', () => {
    const t = inputsFromJsonText(model([{ name: 'x', dtype: 'float32', dims: [1, 2] }]), '[[-1.5, 2]]', 'editor').x!;
    assert.equal(t.dtype, 'float32');
    assert.deepEqual(t.dims, [1, 2]);
    assert.deepEqual(Array.from(t.data as Float32Array), [-1.5, 2]);
  });

  it('takes an object keyed by input names, each a {dtype, dims, data} tensor or an array', () => {
    const m = model([{ name: 'a', dtype: 'int64', dims: [2] }, { name: 'b', dtype: 'float32', dims: [null] }]);
    const feeds = inputsFromJsonText(m, '{"a": [1, 2], "b": {"dtype": "float32", "dims": [3], "data": [0.5, 1, 2]}}', 'editor');
    assert.deepEqual(Array.from(feeds.a!.data as BigInt64Array), [1n, 2n]);
    assert.deepEqual(feeds.b!.dims, [3]);
  });

  it('names the missing input of a two-input model', () => {
    const m = model([{ name: 'a', dtype: 'float32', dims: [1] }, { name: 'b', dtype: 'float32', dims: [1] }]);
    assert.throws(() => inputsFromJsonText(m, '{"a": [1]}', 'editor'), { code: 'GRID_ERR_INVALID_INPUT', message: /no value for input "b"/ });
    assert.throws(() => inputsFromJsonText(m, '[1]', 'editor'), { code: 'GRID_ERR_INVALID_INPUT', message: /object keyed by "a", "b"/ });
  });

  it('rejects text that is not JSON with the place it came from', () => {
    assert.throws(() => inputsFromJsonText(model([{ name: 'x', dtype: 'float32', dims: [1] }]), '[1,', 'input.json'), { code: 'GRID_ERR_INVALID_INPUT', message: /^input\.json is not JSON/ });
  });
});

describe('renderOutputs', () => {
  it('writes the outputs as JSON and an 8x8 digit as a PNG, but not a row of logits', () => {
    const digit = tensorFromValues('float32', [1, 1, 8, 8], Array.from({ length: 64 }, (_, i) => (i % 9 === 0 ? 16 : 0)));
    const logits = tensorFromValues('float32', [1, 10], Array.from({ length: 10 }, (_, i) => i / 10));
    const r = renderOutputs({ image: digit, logits }, { model: 'digits', node: 'Local node', durationMs: 1.4 }, dir);
    const json = JSON.parse(r.json) as { model: string; node: string; outputs: Record<string, { dims: number[]; data: number[] }> };
    assert.equal(json.model, 'digits');
    assert.deepEqual(json.outputs.logits!.dims, [1, 10]);
    assert.equal(json.outputs.image!.data[9], 16);
    assert.equal(r.images.length, 1);
    const png = PNG.sync.read(readFileSync(r.images[0]!));
    assert.equal(png.width, png.height);
    assert.ok(png.width >= 64, `a ${png.width}px image is too small to see`);
    // Pixel (0,0) is the brightest value (16), pixel (0,1) the darkest (0).
    assert.ok(png.data[0]! > png.data[4 * (png.width / 8)]!);
  });
});
