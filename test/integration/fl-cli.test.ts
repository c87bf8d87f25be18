// `grid fl` as a person runs it, a real child process per command against a real node: host an FL process
// from an ONNX file, two workers join it with local digits data (a CSV and an .npy pair), status shows
// the cycle, and checkpoint downloads the averaged model; a worker turned away exits 3 with the reason.

import { once } from 'node:events';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readCsvDataset, shuffledIndices, takeRows } from '../../src/compute/data';
import { mlp } from '../../src/compute/plan';
import { evaluateModel } from '../../src/compute/train';
import { FlWorker } from '../../src/core/fl-worker';
import { writeNpy } from '../../src/core/npy';
import { flParams } from '../../src/federation';
import { ADMIN_PASSWORD, startTestNode, tempDir } from '../helpers/node-fixtures';
import { DIGITS, writeCsv } from '../helpers/training-fixtures';
import { gridCli } from '../helpers/processes';
import { hostProcess, serverLrPlan } from '../helpers/fl-fixtures';

/** The grid CLI from source, its env first as this file's calls give it. */
const gridCliIn = (env: Record<string, string>, args: string[]) => gridCli(args, env);

test('grid fl: host → join (CSV) → status → join (.npy) → status → checkpoint, and a rejected join exits 3 with the reason', { timeout: 300_000 }, async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const dir = tempDir('grid-fl-cli-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  // A runtime dir of its own: no local node of the machine's user answers for the test's node.
  const anonymous = { GRID_NODE: n.node.url, GRID_RUNTIME_DIR: dir };
  const admin = { ...anonymous, GRID_USER: 'admin', GRID_PASSWORD: ADMIN_PASSWORD };

  const all = await readCsvDataset(DIGITS);
  const order = shuffledIndices(all.features.dims[0]!, 11);
  const a = takeRows(all, order.subarray(0, 900));
  const b = takeRows(all, order.subarray(900, 1500));
  const csv = writeCsv(a, path.join(dir, 'a.csv'));
  fs.writeFileSync(path.join(dir, 'b-x.npy'), writeNpy(b.features));
  fs.writeFileSync(path.join(dir, 'b-y.npy'), writeNpy(b.labels));
  const modelFile = path.join(dir, 'digits.onnx');
  const model = mlp([64, 16, 10], { seed: 2 });
  fs.writeFileSync(modelFile, model);
  fs.writeFileSync(path.join(dir, 'client.json'), JSON.stringify({ batch_size: 32, lr: 0.3, epochs: 2 }));

  const refused = await gridCliIn(anonymous, ['fl', 'host', modelFile, '--name', 'digits', '--version', '1.0', '--server-config', '{"max_diffs": 2}']);
  assert.equal(refused.code, 1);
  assert.match(refused.err, /GRID_ERR_UNAUTHENTICATED/);

  const hosted = await gridCliIn(admin, ['--json', 'fl', 'host', modelFile, '--name', 'digits', '--version', '1.0',
    '--server-config', '{"max_diffs": 2, "num_cycles": 3, "cycle_length": 3600}', '--client-config', path.join(dir, 'client.json')]);
  assert.equal(hosted.code, 0, hosted.err);
  const h = JSON.parse(hosted.out);
  assert.equal(h.status, 'success');
  assert.equal(h.name, 'digits');

  const joinA = await gridCliIn(anonymous, ['--json', 'fl', 'join', 'digits@1.0', '--data', csv, '--feature-scale', '0.0625']);
  assert.equal(joinA.code, 0, joinA.err);
  const ja = JSON.parse(joinA.out);
  assert.equal(ja.status, 'reported');
  assert.equal(ja.num_samples, 900);
  assert.equal(ja.steps, 2 * Math.ceil(900 / 32), 'client_config epochs 2, batch_size 32');
  assert.ok(ja.seconds > 0, `seconds ${ja.seconds}`);

  const mid = JSON.parse((await gridCliIn(anonymous, ['--json', 'fl', 'status', 'digits'])).out);
  assert.equal(mid.processes.length, 1);
  assert.deepEqual({ ...mid.processes[0].cycle, start: 0, end: 0 }, { sequence: 1, assigned: 1, reported: 1, start: 0, end: 0 });
  assert.equal(mid.processes[0].checkpoints.length, 1);

  const closed = once(n.node.fl.engine, 'cycle-closed');
  const joinStarted = performance.now();
  const joinB = await gridCliIn(anonymous, ['fl', 'join', 'digits', '--version', '1.0', '--data', path.join(dir, 'b-x.npy'), '--labels', path.join(dir, 'b-y.npy'), '--feature-scale', '0.0625']);
  const joinSeconds = (performance.now() - joinStarted) / 1000;
  assert.equal(joinB.code, 0, joinB.err);
  const line = /^reported to digits@1\.0: 600 samples, 38 updates in ([\d.]+) s, loss [\d.]+, accuracy [\d.]+%\n$/.exec(joinB.out);
  assert.ok(line, joinB.out);
  // The time it took, not "0.0 s": more than nothing, and no more than the command's own run.
  assert.ok(Number(line[1]) > 0 && Number(line[1]) <= joinSeconds, `printed ${line[1]} s; the command ran ${joinSeconds.toFixed(2)} s`);
  await closed;

  const table = await gridCliIn(anonymous, ['fl', 'status']);
  assert.equal(table.code, 0, table.err);
  assert.match(table.out, /^PROCESS\s+FORMAT\s+AVERAGING\s+CYCLE\s+ASSIGNED\s+REPORTED\s+ENDS\s+CHECKPOINT\s+WORKERS\s+OWNER\ndigits@1\.0\s+onnx\s+fedavg\s+2\/3\s+0\s+0\s+\S+\s+2\s+2\s+admin\n$/);

  const out = path.join(dir, 'latest.onnx');
  // Checkpoints are the process owner's (or an admin's) to download.
  const notYours = await gridCliIn(anonymous, ['fl', 'checkpoint', 'digits@1.0', '-o', out]);
  assert.equal(notYours.code, 1);
  assert.match(notYours.err, /GRID_ERR_UNAUTHENTICATED/);
  const ck = await gridCliIn(admin, ['--json', 'fl', 'checkpoint', 'digits@1.0', '-o', out]);
  assert.equal(ck.code, 0, ck.err);
  assert.equal(JSON.parse(ck.out).checkpoint, 2);
  const latest = fs.readFileSync(out);
  assert.deepEqual(flParams(latest).map((p) => p.name), flParams(model).map((p) => p.name));
  // The averaged model learnt from both workers' data.
  const scaled = await readCsvDataset(DIGITS, { featureScale: 1 / 16 });
  const before = await evaluateModel(model, scaled, { loss: 'cross_entropy', loadOptions: { intraOpNumThreads: 1 } });
  const after = await evaluateModel(latest, scaled, { loss: 'cross_entropy', loadOptions: { intraOpNumThreads: 1 } });
  t.diagnostic(`digits accuracy ${(before.accuracy * 100).toFixed(1)}% → ${(after.accuracy * 100).toFixed(1)}% after one CLI cycle`);
  assert.ok(after.accuracy > before.accuracy + 0.3, `accuracy ${before.accuracy} → ${after.accuracy}`);
  const first = await gridCliIn(admin, ['fl', 'checkpoint', 'digits', '--number', '1', '-o', path.join(dir, 'first.onnx')]);
  assert.equal(first.code, 0, first.err);
  assert.match(first.out, /^wrote checkpoint 1 of digits@1\.0 to .*first\.onnx \(\d+ bytes, onnx, sha256 verified\)\n$/);
  assert.deepEqual(fs.readFileSync(path.join(dir, 'first.onnx')), Buffer.from(model));

  // A full cycle turns a CLI worker away: exit 3, the node's reason and the time until the cycle ends.
  await gridCliIn(admin, ['fl', 'host', modelFile, '--name', 'small', '--version', '1', '--server-config', '{"max_workers": 1, "max_diffs": 1, "cycle_length": 600}']);
  const holder = await FlWorker.connect(n.node.url);
  t.after(() => holder.dispose());
  assert.equal((await holder.newJob({ modelName: 'small', modelVersion: '1' }).start()).status, 'accepted');
  const turnedAway = await gridCliIn(anonymous, ['fl', 'join', 'small@1', '--data', csv, '--feature-scale', '0.0625']);
  assert.equal(turnedAway.code, 3, turnedAway.err);
  assert.match(turnedAway.out, /^rejected by small@1: the cycle is full \(1 of 1 workers\); the cycle ends in 0:(09|10):\d\d/);

  const missing = await gridCliIn(anonymous, ['--json', 'fl', 'join', 'nothing@1', '--data', csv]);
  assert.equal(missing.code, 1);
  assert.equal(JSON.parse(missing.out).error.code, 'GRID_ERR_NOT_FOUND');
  assert.match(missing.err, /Not found any process related with this cycle and worker ID\./);

  // A process hosted by a PyGrid client (a syft-proto State) has nothing this worker can train: it says so before taking a place.
  await hostProcess(await n.admin(), { name: 'pysyft', version: '1', server: { max_diffs: 1 } });
  const state = await gridCliIn(anonymous, ['--json', 'fl', 'join', 'pysyft@1', '--data', csv]);
  assert.equal(state.code, 1);
  assert.equal(JSON.parse(state.out).error.code, 'GRID_ERR_FL_NOT_TRAINABLE');
  assert.match(state.err, /FL process pysyft@1 has no ONNX training plan for this worker: it was hosted with a syft-proto State model/);
  assert.equal(await n.node.fl.store.workerCount((await n.node.fl.store.findProcess('pysyft', '1'))!.id), 0, 'the worker never authenticated');
});

test('grid fl join --cycles 2 --wait: two workers stay in the process, each reports both cycles, and the process ends with three checkpoints', { timeout: 300_000 }, async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const dir = tempDir('grid-fl-cli-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const anonymous = { GRID_NODE: n.node.url, GRID_RUNTIME_DIR: dir };
  const admin = { ...anonymous, GRID_USER: 'admin', GRID_PASSWORD: ADMIN_PASSWORD };
  const all = await readCsvDataset(DIGITS);
  const order = shuffledIndices(all.features.dims[0]!, 5);
  const files = [writeCsv(takeRows(all, order.subarray(0, 400)), path.join(dir, 'a.csv')), writeCsv(takeRows(all, order.subarray(400, 800)), path.join(dir, 'b.csv'))];
  fs.writeFileSync(path.join(dir, 'm.onnx'), mlp([64, 10], { seed: 4 }));
  const hosted = await gridCliIn(admin, ['fl', 'host', path.join(dir, 'm.onnx'), '--name', 'digits', '--version', '2', '--server-config', '{"max_diffs": 2, "num_cycles": 2}', '--client-config', '{"batch_size": 50, "lr": 0.3}']);
  assert.equal(hosted.code, 0, hosted.err);

  // From a model hosted on the node: the process trains it, and each checkpoint becomes its next version.
  const served = await gridCliIn(admin, ['serve', path.join(dir, 'm.onnx'), '--id', 'digits-mlp']);
  assert.equal(served.code, 0, served.err);
  const linked = await gridCliIn(admin, ['fl', 'host', 'digits-mlp@1', '--name', 'linked', '--version', '1', '--server-config', '{"max_diffs": 1}', '--client-config', '{"max_updates": 1, "batch_size": 50}']);
  assert.equal(linked.code, 0, linked.err);
  assert.match(linked.out, /^hosted FL process linked@1 \(id \d+\) from the hosted model digits-mlp@1;/);
  // One update takes a millisecond; deriving the plan and loading it take the time a person waits for.
  const oneStarted = performance.now();
  const one = await gridCliIn(anonymous, ['fl', 'join', 'linked@1', '--data', files[0]!, '--feature-scale', '0.0625']);
  const oneSeconds = (performance.now() - oneStarted) / 1000;
  assert.equal(one.code, 0, one.err);
  const oneLine = /^reported to linked@1: \d+ samples, 1 updates in ([\d.]+) s,/.exec(one.out);
  assert.ok(oneLine, one.out);
  assert.ok(Number(oneLine[1]) > 0 && Number(oneLine[1]) <= oneSeconds, `printed ${oneLine[1]} s; the command ran ${oneSeconds.toFixed(2)} s`);
  const missingModel = await gridCliIn(admin, ['fl', 'host', 'no-such-model', '--name', 'x', '--version', '1', '--server-config', '{"max_diffs": 1}']);
  assert.equal(missingModel.code, 1);
  assert.match(missingModel.err, /GRID_ERR_NOT_FOUND/);

  const runs = await Promise.all(files.map((f) => gridCliIn(anonymous, ['--json', 'fl', 'join', 'digits@2', '--data', f, '--feature-scale', '0.0625', '--cycles', '2', '--wait', '120'])));
  for (const r of runs) {
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out);
    assert.equal(j.status, 'reported');
    assert.equal(j.cycles.length, 2);
    assert.equal(j.cycles[0].worker_id, j.cycles[1].worker_id, 'one worker id across its cycles');
    assert.deepEqual(j.cycles.map((c: { num_samples: number }) => c.num_samples), [400, 400]);
  }
  const status = JSON.parse((await gridCliIn(anonymous, ['--json', 'fl', 'status', 'digits@2'])).out);
  const p = status.processes[0];
  assert.equal(p.cycle, null, 'the process is done');
  assert.equal(p.completed_cycles, 2);
  assert.deepEqual(p.checkpoints.map((c: { number: number; reports: number }) => [c.number, c.reports]), [[1, 0], [2, 2], [3, 2]]);
});

test('grid fl host --averaging-plan: the node runs the host\'s plan at the cycle close (a server learning rate of 0 keeps the model as it was, though a worker reported); a plan that does not fit is refused naming the mismatch', { timeout: 300_000 }, async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const dir = tempDir('grid-fl-cli-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const anonymous = { GRID_NODE: n.node.url, GRID_RUNTIME_DIR: dir };
  const admin = { ...anonymous, GRID_USER: 'admin', GRID_PASSWORD: ADMIN_PASSWORD };
  const all = await readCsvDataset(DIGITS);
  const csv = writeCsv(takeRows(all, shuffledIndices(all.features.dims[0]!, 3).subarray(0, 300)), path.join(dir, 'a.csv'));
  const model = mlp([64, 16, 10], { seed: 5 });
  const modelFile = path.join(dir, 'digits.onnx');
  fs.writeFileSync(modelFile, model);
  const params = flParams(model).map((p) => ({ name: p.name, dims: p.tensor.dims }));
  fs.writeFileSync(path.join(dir, 'frozen.onnx'), serverLrPlan(params, 0));
  fs.writeFileSync(path.join(dir, 'short.onnx'), serverLrPlan(params.slice(0, -1), 0));
  const server = ['--server-config', '{"max_diffs": 1, "num_cycles": 1}'];

  const bad = await gridCliIn(admin, ['fl', 'host', modelFile, '--name', 'bad', '--version', '1', ...server, '--averaging-plan', path.join(dir, 'short.onnx')]);
  assert.equal(bad.code, 1);
  assert.match(bad.err, /GRID_ERR_INVALID_AVERAGING_PLAN/);
  assert.match(bad.err, new RegExp(`averaging_plan: no output for parameter "${params.at(-1)!.name}"`));

  const hosted = await gridCliIn(admin, ['fl', 'host', modelFile, '--name', 'frozen', '--version', '1', ...server, '--averaging-plan', path.join(dir, 'frozen.onnx'), '--client-config', '{"lr": 0.5}']);
  assert.equal(hosted.code, 0, hosted.err);
  const status = await gridCliIn(anonymous, ['fl', 'status', 'frozen@1']);
  assert.match(status.out, /\nfrozen@1\s+onnx\s+plan\s+1\/1\s/, 'status names the averaging plan the process runs');
  const closed = once(n.node.fl.engine, 'cycle-closed');
  const join = await gridCliIn(anonymous, ['--json', 'fl', 'join', 'frozen@1', '--data', csv, '--feature-scale', '0.0625']);
  assert.equal(join.code, 0, join.err);
  assert.equal(JSON.parse(join.out).status, 'reported');
  await closed;
  const out = path.join(dir, 'checkpoint.onnx');
  const ck = await gridCliIn(admin, ['--json', 'fl', 'checkpoint', 'frozen@1', '-o', out]);
  assert.equal(ck.code, 0, ck.err);
  assert.equal(JSON.parse(ck.out).checkpoint, 2);
  // Checkpoint 2 has the model's parameters exactly: old − 0 · mean(diff). FedAvg would have moved them.
  assert.deepEqual(flParams(fs.readFileSync(out)).map((p) => Array.from(p.tensor.data)), flParams(model).map((p) => Array.from(p.tensor.data)));
});
