// Model refs (src/core/protocol/model-ref.ts): `name` is a model's latest version, `name@N` version N.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ID_PATTERN, modelRef, parseModelRef, refOf } from '../../src/core/protocol/model-ref';

test('parseModelRef reads name and name@N, and nothing else', () => {
  assert.deepEqual(parseModelRef('digits-mlp'), { id: 'digits-mlp' });
  assert.deepEqual(parseModelRef('digits-mlp@12'), { id: 'digits-mlp', version: 12 });
  assert.deepEqual(parseModelRef('a.b_c-d@1'), { id: 'a.b_c-d', version: 1 });
  for (const bad of ['', '@1', 'x@', 'x@0', 'x@01', 'x@-1', 'x@1.5', 'x@1@2', 'a/b@1', '..', '.@1', 'x@1234567890', `${'x'.repeat(129)}@1`]) {
    assert.equal(parseModelRef(bad), undefined, bad);
  }
});

test('modelRef names the exact version; refOf falls back to the bare id for a node without versions', () => {
  assert.equal(modelRef({ id: 'm', version: '3' }), 'm@3');
  assert.equal(refOf({ id: 'm', version: '3', versions: 3 }), 'm@3');
  assert.equal(refOf({ id: 'm', version: '3' }), 'm', 'an older node sends no versions count and knows no @');
});

test('ID_PATTERN: 1-128 characters of A-Z a-z 0-9 . _ -, and a ref\'s name follows the same rule', () => {
  for (const good of ['m', 'digits-mlp', 'a.b_c-d', 'x'.repeat(128)]) {
    assert.ok(ID_PATTERN.test(good), good);
    assert.deepEqual(parseModelRef(`${good}@2`), { id: good, version: 2 }, `${good}@2`);
  }
  for (const bad of ['', 'x'.repeat(129), 'a/b', 'a b', 'm@1', 'ü', 'a\nb']) assert.ok(!ID_PATTERN.test(bad), JSON.stringify(bad));
});
