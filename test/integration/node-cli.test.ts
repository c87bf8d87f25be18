// The `grid` CLI against a real node: what a person types and what they see (stdout, stderr, exit code).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { runGrid } from '../../src/cli/grid';
import { readNpy, writeNpy } from '../../src/core/npy';
import { encodeTensorProto } from '../../src/compute/onnx';
import { loadModel } from '../../src/compute/backend';
import { DTYPES } from '../../src/core/protocol/tensor';
import { dtypesModel, mlpModel, sampleTensor, seededFloats, startTestNode, tempDir, ADMIN_PASSWORD } from '../helpers/node-fixtures';
import { gridCli } from '../helpers/processes';

async function grid(url: string, args: string[], login = true): Promise<{ code: number; out: string; err: string }> {
  const out = new PassThrough();
  const err = new PassThrough();
  let o = '';
  let e = '';
  out.on('data', (d: Buffer) => { o += d; });
  err.on('data', (d: Buffer) => { e += d; });
  const creds = login ? ['--user', 'admin', '--password', ADMIN_PASSWORD] : [];
  const code = await runGrid(['node', 'grid', '--node', url, ...creds, ...args], out, err);
  return { code, out: o, err: e };
}

test('serve, models, info, download and delete from the CLI', async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const dir = tempDir('grid-cli-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'mnist-mlp.onnx');
  fs.writeFileSync(file, mlpModel());
  const served = await grid(n.node.url, ['serve', file, '--allow-download', '--allow-remote-inference']);
  assert.equal(served.code, 0, served.err);
  assert.match(served.out, /^hosted mnist-mlp@1 \(/);
  assert.equal(served.err, '', 'no progress output when stderr is not a TTY');

  const table = await grid(n.node.url, ['models'], false);
  assert.match(table.out, /^MODEL\s+VERSIONS\s+SIZE\s+DOWNLOAD\s+INFERENCE\s+OWNER\s+CREATED\nmnist-mlp@1\s+1\s+397\.8 KiB\s+yes\s+yes\s+admin\s/);
  const json = await grid(n.node.url, ['--json', 'models'], false);
  assert.equal(JSON.parse(json.out).models[0].id, 'mnist-mlp');
  const info = await grid(n.node.url, ['info', 'mnist-mlp'], false);
  assert.match(info.out, /x: float32 \[batch, 784\]/);

  const dest = path.join(dir, 'copy.onnx');
  const dl = await grid(n.node.url, ['download', 'mnist-mlp', '-o', dest]);
  assert.equal(dl.code, 0, dl.err);
  assert.ok(fs.readFileSync(dest).equals(fs.readFileSync(file)));
  // Into a folder (existing, or named with a trailing slash): <id>.onnx inside it, not EISDIR.
  const intoDir = await grid(n.node.url, ['download', 'mnist-mlp', '-o', dir]);
  assert.equal(intoDir.code, 0, intoDir.err);
  assert.ok(fs.readFileSync(path.join(dir, 'mnist-mlp.onnx')).equals(fs.readFileSync(file)));
  const newDir = await grid(n.node.url, ['download', 'mnist-mlp', '-o', `${path.join(dir, 'out')}/`]);
  assert.equal(newDir.code, 0, newDir.err);
  assert.ok(fs.readFileSync(path.join(dir, 'out', 'mnist-mlp.onnx')).equals(fs.readFileSync(file)));

  const del = await grid(n.node.url, ['delete', 'mnist-mlp']);
  assert.equal(del.code, 0);
  assert.equal(del.out, 'deleted mnist-mlp@1\n');
  assert.equal((await grid(n.node.url, ['models'], false)).out, 'no models\n');
});

test('infer with .npy, .json and .pb inputs, to stdout JSON, OUT.json and DIR/', async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const dir = tempDir('grid-cli-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const c = await n.admin();
  await c.hostModel(mlpModel(4, 8, 3), { id: 'tiny', allowRemoteInference: true });
  const x = seededFloats(8, 7);
  fs.writeFileSync(path.join(dir, 'x.npy'), writeNpy({ dtype: 'float32', dims: [2, 4], data: x }));
  fs.writeFileSync(path.join(dir, 'x.json'), JSON.stringify([[...x.subarray(0, 4)], [...x.subarray(4)]]));
  fs.writeFileSync(path.join(dir, 'x.pb'), encodeTensorProto('x', { dtype: 'float32', dims: [2, 4], data: x }));
  const local = await loadModel(mlpModel(4, 8, 3)).then(async (h) => { const r = await h.run({ x: { dtype: 'float32', dims: [2, 4], data: x } }); await h.dispose(); return r; });
  const expected = [...(local.y!.data as Float32Array)];

  for (const input of ['x.npy', 'x=x.pb']) {
    const r = await grid(n.node.url, ['infer', 'tiny', '--input', path.join(dir, input).replace(`${dir}/x=`, `x=${dir}/`)]);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(JSON.parse(r.out), { y: { dtype: 'float32', dims: [2, 3], data: expected } });
  }
  const viaJson = await grid(n.node.url, ['infer', 'tiny', '-i', path.join(dir, 'x.json'), '-o', path.join(dir, 'out.json')]);
  assert.equal(viaJson.code, 0, viaJson.err);
  // JSON numbers are float64: float32 values written from JSON round-trip to the same float32.
  const written = JSON.parse(fs.readFileSync(path.join(dir, 'out.json'), 'utf8')) as { y: { data: number[] } };
  assert.deepEqual(Float32Array.from(written.y.data), Float32Array.from(expected));
  const toDir = await grid(n.node.url, ['infer', 'tiny', '-i', path.join(dir, 'x.npy'), '-o', `${path.join(dir, 'outs')}/`]);
  assert.equal(toDir.code, 0, toDir.err);
  assert.deepEqual([...(readNpy(fs.readFileSync(path.join(dir, 'outs', 'y.npy'))).data as Float32Array)], expected);
});

test('infer round-trips every dtype through JSON output', async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const dir = tempDir('grid-cli-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const c = await n.admin();
  await c.hostModel(dtypesModel(), { id: 'dtypes', allowRemoteInference: true });
  const args: string[] = [];
  for (const d of DTYPES) {
    const f = path.join(dir, `${d}.npy`);
    fs.writeFileSync(f, writeNpy(sampleTensor(d, 3)));
    args.push('-i', `in_${d}=${f}`);
  }
  fs.writeFileSync(path.join(dir, 'a.json'), '{"dtype": "float32", "dims": [3], "data": [1, 2, 3]}');
  args.push('-i', `a=${path.join(dir, 'a.json')}`, '-i', `b=${path.join(dir, 'a.json')}`);
  const r = await grid(n.node.url, ['infer', 'dtypes', ...args]);
  assert.equal(r.code, 0, r.err);
  const out = JSON.parse(r.out) as Record<string, { dtype: string; data: unknown[] }>;
  assert.deepEqual(out.sum!.data, [2, 4, 6]);
  assert.deepEqual(out.out_int64!.data, [-7, 999999999999993, 1999999999999993]);
  assert.deepEqual(out.out_uint64!.data, ['9223372036854775808', '9223372036854775809', '9223372036854775810']);
  assert.deepEqual(out.out_bool!.data, [false, true, false]);
  assert.deepEqual(out.out_string!.data, ['s0-ü', 's1-ü', 's2-ü']);
  assert.deepEqual(out.out_float16!.data, [1, 1.0009765625, 1.001953125]);
});

test('failures exit non-zero with the coded error on stderr (and as JSON with --json)', async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const c = await n.admin();
  await c.hostModel(mlpModel(4, 4, 2), { id: 'locked' });
  await c.addUser('carol', 'carol-password-1');
  const noLogin = await grid(n.node.url, ['delete', 'locked'], false);
  assert.equal(noLogin.code, 1);
  assert.match(noLogin.err, /^grid: GRID_ERR_UNAUTHENTICATED: .*--user/);
  const forbidden = await grid(n.node.url, ['--user', 'carol', '--password', 'carol-password-1', '--json', 'download', 'locked', '-o', path.join(n.dir, 'x.onnx')], false);
  assert.equal(forbidden.code, 1);
  assert.equal(JSON.parse(forbidden.out).error.code, 'GRID_ERR_FORBIDDEN');
  const bad = await grid(n.node.url, ['--user', 'admin', '--password', 'nope', 'delete', 'locked'], false);
  assert.match(bad.err, /GRID_ERR_BAD_CREDENTIALS/);
  const unreachable = await grid('ws://127.0.0.1:1', ['models'], false);
  assert.equal(unreachable.code, 1);
  assert.match(unreachable.err, /^grid: GRID_ERR_/);
  const noPassword = await grid(n.node.url, ['add-user', 'bob']);
  assert.equal(noPassword.code, 1);
  assert.match(noPassword.err, /GRID_NEW_PASSWORD/);
  const added = await grid(n.node.url, ['add-user', 'bob', '--new-password', 'bob-password-1']);
  assert.equal(added.code, 0, added.err);
  assert.equal(added.out, 'added user bob\n');
  const asBob = await grid(n.node.url, ['--user', 'bob', '--password', 'bob-password-1', '--json', 'id'], false);
  assert.equal(JSON.parse(asBob.out).user, 'bob');
  const usage = await grid(n.node.url, ['infer', 'locked'], false);
  assert.notEqual(usage.code, 0);
  assert.match(usage.err, /--input/);
});

test('the grid process exits 1 on failure and reads GRID_NODE / GRID_USER / GRID_PASSWORD', async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const run = (args: string[], env: Record<string, string>) => gridCli(args, env);
  const ok = await run(['--json', 'id'], { GRID_NODE: n.node.url, GRID_USER: 'admin', GRID_PASSWORD: ADMIN_PASSWORD });
  assert.equal(ok.code, 0, ok.err);
  assert.equal(JSON.parse(ok.out).user, 'admin');
  const fail = await run(['delete', 'nothing-here'], { GRID_NODE: n.node.url, GRID_USER: 'admin', GRID_PASSWORD: ADMIN_PASSWORD });
  assert.equal(fail.code, 1);
  assert.match(fail.err, /GRID_ERR_NOT_FOUND: no model "nothing-here"/);
});
