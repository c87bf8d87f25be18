// FL durability with a real node process: kill -9 mid-cycle, restart on the same data dir. Processes,
// cycles, assignments (request keys) and received reports survive; the cycle continues and closes by
// count, or on time by the timer re-armed at start; nothing is averaged twice.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GridClient } from '../../src/core/client';
import { modelParams } from '../../src/compute/plan/params';
import { FlHostTraining, FlListProcesses } from '../../src/core/protocol/fl-messages';
import { ADMIN_PASSWORD, mlpModel, tempDir } from '../helpers/node-fixtures';
import { startNodeScript, type Started } from '../helpers/processes';
import { base64, decodeState, diffOf, hostProcess, httpBase, smallModel } from '../helpers/fl-fixtures';

const NODE_MAIN = path.join(__dirname, '../../src/node/main.ts');

async function startNode(dir: string): Promise<Started> {
  return startNodeScript(NODE_MAIN, ['--port', '0', '--data-dir', dir, '--log-level', 'warn'], { ...process.env, GRID_ADMIN_PASSWORD: ADMIN_PASSWORD });
}

async function post(base: string, route: string, body: unknown): Promise<Record<string, any>> {
  const res = await fetch(`${base}/model-centric/${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return await res.json() as Record<string, any>;
}

async function join(base: string, name: string): Promise<{ worker_id: string; request_key: string }> {
  const auth = await post(base, 'authenticate', { model_name: name, model_version: '1.0' });
  const cycle = await post(base, 'cycle-request', { worker_id: auth.worker_id, model: name, version: '1.0', ping: 0, download: 0, upload: 0 });
  assert.equal(cycle.status, 'accepted', JSON.stringify(cycle));
  return { worker_id: auth.worker_id, request_key: cycle.request_key };
}

async function checkpoint(base: string, name: string, n: number): Promise<Float32Array[] | undefined> {
  const res = await fetch(`${base}/model-centric/retrieve-model?name=${name}&version=1.0&checkpoint=${n}`);
  if (res.status === 404) return undefined;
  assert.equal(res.status, 200);
  return decodeState(new Uint8Array(await res.arrayBuffer())).map((t) => t.data);
}

/** Asks until checkpoint `n` exists (the node closes the cycle on its own timer); fails after `ms`. */
async function waitForCheckpoint(base: string, name: string, n: number, ms: number): Promise<Float32Array[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const c = await checkpoint(base, name, n);
    if (c !== undefined) return c;
    if (Date.now() > deadline) throw new Error(`checkpoint ${n} of ${name} did not appear within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function near(actual: Float32Array, expected: number[], what: string): void {
  expected.forEach((v, k) => assert.ok(Math.abs(actual[k]! - v) < 1e-6, `${what}[${k}] = ${actual[k]}, expected ${v}`));
}

test('kill -9 mid-cycle: reports and request keys survive, the cycle closes by count after the restart, averaged once', { timeout: 180_000 }, async (t) => {
  const dir = tempDir('grid-fl-restart-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  let node = await startNode(dir);
  t.after(() => node.kill('SIGKILL'));
  const admin = await GridClient.connect(node.url, { credentials: { username: 'admin', password: ADMIN_PASSWORD }, reconnect: { maxAttempts: 0 } });
  await hostProcess(admin, { name: 'durable', server: { max_diffs: 3, cycle_length: 3600, num_cycles: 0 } });
  admin.dispose();
  let base = httpBase(node.url);
  const [a, b, c] = [await join(base, 'durable'), await join(base, 'durable'), await join(base, 'durable')];
  assert.deepEqual(await post(base, 'report', { ...a, diff: diffOf([[1, 1, 1, 1], [1, 1]]) }), { status: 'success' });
  assert.deepEqual(await post(base, 'report', { ...b, diff: diffOf([[2, 2, 2, 2], [2, 2]]) }), { status: 'success' });

  await node.kill('SIGKILL');
  node = await startNode(dir);
  base = httpBase(node.url);
  assert.equal(await checkpoint(base, 'durable', 2), undefined, 'two of three reports: still open after the restart');
  // b's repeat is still known (idempotent), and c's key from before the kill still works.
  assert.deepEqual(await post(base, 'report', { ...b, diff: diffOf([[9, 9, 9, 9], [9, 9]]) }), { status: 'success' });
  assert.deepEqual(await post(base, 'report', { ...c, diff: diffOf([[6, 6, 6, 6], [6, 6]]) }), { status: 'success' });
  const after = await waitForCheckpoint(base, 'durable', 2, 20_000);
  const old = smallModel();
  near(after[0]!, Array.from(old[0]!.data, (v) => v - 3), 'w'); // mean of 1, 2, 6
  near(after[1]!, Array.from(old[1]!.data, (v) => v - 3), 'b');

  // Another kill: the closed cycle is not averaged again; the next cycle takes workers.
  await node.kill('SIGKILL');
  node = await startNode(dir);
  base = httpBase(node.url);
  assert.equal(await checkpoint(base, 'durable', 3), undefined);
  near((await checkpoint(base, 'durable', 2))![1]!, Array.from(old[1]!.data, (v) => v - 3), 'b after a second restart');
  await join(base, 'durable');
});

test('kill -9 mid-cycle: a timed cycle closes on time after the restart, with the reports from before the kill', { timeout: 180_000 }, async (t) => {
  const dir = tempDir('grid-fl-restart-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  let node = await startNode(dir);
  t.after(() => node.kill('SIGKILL'));
  const admin = await GridClient.connect(node.url, { credentials: { username: 'admin', password: ADMIN_PASSWORD }, reconnect: { maxAttempts: 0 } });
  await hostProcess(admin, { name: 'timed', server: { max_diffs: 100, cycle_length: 6, num_cycles: 1 } });
  admin.dispose();
  let base = httpBase(node.url);
  const w = await join(base, 'timed');
  assert.deepEqual(await post(base, 'report', { ...w, diff: diffOf([[4, 4, 4, 4], [4, 4]]) }), { status: 'success' });
  await node.kill('SIGKILL');

  node = await startNode(dir);
  base = httpBase(node.url);
  const after = await waitForCheckpoint(base, 'timed', 2, 30_000);
  near(after[0]!, Array.from(smallModel()[0]!.data, (v) => v - 4), 'w');
  // num_cycles 1: done; a late worker is told so.
  const auth = await post(base, 'authenticate', { model_name: 'timed', model_version: '1.0' });
  const late = await post(base, 'cycle-request', { worker_id: auth.worker_id, model: 'timed', version: '1.0', ping: 0, download: 0, upload: 0 });
  assert.equal(late.status, 'rejected');
  assert.match(late.reason, /is done/);
});

test('kill -9 right after the report that closes a cycle (mid-close): after the restart the cycle is averaged exactly once', { timeout: 240_000 }, async (t) => {
  const dir = tempDir('grid-fl-restart-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  let node = await startNode(dir);
  t.after(() => node.kill('SIGKILL'));
  const admin = await GridClient.connect(node.url, { credentials: { username: 'admin', password: ADMIN_PASSWORD }, reconnect: { maxAttempts: 0 } });
  await hostProcess(admin, { name: 'midclose', server: { max_diffs: 1, num_cycles: 0 } });
  admin.dispose();
  const expected = smallModel().map((p) => Array.from(p.data));
  // Each round: the reply to the closing report comes before the averaging is committed; the kill lands
  // before, during or after it, depending on the machine.
  for (let round = 1; round <= 3; round++) {
    let base = httpBase(node.url);
    const w = await join(base, 'midclose');
    const step = round;
    await post(base, 'report', { ...w, diff: diffOf([[step, step, step, step], [step, step]]) });
    await node.kill('SIGKILL');
    expected.forEach((p) => p.forEach((_, k) => { p[k]! -= step; }));
    node = await startNode(dir);
    base = httpBase(node.url);
    const c = await waitForCheckpoint(base, 'midclose', round + 1, 20_000);
    near(c[0]!, expected[0]!, `w after round ${round}`);
    near(c[1]!, expected[1]!, `b after round ${round}`);
    assert.equal(await checkpoint(base, 'midclose', round + 2), undefined, `round ${round} averaged once`);
  }
});

test('kill -9 around the close of a process hosted from a model: after the restart every checkpoint is one model version, in order, with its parent', { timeout: 240_000 }, async (t) => {
  const dir = tempDir('grid-fl-restart-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  let node = await startNode(dir);
  t.after(() => node.kill('SIGKILL'));
  let admin = await GridClient.connect(node.url, { credentials: { username: 'admin', password: ADMIN_PASSWORD }, reconnect: { maxAttempts: 0 } });
  const onnx = mlpModel(4, 3, 2, 5);
  await admin.hostModel(onnx, { id: 'linked' });
  await admin.socket.request(FlHostTraining, { model_ref: 'linked', client_config: { name: 'linked-fl', version: '1.0' }, server_config: { max_diffs: 1, num_cycles: 0 } });
  admin.dispose();
  const names = Object.keys(modelParams(onnx));
  const shapes = Object.values(modelParams(onnx)).map((p) => [...p.dims]);
  // Checkpoint n committed, as the node lists it (retrieve-model does not serve a process hosted from a
  // model: its checkpoints are the model's versions, under the model's own permissions).
  const committed = async (n: number) => {
    assert.equal((await fetch(`${httpBase(node.url)}/model-centric/retrieve-model?name=linked-fl&checkpoint=1`)).status, 401);
    const c = await GridClient.connect(node.url, { reconnect: { maxAttempts: 0 } });
    try {
      const deadline = Date.now() + 20_000;
      while (!(await c.socket.request(FlListProcesses, {})).processes.find((p) => p.name === 'linked-fl')?.checkpoints.some((k) => k.number === n)) {
        if (Date.now() > deadline) throw new Error(`checkpoint ${n} did not appear`);
        await new Promise((r) => setTimeout(r, 20));
      }
    } finally {
      c.dispose();
    }
  };
  for (let round = 1; round <= 2; round++) {
    const base = httpBase(node.url);
    const w = await join(base, 'linked-fl');
    const diff = base64(shapes.map((dims) => ({ dims, data: new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(0.25) })));
    await post(base, 'report', { ...w, diff });
    // Killed once the checkpoint is committed: storing it as a model version is then still under way (or
    // not started), and only the restart can finish it.
    await committed(round + 1);
    await node.kill('SIGKILL');
    node = await startNode(dir);
  }
  admin = await GridClient.connect(node.url, { credentials: { username: 'admin', password: ADMIN_PASSWORD }, reconnect: { maxAttempts: 0 } });
  t.after(() => admin.dispose());
  const deadline = Date.now() + 30_000;
  let versions: { version: string; parent: string | null }[] = [];
  while (Date.now() < deadline) {
    versions = (await admin.listModels({ allVersions: true })).filter((m) => m.id === 'linked').map((m) => ({ version: m.version, parent: m.parent ?? null }));
    if (versions.length >= 3) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.deepEqual(versions, [{ version: '1', parent: null }, { version: '2', parent: 'linked@1' }, { version: '3', parent: 'linked@2' }]);
  const { bytes } = await admin.downloadModelBytes('linked@3');
  const w1 = modelParams(bytes)[names[0]!]!.data as Float32Array;
  (modelParams(onnx)[names[0]!]!.data as Float32Array).forEach((v, k) => assert.ok(Math.abs(w1[k]! - (v - 0.5)) < 1e-6));
});
