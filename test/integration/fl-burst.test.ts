// Bursts of FL requests against a real node: requests arriving together are decided and committed together
// (one transaction per event-loop turn), and each is still decided by the rules as if alone. Every frame
// of a burst is written at once on one socket, so the node reads them in one turn; the assertions do not
// depend on how the node happens to split them.

import { once } from 'node:events';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { StateTensor } from '../../src/core/protocol/syft-state';
import type { CycleClosed } from '../../src/node/fl/cycles';
import { startTestNode } from '../helpers/node-fixtures';
import { base64, decodeState, diffOf, hostProcess, httpBase, PyGridSocket, smallModel } from '../helpers/fl-fixtures';

test('a burst of cycle-requests beyond max_workers accepts exactly max_workers; the rest are told the cycle is full', { timeout: 60_000 }, async (t) => {
  const node = await startTestNode();
  const w = await PyGridSocket.open(node.node.url);
  t.after(async () => { w.close(); await node.close(); });
  const admin = await node.admin();
  await hostProcess(admin, { name: 'burst', server: { max_workers: 5, max_diffs: 5, cycle_length: 3600 } });

  // One socket stands for twelve devices: each sends its own token (a socket re-authenticating with the same
  // token is the same worker, limits.ts), which a process without authentication does not check.
  const ids = await Promise.all(Array.from({ length: 12 }, async (_, i) => (await w.call('model-centric/authenticate', { model_name: 'burst', model_version: '1.0', auth_token: `device-${i}` })).worker_id as string));
  assert.equal(new Set(ids).size, 12, 'twelve distinct worker ids from one burst of authenticate');
  const replies = await Promise.all(ids.map((id) => w.call('model-centric/cycle-request', { worker_id: id, model: 'burst', version: '1.0', ping: 0, download: 0, upload: 0 })));

  const accepted = replies.filter((r) => r.status === 'accepted');
  const rejected = replies.filter((r) => r.status === 'rejected');
  assert.equal(accepted.length, 5, JSON.stringify(replies.map((r) => r.status)));
  assert.equal(rejected.length, 7);
  for (const r of rejected) assert.match(r.reason, /cycle is full \(5 of 5 workers\)/);
  assert.equal(new Set(accepted.map((r) => r.request_key)).size, 5);
  const store = node.node.fl.store;
  const cycle = (await store.openCycle((await store.findProcess('burst', '1.0'))!.id))!;
  assert.equal(await store.assignedCount(cycle.id), 5, 'exactly max_workers assignments are stored');
});

test('a burst of reports (each a long base64 diff) is averaged exactly: every diff once, a repeated key not again', { timeout: 60_000 }, async (t) => {
  const node = await startTestNode();
  const w = await PyGridSocket.open(node.node.url);
  t.after(async () => { w.close(); await node.close(); });
  const admin = await node.admin();
  // 24,000 parameters: each report's diff is ~128 KB of base64, one long string in its frame.
  const model: StateTensor[] = [{ dims: [200, 120], data: Float32Array.from({ length: 24_000 }, (_, i) => (i % 17) * 0.125) }];
  await hostProcess(admin, { name: 'many', model, server: { max_workers: 6, max_diffs: 6, cycle_length: 3600 } });

  const joined = await Promise.all(Array.from({ length: 6 }, async (_, i) => {
    const auth = await w.call('model-centric/authenticate', { model_name: 'many', model_version: '1.0', auth_token: `device-${i}` });
    const cycle = await w.call('model-centric/cycle-request', { worker_id: auth.worker_id, model: 'many', version: '1.0', ping: 0, download: 0, upload: 0 });
    assert.equal(cycle.status, 'accepted');
    return { workerId: auth.worker_id as string, key: cycle.request_key as string };
  }));
  const diffs = joined.map((_, k) => Float32Array.from({ length: 24_000 }, (_, i) => ((i + k) % 7) - 3));
  const weights = [1, 2, 3, 4, 5, 6];
  const closed = once(node.node.fl.engine, 'cycle-closed').then(([c]) => c as CycleClosed);
  const report = (k: number) => w.call('model-centric/report', { worker_id: joined[k]!.workerId, request_key: joined[k]!.key, num_samples: weights[k], diff: base64([{ dims: [200, 120], data: diffs[k]! }]) });
  // Worker 0 reports twice in the burst: the first report stands, the second is answered success and not counted.
  const replies = await Promise.all([report(0), report(0), report(1), report(2), report(3), report(4), report(5)]);
  for (const r of replies) assert.deepEqual(r, { status: 'success' });
  const c = await closed;
  assert.deepEqual([c.cycle, c.reports], [1, 6]);

  const res = await fetch(`${httpBase(node.node.url)}/model-centric/retrieve-model?name=many&version=1.0&checkpoint=latest`);
  const after = decodeState(new Uint8Array(await res.arrayBuffer()))[0]!.data;
  const total = weights.reduce((a, b) => a + b, 0);
  for (let i = 0; i < 24_000; i++) {
    let mean = 0;
    for (let k = 0; k < 6; k++) mean += weights[k]! * diffs[k]![i]!;
    const expected = model[0]!.data[i]! - mean / total;
    assert.ok(Math.abs(after[i]! - expected) < 1e-5, `parameter ${i}: ${after[i]}, expected ${expected}`);
  }
});

test('reports refused in a burst (a NaN, the wrong shape) leave the others exact: each diff is averaged as sent, the refused ones not at all', { timeout: 60_000 }, async (t) => {
  // The node decodes each diff into a buffer it reuses once that report is counted or refused: a buffer
  // handed to two reports at once would average one worker's diff in place of another's.
  const node = await startTestNode();
  const w = await PyGridSocket.open(node.node.url);
  t.after(async () => { w.close(); await node.close(); });
  const admin = await node.admin();
  const model: StateTensor[] = [{ dims: [200, 120], data: Float32Array.from({ length: 24_000 }, (_, i) => (i % 11) * 0.25) }];
  await hostProcess(admin, { name: 'refused', model, server: { max_workers: 4, max_diffs: 4, cycle_length: 3600 } });
  const joined = await Promise.all(Array.from({ length: 4 }, async (_, i) => {
    const auth = await w.call('model-centric/authenticate', { model_name: 'refused', model_version: '1.0', auth_token: `device-${i}` });
    const cycle = await w.call('model-centric/cycle-request', { worker_id: auth.worker_id, model: 'refused', version: '1.0', ping: 0, download: 0, upload: 0 });
    assert.equal(cycle.status, 'accepted');
    return { worker_id: auth.worker_id as string, request_key: cycle.request_key as string };
  }));
  const diffs = joined.map((_, k) => Float32Array.from({ length: 24_000 }, (_, i) => ((i * (k + 2)) % 9) - 4));
  const weights = [3, 1, 4, 2];
  const nan = diffs[2]!.slice();
  nan[777] = NaN;
  const closed = once(node.node.fl.engine, 'cycle-closed').then(([c]) => c as CycleClosed);
  const report = (k: number, data = diffs[k]!, dims = [200, 120]) => w.send('model-centric/report', { ...joined[k], num_samples: weights[k], diff: base64([{ dims, data }]) });
  // Refused ones first in the burst, then every worker's good diff: all decoded before the batch runs.
  const replies = await Promise.all([report(2, nan), report(3, diffs[3]!, [120, 200]), report(0), report(1), report(2), report(3)]);
  assert.deepEqual(replies.map((r) => (r.error as { code: string } | undefined)?.code ?? (r.data as { status: string }).status),
    ['GRID_ERR_INVALID_TENSOR', 'GRID_ERR_INVALID_TENSOR', 'success', 'success', 'success', 'success']);
  const c = await closed;
  assert.deepEqual([c.cycle, c.reports], [1, 4]);

  const res = await fetch(`${httpBase(node.node.url)}/model-centric/retrieve-model?name=refused&version=1.0&checkpoint=latest`);
  const after = decodeState(new Uint8Array(await res.arrayBuffer()))[0]!.data;
  const total = weights.reduce((a, b) => a + b, 0);
  for (let i = 0; i < 24_000; i++) {
    let mean = 0;
    for (let k = 0; k < 4; k++) mean += weights[k]! * diffs[k]![i]!;
    const expected = model[0]!.data[i]! - mean / total;
    assert.ok(Math.abs(after[i]! - expected) < 1e-5, `parameter ${i}: ${after[i]}, expected ${expected}`);
  }
});

test('a listener of the engine\'s events that throws after a burst of reports to two processes: both reports are answered and both cycles still average exactly', { timeout: 60_000 }, async (t) => {
  const node = await startTestNode();
  const w = await PyGridSocket.open(node.node.url);
  t.after(async () => { w.close(); await node.close(); });
  const admin = await node.admin();
  const ones = (v: number) => [[v, v, v, v], [v, v]];
  const joined: Record<string, { workerId: string; key: string }[]> = {};
  for (const name of ['left', 'right']) {
    await hostProcess(admin, { name, server: { max_workers: 2, max_diffs: 2, cycle_length: 3600 } });
    joined[name] = [];
    for (let i = 0; i < 2; i++) {
      const auth = await w.call('model-centric/authenticate', { model_name: name, model_version: '1.0', auth_token: `device-${i}` });
      const cycle = await w.call('model-centric/cycle-request', { worker_id: auth.worker_id, model: name, version: '1.0', ping: 0, download: 0, upload: 0 });
      assert.equal(cycle.status, 'accepted');
      joined[name]!.push({ workerId: auth.worker_id as string, key: cycle.request_key as string });
    }
  }
  const report = (name: string, i: number, v: number) => w.call('model-centric/report', { worker_id: joined[name]![i]!.workerId, request_key: joined[name]![i]!.key, diff: diffOf(ones(v)) });

  // A subscriber's bug: the first 'changed' after the burst's commit throws.
  let thrown = 0;
  const faulty = () => { if (thrown++ === 0) throw new Error('a subscriber failed'); };
  node.node.fl.engine.on('changed', faulty);
  const first = await Promise.all([report('left', 0, 1), report('right', 0, 1)]);
  assert.deepEqual(first, [{ status: 'success' }, { status: 'success' }]);
  assert.ok(thrown >= 2, `the other process was still announced (${thrown} 'changed')`);
  node.node.fl.engine.off('changed', faulty);

  // The second reports close both cycles: each averages both of its diffs (1 and 3: old − 2).
  const closed: CycleClosed[] = [];
  const both = new Promise<void>((resolve) => node.node.fl.engine.on('cycle-closed', (c) => { closed.push(c); if (closed.length === 2) resolve(); }));
  assert.deepEqual(await Promise.all([report('left', 1, 3), report('right', 1, 3)]), [{ status: 'success' }, { status: 'success' }]);
  await both;
  for (const name of ['left', 'right']) {
    const res = await fetch(`${httpBase(node.node.url)}/model-centric/retrieve-model?name=${name}&version=1.0&checkpoint=latest`);
    const after = decodeState(new Uint8Array(await res.arrayBuffer()));
    smallModel().forEach((tensor, k) => tensor.data.forEach((v, i) => assert.ok(Math.abs(after[k]!.data[i]! - (v - 2)) < 1e-6, `${name} tensor ${k}[${i}] = ${after[k]!.data[i]}, expected ${v - 2}`)));
  }
});
