// checkFeedShapes: what the node checks of every inference request's tensor headers before decoding them.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkFeedShapes, type ModelSignature } from '../../src/compute/signature';

const sig: ModelSignature = {
  inputs: [
    { name: 'ids', dtype: 'int64', dims: ['batch', 'seq'] },
    { name: 'mask', dtype: 'int64', dims: ['batch', 'seq'] },
    { name: 'x', dtype: 'float32', dims: ['batch', 4] },
  ],
  outputs: [{ name: 'y', dtype: 'float32', dims: ['batch', 2] }],
};

test('symbolic dims agree across inputs: their sizes are returned, and a disagreement names both inputs', () => {
  const ok = { ids: { dtype: 'int64', dims: [2, 7] }, mask: { dtype: 'int64', dims: [2, 7] }, x: { dtype: 'float32', dims: [2, 4] } } as const;
  assert.deepEqual([...checkFeedShapes(sig, ok)], [['batch', 2], ['seq', 7]]);
  // The same signature again (its index of inputs is made once): same answer.
  assert.deepEqual([...checkFeedShapes(sig, ok)], [['batch', 2], ['seq', 7]]);
  assert.throws(() => checkFeedShapes(sig, { ...ok, x: { dtype: 'float32', dims: [3, 4] } }),
    { code: 'GRID_ERR_INVALID_INPUT', message: 'input "x" dimension 0 ("batch") is 3, but input "ids" has "batch" = 2' });
  assert.throws(() => checkFeedShapes(sig, { ...ok, mask: { dtype: 'int64', dims: [2, 8] } }),
    { code: 'GRID_ERR_INVALID_INPUT', message: 'input "mask" dimension 1 ("seq") is 8, but input "ids" has "seq" = 7' });
  assert.throws(() => checkFeedShapes(sig, { ...ok, x: { dtype: 'float32', dims: [2, 5] } }),
    { code: 'GRID_ERR_INVALID_INPUT', message: 'input "x" must have shape [batch, 4], got [2, 5]' });
  assert.throws(() => checkFeedShapes(sig, { ...ok, extra: { dtype: 'float32', dims: [1] } }),
    { code: 'GRID_ERR_INVALID_INPUT', message: /no input "extra"; its inputs are "ids", "mask", "x"/ });
});
