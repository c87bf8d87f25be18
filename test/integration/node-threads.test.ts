// onnxruntime's threads per inference on a grid node (GridNodeOptions.intraOpThreads, --intra-op-threads):
// a node sharing its machine with other work asks for fewer. Seen as a user would: the threads the node's
// process runs, from /proc (Linux only). The real node on 127.0.0.1:0 in this process, real onnxruntime.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { mlpModel, seededFloats, startTestNode } from '../helpers/node-fixtures';

const threads = () => fs.readdirSync('/proc/self/task').length;

test('a node started with intraOpThreads runs its inference sessions on that many threads', { skip: !fs.existsSync('/proc/self/task') && 'no /proc' }, async (t) => {
  const n = await startTestNode({ intraOpThreads: 3 });
  t.after(() => n.close());
  const client = await n.admin();
  await client.hostModel(mlpModel(), { id: 'mlp', allowRemoteInference: true });
  const x = { x: { dtype: 'float32' as const, dims: [4, 784], data: seededFloats(4 * 784, 1) } };
  await client.runInference('mlp', x); // the first run loads the session (and starts whatever else runs once)
  const withOne = threads();
  // A second model: its session's pool adds the threads it asked for beyond the calling one.
  await client.hostModel(mlpModel(784, 128, 10, 2), { id: 'mlp2', allowRemoteInference: true });
  await client.runInference('mlp2', x);
  assert.equal(threads() - withOne, 2, 'a session of 3 intra-op threads adds 2 to the calling thread');
});
