// Big inference inputs over the socket (issue 18): GridSocket writes each request frame into a buffer it
// reuses from request to request (src/core/socket/frame-pool.ts). Pipelined requests with different
// inputs must each get the outputs of their own inputs, whatever buffer their frame went out in. The real
// node on 127.0.0.1:0, the real GridClient with shared memory off, real onnxruntime.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GridClient } from '../../src/core/client';
import type { NamedTensors } from '../../src/core/protocol/tensor';
import { loadModel } from '../../src/compute/backend';
import { ADMIN_PASSWORD, mlpModel, seededFloats, startTestNode } from '../helpers/node-fixtures';

const batch = (rows: number, seed: number): NamedTensors => ({ x: { dtype: 'float32', dims: [rows, 784], data: seededFloats(rows * 784, seed) } });

test('pipelined batch-256 requests over the socket each get the outputs of their own inputs', async (t) => {
  const n = await startTestNode({ intraOpThreads: 1 });
  t.after(() => n.close());
  const client = await GridClient.connect(n.node.url, { reconnect: { maxAttempts: 0 }, credentials: { username: 'admin', password: ADMIN_PASSWORD }, sharedMemory: { enabled: false } });
  t.after(() => client.dispose());
  const model = mlpModel();
  await client.hostModel(model, { id: 'mlp', allowRemoteInference: true });
  const local = await loadModel(model, { intraOpNumThreads: 1 });
  t.after(() => local.dispose());
  // Rounds of 16 in flight (more than the kernel takes at once, so writes queue): later ones go out in
  // the buffers earlier ones used.
  for (let round = 0; round < 3; round++) {
    const inputs = Array.from({ length: 16 }, (_, i) => batch(256, 100 * round + i + 1));
    const remote = await Promise.all(inputs.map((x) => client.runInference('mlp', x)));
    for (const [i, x] of inputs.entries()) {
      const expected = await local.run(x);
      assert.deepEqual([...(remote[i]!.y!.data as Float32Array)], [...(expected.y!.data as Float32Array)], `round ${round}, request ${i}`);
    }
  }
});
