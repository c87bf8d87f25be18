// Share holder 1 takes party 0's smpc-join even when it comes before the client's smpc-infer of that
// query (they travel on two connections, in no set order: VS Code's Run Inference through party 0 met
// this), and ends the query at once when the connection party 0 leads it on closes. Party 0 is played
// by a client that proves holder 0's node id, so the order is the test's, not the network's.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { encode, share } from '../../src/compute/smpc';
import { GridClient } from '../../src/core/client';
import { ErrorCodes, toGridError } from '../../src/core/errors';
import { SmpcInfer, SmpcJoin } from '../../src/core/protocol/smpc-messages';
import { encryptedModelInfo, inferEncrypted, serveEncrypted } from '../../src/federation/smpc';
import { attest } from '../../src/node/smpc/attest';
import { startTestNode, type TestNode } from '../helpers/node-fixtures';

const MODEL = join(__dirname, '../../media/samples/digits/digits-mlp.onnx');

let holder0: TestNode, holder1: TestNode, provider: TestNode;

before(async () => {
  [holder0, holder1, provider] = await Promise.all([startTestNode({ name: 'holder-0' }), startTestNode({ name: 'holder-1' }), startTestNode({ name: 'provider' })]);
});

after(async () => {
  await Promise.all([holder0?.close(), holder1?.close(), provider?.close()]);
});

test('party 0\'s smpc-join before the client\'s smpc-infer: party 1 waits for the query instead of refusing it', async () => {
  const [c0, c1, cp] = await Promise.all([holder0.admin(), holder1.admin(), provider.admin()]);
  await serveEncrypted(fs.readFileSync(MODEL), {
    id: 'digits', holders: [{ client: c0, url: holder0.node.url }, { client: c1, url: holder1.node.url }], provider: { client: cp, url: provider.node.url },
  });
  const info = await encryptedModelInfo(c1, 'digits');
  const party0 = await GridClient.connect(holder1.node.url, { reconnect: { enabled: false } });
  try {
    await attest(party0.socket, holder0.node.identity, holder1.node.identity.id, 10_000);
    const query = { model_id: 'digits', query_id: randomBytes(16).toString('hex'), batch: 1 };
    const joined = party0.socket.request(SmpcJoin, {
      ...query, pair_tag: info.pair_tag, bundle_id: randomBytes(16).toString('hex'), seed: randomBytes(32).toString('base64url'), open_mask: true,
    }).then((r) => r, toGridError);
    // Requests on one connection are taken in order: once this answers, party 1 has the join.
    await party0.getId();
    const x = share(encode(Float64Array.from({ length: 64 }, (_, i) => i / 64), 'input'));
    const answered = c1.socket.call(SmpcInfer, query, { attachment: new Uint8Array(x[1]!.buffer), timeout: 60_000 }).then(() => undefined, toGridError);
    const j = await joined;
    assert.ok(!('code' in j), `party 1 refused the early join: ${'code' in j ? `${j.code}: ${j.message}` : ''}`);
    assert.equal(j.query_id, query.query_id);
    // Party 0 now goes away mid-query: party 1 answers its client at once, with a coded error.
    party0.dispose();
    const e = await answered;
    assert.equal(e?.code, ErrorCodes.SMPC_ABORTED);
    assert.match(e.message, /share holder 0 \(ws:\/\/127\.0\.0\.1:\d+\) disconnected mid-query; no output/);
    // The holders still answer a whole query.
    const y = await inferEncrypted('digits', { dtype: 'float32', dims: [1, 64], data: new Float32Array(64).fill(0.5) }, { holders: [c0, c1] });
    assert.deepEqual(y.dims, [1, 10]);
  } finally {
    party0.dispose();
  }
});
