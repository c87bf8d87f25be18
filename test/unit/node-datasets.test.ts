// Dataset registration: schemas read from real files (the bundled UCI sets, CSV variants, .npy, .pb).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DatasetStore, parseDatasetFlag, readSchema } from '../../src/node/datasets';
import { EmbeddedStore } from '../../src/node/store/db';
import { writeNpy } from '../../src/core/npy';
import { tensorFromValues } from '../../src/core/protocol/tensor';
import { encodeTensorProto } from '../../src/compute/onnx';
import { tempDir } from '../helpers/node-fixtures';

const DATA = path.join(__dirname, '../../media/datasets');

function freshDir(t: { after(fn: () => void): void }): string {
  const dir = tempDir('grid-datasets-');
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('the bundled UCI files give their real shapes, label and class names', async () => {
  const iris = await readSchema(path.join(DATA, 'iris.csv'), 'csv');
  assert.equal(iris.rows, 150);
  assert.equal(iris.columns!.length, 5);
  assert.equal(iris.label, 'target');
  assert.deepEqual(iris.classes, ['setosa', 'versicolor', 'virginica']);
  assert.deepEqual(iris.columns!.map((c) => c.dtype), ['float64', 'float64', 'float64', 'float64', 'int64']);
  const cancer = await readSchema(path.join(DATA, 'breast_cancer.csv'), 'csv');
  assert.equal(cancer.rows, 569);
  assert.equal(cancer.columns!.length, 31);
  assert.deepEqual(cancer.classes, ['malignant', 'benign']);
  const digits = await readSchema(path.join(DATA, 'digits.csv.gz'), 'csv', '64');
  assert.equal(digits.rows, 1797, 'gzip is read, and the headerless first line is a row');
  assert.equal(digits.columns!.length, 65);
  assert.equal(digits.label, 'column_64');
  assert.ok(digits.columns!.every((c) => c.dtype === 'int64'));
});

test('CSV with a header line: names from the header, label guessed or named, types widened', async (t) => {
  const dir = freshDir(t);
  const f = path.join(dir, 'h.csv');
  fs.writeFileSync(f, 'height,"name, full",label\n1,"a, b",0\n2.5,c,1\n');
  const s = await readSchema(f, 'csv');
  assert.deepEqual(s.columns, [{ name: 'height', dtype: 'float64' }, { name: 'name, full', dtype: 'string' }, { name: 'label', dtype: 'int64' }]);
  assert.equal(s.rows, 2);
  assert.equal(s.label, 'label');
  assert.equal((await readSchema(f, 'csv', 'height')).label, 'height');
  await assert.rejects(readSchema(f, 'csv', 'nope'), (e: { code: string; message: string }) => e.code === 'GRID_ERR_INVALID_DATASET' && /no column "nope"/.test(e.message));
  fs.writeFileSync(f, 'a,b\n1,2\n3\n');
  await assert.rejects(readSchema(f, 'csv'), /row 3 has 1 fields, expected 2/);
  fs.writeFileSync(f, '');
  await assert.rejects(readSchema(f, 'csv'), /empty/);
});

test('.npy and TensorProto .pb datasets give dtype and shape; a bad file is INVALID_DATASET', async (t) => {
  const dir = freshDir(t);
  const npy = path.join(dir, 'x.npy');
  fs.writeFileSync(npy, writeNpy(tensorFromValues('float32', [3, 2], [1, 2, 3, 4, 5, 6])));
  assert.deepEqual(await readSchema(npy, 'npy'), { rows: 3, dtype: 'float32', dims: [3, 2] });
  fs.writeFileSync(npy, writeNpy(tensorFromValues('float32', [3, 2], [1, 2, 3, 4, 5, 6])).subarray(0, 140));
  await assert.rejects(readSchema(npy, 'npy'), { code: 'GRID_ERR_INVALID_DATASET' });
  const pb = path.join(dir, 'y.pb');
  fs.writeFileSync(pb, encodeTensorProto('labels', tensorFromValues('int64', [4], [0, 1, 1, 0])));
  assert.deepEqual(await readSchema(pb, 'tensor-proto'), { rows: 4, dtype: 'int64', dims: [4] });
  fs.writeFileSync(pb, Buffer.from([0xff, 0xff, 0xff]));
  await assert.rejects(readSchema(pb, 'tensor-proto'), { code: 'GRID_ERR_INVALID_DATASET' });
});

test('the store registers, re-registers on restart, lists and searches by all tags', async (t) => {
  const dir = freshDir(t);
  const db = new EmbeddedStore(path.join(dir, 'meta.db'));
  t.after(() => db.close());
  const store = new DatasetStore(db);
  const first = await store.register({ name: 'iris', path: path.join(DATA, 'iris.csv'), tags: ['UCI', 'tabular'], description: 'flowers' });
  assert.equal(first.added, true);
  assert.deepEqual(first.info.tags, ['uci', 'tabular']);
  const again = await store.register({ name: 'iris', path: path.join(DATA, 'iris.csv'), tags: ['uci', 'tabular', 'flowers'] });
  assert.equal(again.added, false);
  assert.equal(again.info.created, first.info.created);
  await store.register({ name: 'wine', path: path.join(DATA, 'wine_data.csv'), tags: ['uci'] });
  assert.deepEqual((await store.search(['uci'])).map((d) => d.id), ['iris', 'wine']);
  assert.deepEqual((await store.search(['uci', 'flowers'])).map((d) => d.id), ['iris']);
  assert.deepEqual(await store.search(['nothing']), []);
  assert.ok(!('path' in (await store.list())[0]!), 'the file path on the node is not part of what clients see');
  await assert.rejects(store.register({ name: '../x', path: path.join(DATA, 'iris.csv') }), { code: 'GRID_ERR_INVALID_ID' });
  await assert.rejects(store.register({ name: 'x', path: path.join(dir, 'missing.csv') }), { code: 'GRID_ERR_INVALID_DATASET' });
  await assert.rejects(store.register({ name: 'x', path: path.join(DATA, 'README.md') }), /unknown dataset format/);
});

test('--dataset flag syntax, including Windows drive letters and options in any order', () => {
  assert.deepEqual(parseDatasetFlag('iris=data/iris.csv'), { name: 'iris', path: 'data/iris.csv' });
  assert.deepEqual(parseDatasetFlag('d=C:\\data\\d.csv:label=y:tags=a,b:description=My data: v2'),
    { name: 'd', path: 'C:\\data\\d.csv', label: 'y', tags: ['a', 'b'], description: 'My data: v2' });
  assert.deepEqual(parseDatasetFlag('x=/a/b.npy:tags=t'), { name: 'x', path: '/a/b.npy', tags: ['t'] });
  assert.throws(() => parseDatasetFlag('no-equals-sign'), { code: 'GRID_ERR_INVALID_DATASET' });
  assert.throws(() => parseDatasetFlag('x=:tags=a'), /path is empty/);
});
