// A report's diff in each form PyGrid-era workers send it, over a real socket to a real node: the node reads
// a long base64 diff from the frame's bytes (src/core/protocol/text-bytes.ts) and must take every form the
// lenient decoder took (url-safe, broken into lines) and refuse what it refused, with the same coded replies.

import { once } from 'node:events';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import type { CycleClosed } from '../../src/node/fl/cycles';
import { startTestNode } from '../helpers/node-fixtures';
import { base64, decodeState, hostProcess, httpBase, PyGridSocket, type StateTensor } from '../helpers/fl-fixtures';

const N = 24_000; // ~128 KB of base64: the envelope's long string, read as bytes

test('a long diff is taken plain, url-safe or in 76-column lines, and refused when not JSON, not base64 or not finite, each with its coded reply', { timeout: 60_000 }, async (t) => {
  const node = await startTestNode();
  const w = await PyGridSocket.open(node.node.url);
  const raw = new WebSocket(node.node.url);
  await once(raw, 'open');
  t.after(async () => { raw.close(); w.close(); await node.close(); });
  const admin = await node.admin();
  const model: StateTensor[] = [{ dims: [200, 120], data: Float32Array.from({ length: N }, (_, i) => (i % 17) * 0.125) }];
  await hostProcess(admin, { name: 'text', model, server: { max_workers: 4, max_diffs: 4, cycle_length: 3600 } });
  const joined = await Promise.all(Array.from({ length: 4 }, async (_, i) => {
    const auth = await w.call('model-centric/authenticate', { model_name: 'text', model_version: '1.0', auth_token: `device-${i}` });
    const cycle = await w.call('model-centric/cycle-request', { worker_id: auth.worker_id, model: 'text', version: '1.0', ping: 0, download: 0, upload: 0 });
    assert.equal(cycle.status, 'accepted');
    return { worker_id: auth.worker_id as string, request_key: cycle.request_key as string };
  }));
  // Values of many bit patterns, so the base64 holds '+' and '/' (which the url-safe form replaces).
  const diffs = joined.map((_, k) => Float32Array.from({ length: N }, (_, i) => Math.sin(i * 1.7 + k) * 0.01));
  const text = (k: number, data = diffs[k]!) => base64([{ dims: [200, 120], data }]);
  const closed = once(node.node.fl.engine, 'cycle-closed').then(([c]) => c as CycleClosed);

  // Refused, and the worker may send again: a raw control character in the string (not JSON), a character
  // outside base64, a NaN. The frame carries no request id, as PyGrid-era workers send it.
  const good = text(3);
  raw.send(JSON.stringify({ type: 'model-centric/report', data: { ...joined[3], diff: `${good.slice(0, 5000)}@@${good.slice(5000)}` } }).replace('@@', '\n'));
  const [frame] = await once(raw, 'message') as [Buffer];
  const notJson = JSON.parse(String(frame)) as { type: string; error: { code: string; message: string } };
  assert.equal(notJson.error.code, 'GRID_ERR_MALFORMED_FRAME');
  assert.match(notJson.error.message, /frame is not JSON/);
  const notBase64 = await w.send('model-centric/report', { ...joined[3], diff: `${good.slice(0, 5000)}!${good.slice(5001)}` });
  assert.deepEqual([(notBase64.error as { code: string }).code, notBase64.data], ['GRID_ERR_INVALID_TENSOR', { status: 'rejected', error: 'the diff is not base64 text' }]);
  const nan = diffs[3]!.slice();
  nan[12_345] = NaN;
  const notFinite = await w.send('model-centric/report', { ...joined[3], diff: text(3, nan) });
  assert.equal((notFinite.error as { code: string }).code, 'GRID_ERR_INVALID_TENSOR');
  assert.match((notFinite.data as { error: string }).error, /tensor 0 holds NaN at index 12345; values must be finite/);

  assert.match(text(1), /\+/);
  const replies = await Promise.all([
    w.call('model-centric/report', { ...joined[0], diff: text(0) }),
    w.call('model-centric/report', { ...joined[1], diff: text(1).replace(/\+/g, '-').replace(/\//g, '_') }),
    w.call('model-centric/report', { ...joined[2], diff: text(2).match(/.{1,76}/g)!.join('\n') }),
    w.call('model-centric/report', { ...joined[3], diff: good }),
  ]);
  for (const r of replies) assert.deepEqual(r, { status: 'success' });
  assert.deepEqual((await closed).reports, 4);

  const res = await fetch(`${httpBase(node.node.url)}/model-centric/retrieve-model?name=text&version=1.0&checkpoint=latest`);
  const after = decodeState(new Uint8Array(await res.arrayBuffer()))[0]!.data;
  for (let i = 0; i < N; i++) {
    const mean = (diffs[0]![i]! + diffs[1]![i]! + diffs[2]![i]! + diffs[3]![i]!) / 4;
    assert.ok(Math.abs(after[i]! - (model[0]!.data[i]! - mean)) < 1e-6, `parameter ${i}: ${after[i]}`);
  }
});

test('a text frame that is not UTF-8 closes its connection with 1007, wherever the bad byte is: in a long diff, around it, in a short frame; the node goes on', { timeout: 60_000 }, async (t) => {
  const node = await startTestNode();
  t.after(() => node.close());
  const diff = base64([{ dims: [200, 120], data: Float32Array.from({ length: N }, (_, i) => Math.sin(i) * 0.01) }]);
  const frame = (data: Record<string, unknown>) => Buffer.from(JSON.stringify({ type: 'model-centric/report', request_id: 'r', data }));
  const long = frame({ worker_id: 'w', request_key: 'k', diff });
  const at = long.indexOf(diff.slice(0, 64));
  const cases: [string, Buffer][] = [];
  for (const [where, pos] of [['in the diff', at + 5000], ['before the diff', at - 20], ['after the diff', at + diff.length + 1]] as const) {
    const b = Buffer.from(long);
    b[pos] = 0xc3; // a lead byte without its continuation
    cases.push([where, b]);
  }
  const short = Buffer.from('{"type":"ping","request_id":"p","data":{"x":"\xff"}}', 'latin1');
  cases.push(['a short frame', short]);
  for (const [where, bytes] of cases) {
    const ws = new WebSocket(node.node.url);
    await once(ws, 'open');
    const replies: string[] = [];
    ws.on('message', (m: Buffer) => replies.push(String(m)));
    // A ping before and after: the one before is answered, nothing after the bad frame is.
    ws.send(JSON.stringify({ type: 'ping', request_id: 'before', data: {} }));
    ws.send(bytes, { binary: false });
    ws.send(JSON.stringify({ type: 'ping', request_id: 'after', data: {} }));
    const [code] = await once(ws, 'close') as [number];
    assert.equal(code, 1007, where);
    assert.deepEqual(replies.map((r) => (JSON.parse(r) as { request_id?: string }).request_id), ['before'], where);
  }
  // The same frame whole is taken (refused for its unknown key, not for its bytes), and the node answers.
  const ws = new WebSocket(node.node.url);
  t.after(() => ws.close());
  await once(ws, 'open');
  ws.send(long, { binary: false });
  const [reply] = await once(ws, 'message') as [Buffer];
  assert.equal((JSON.parse(String(reply)) as { error: { code: string } }).error.code, 'GRID_ERR_FORBIDDEN');
});
