// ONNX backend conformance through the grid: every case in test/fixtures/onnx-conformance (copied from ../shared) is served to a real
// node and run remotely. Outputs must match the expected ones (floats within rtol 1e-3 / atol 1e-7,
// everything else exactly) and, bit for bit, what the same model gives locally through onnxruntime.
// A case onnxruntime-node cannot load or run, or whose values are not tensors, is skipped with the reason;
// a refusal by the grid's own checks (a coded error not wrapping onnxruntime's) fails the case.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadModel, type ModelHandle } from '../../src/compute/backend';
import { readConformanceCase, type ConformanceCase } from '../../src/compute/onnx';
import { ErrorCodes, GridError } from '../../src/core/errors';
import type { GridClient } from '../../src/core/client';
import type { NamedTensors, Tensor } from '../../src/core/protocol/tensor';
import { halfToFloat } from '../../src/compute/tensor-io';
import { startTestNode, type TestNode } from '../helpers/node-fixtures';

const ROOT = process.env.GRID_CONFORMANCE_DIR ?? path.resolve(__dirname, '../fixtures/onnx-conformance');
const caseDirs = fs.existsSync(ROOT)
  ? ['simple', 'pytorch-operator'].flatMap((suite) => {
    const dir = path.join(ROOT, suite);
    return fs.existsSync(dir) ? fs.readdirSync(dir).sort().map((name) => path.join(dir, name)) : [];
  })
  : [];

let node: TestNode;
let client: GridClient;

before(async () => {
  node = await startTestNode();
  client = await node.admin();
});
after(() => node.close());

function rawBytes(t: Tensor): Buffer {
  if (t.dtype === 'string') return Buffer.from(JSON.stringify(t.data));
  const d = t.data as Uint8Array;
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
}

function numbers(t: Tensor): number[] {
  if (t.dtype === 'float16') return Array.from(t.data as Uint16Array, halfToFloat);
  return Array.from(t.data as Float32Array, Number);
}

function assertMatchesExpected(name: string, actual: Tensor | undefined, expected: Tensor): void {
  assert.ok(actual, `output "${name}" is missing`);
  assert.equal(actual.dtype, expected.dtype, `output "${name}" dtype`);
  assert.deepEqual([...actual.dims], [...expected.dims], `output "${name}" dims`);
  if (actual.dtype === 'float32' || actual.dtype === 'float64' || actual.dtype === 'float16') {
    const a = numbers(actual);
    const e = numbers(expected);
    for (let i = 0; i < e.length; i++) {
      const ok = (Number.isNaN(e[i]!) && Number.isNaN(a[i]!)) || a[i] === e[i] || Math.abs(a[i]! - e[i]!) <= 1e-7 + 1e-3 * Math.abs(e[i]!);
      assert.ok(ok, `output "${name}"[${i}] = ${a[i]}, expected ${e[i]} (rtol 1e-3, atol 1e-7)`);
    }
  } else {
    assert.deepEqual(Array.from(actual.data as ArrayLike<unknown>), Array.from(expected.data as ArrayLike<unknown>), `output "${name}"`);
  }
}

/**
 * The first line of onnxruntime's own message when `err` is onnxruntime refusing: the backend's `code`
 * with onnxruntime's error as its cause. Undefined for the grid's own refusals (the same code raised by
 * our checks, without that cause) and for anything else.
 */
function onnxruntimeRefusal(err: unknown, code: string): string | undefined {
  if (!(err instanceof GridError) || err.code !== code) return undefined;
  if (!(err.cause instanceof Error) || err.cause instanceof GridError) return undefined;
  return err.message.split('\n')[0];
}

function describe(err: unknown): string {
  return err instanceof GridError ? `${err.code}: ${err.message}` : String(err);
}

if (caseDirs.length === 0) {
  test('ONNX conformance cases', (t) => { t.skip(`no cases found at ${ROOT} (set GRID_CONFORMANCE_DIR)`); });
}

for (const dir of caseDirs) {
  const name = `${path.basename(path.dirname(dir))}/${path.basename(dir)}`;
  test(name, async (t) => {
    let c: ConformanceCase;
    try {
      c = await readConformanceCase(dir);
    } catch (err) {
      return t.skip(`the case cannot be read as grid tensors: ${(err as Error).message}`);
    }
    const values = c.dataSets.flatMap((s) => [...s.inputs, ...s.outputs]);
    const notTensor = values.find((v) => v.value.kind !== 'tensor');
    if (notTensor) return t.skip(`"${notTensor.name}" is a ${notTensor.value.kind} value; the grid carries tensors only`);

    let local: ModelHandle;
    try {
      local = await loadModel(c.model);
    } catch (err) {
      const refusal = onnxruntimeRefusal(err, ErrorCodes.INVALID_MODEL);
      if (refusal === undefined) throw new Error(`loading the model failed, and not because onnxruntime refused it: ${describe(err)}`, { cause: err });
      return t.skip(`onnxruntime-node cannot load it: ${refusal}`);
    }
    t.after(() => local.dispose());
    const id = path.basename(dir);
    await client.hostModel(c.model, { id, allowRemoteInference: true });
    t.after(() => client.deleteModel(id));

    for (const [k, set] of c.dataSets.entries()) {
      const feeds: NamedTensors = {};
      for (const i of set.inputs) feeds[i.name] = (i.value as { tensor: Tensor }).tensor;
      let localOut: NamedTensors;
      try {
        localOut = await local.run(feeds);
      } catch (err) {
        const refusal = onnxruntimeRefusal(err, ErrorCodes.INVALID_INPUT);
        if (refusal === undefined) throw new Error(`running data set ${k} locally failed, and not in onnxruntime: ${describe(err)}`, { cause: err });
        return t.skip(`onnxruntime-node cannot run data set ${k}: ${refusal}`);
      }
      const remoteOut = await client.runInference(id, feeds).catch((err: GridError) => {
        throw new Error(`remote run of data set ${k} failed: ${err.code} ${err.message}`);
      });
      for (const o of set.outputs) {
        const expected = (o.value as { tensor: Tensor }).tensor;
        assertMatchesExpected(o.name, remoteOut[o.name], expected);
        assert.ok(rawBytes(remoteOut[o.name]!).equals(rawBytes(localOut[o.name]!)), `output "${o.name}": remote differs from local onnxruntime bit for bit`);
      }
    }
  });
}

// The StringNormalizer cases need only the en_US.UTF-8 locale, which `npm run setup` generates: they must
// load and run here, never be skipped as something onnxruntime cannot do.
const strnormDirs = caseDirs.filter((dir) => path.basename(dir).startsWith('test_strnorm_'));
if (strnormDirs.length > 0) {
  test('the strnorm cases load (their en_US.UTF-8 locale is there), so none of them is skipped', async () => {
    for (const dir of strnormDirs) {
      const c = await readConformanceCase(dir);
      const handle = await loadModel(c.model).catch((err: unknown) => {
        throw new Error(`${path.basename(dir)} does not load; is the en_US.UTF-8 locale missing? npm run setup generates it: ${(err as Error).message.split('\n')[0]}`, { cause: err });
      });
      await handle.dispose();
    }
  });
}
