// redactPaths: no server path survives in a message a client sees; what is not a path is left alone.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GridError, gridError } from '../../src/core/errors';
import { REDACTED_PATH, redactError, redactPaths } from '../../src/node/rpc/redact';

test('fs and onnxruntime messages lose their paths, data dir with spaces included', () => {
  const root = '/home/Jane Doe/.local/share/grid-workbench/node';
  const cases: [string, string][] = [
    [`ENOENT: no such file or directory, open '${root}/uploads/abc.part'`, `ENOENT: no such file or directory, open '${REDACTED_PATH}'`],
    [`Load model from ${root}/blobs/ab/cdef failed:Protobuf parsing failed.`, `Load model from ${REDACTED_PATH} failed:Protobuf parsing failed.`],
    ['EISDIR: illegal operation on a directory, read /srv/grid/data/blobs', `EISDIR: illegal operation on a directory, read ${REDACTED_PATH}`],
    ['cannot open C:\\Users\\jane\\AppData\\Local\\grid\\x.part now', `cannot open ${REDACTED_PATH} now`],
    ['stat "/tmp/grid-node-test-1/datasets/x.csv" failed', `stat "${REDACTED_PATH}" failed`],
  ];
  for (const [input, want] of cases) {
    const out = redactPaths(input, [root]);
    assert.equal(out, want);
    assert.ok(!out.includes('Jane') && !out.includes('/tmp/') && !out.includes('AppData'), out);
  }
});

test('URLs, ids, ratios, relative paths and single route names are kept', () => {
  for (const keep of [
    'node ws://127.0.0.1:5000/x/y refused the model: allow_download is false',
    'model id "../evil" must be 1-128 characters of A-Z a-z 0-9 . _ -',
    'validation_split 1/2/3 leaves no rows',
    'no route /nope; try /health, /metrics',
    'chunk 3 of 10',
  ]) assert.equal(redactPaths(keep), keep);
});

test('redactError keeps the code and details, drops paths from both, and keeps the original as the cause', () => {
  const fsErr = Object.assign(new Error("ENOENT: no such file or directory, open '/data/node/blobs/ab'"), { code: 'ENOENT' });
  const e = redactError(fsErr, ['/data/node']);
  assert.ok(e instanceof GridError);
  assert.equal(e.code, 'GRID_ERR_INTERNAL');
  assert.equal(e.message, `ENOENT: no such file or directory, open '${REDACTED_PATH}'`);
  assert.equal(e.cause, fsErr);
  const coded = gridError('INVALID_MODEL', 'bad model at /data/node/uploads/x.part', { file: '/data/node/uploads/x.part', size: 3 });
  const r = redactError(coded, ['/data/node']);
  assert.equal(r.code, 'GRID_ERR_INVALID_MODEL');
  assert.deepEqual(r.details, { file: REDACTED_PATH, size: 3 });
  const clean = gridError('NOT_FOUND', 'no model "x" on this node');
  assert.equal(redactError(clean), clean, 'an error without paths is passed on as it is');
});
