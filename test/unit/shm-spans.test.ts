// The client's allocator of region spans (src/core/shm-client.ts): requests in flight never share bytes,
// spans stay 64-byte aligned (tensors decode without a copy), and freed spans merge back.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Spans } from '../../src/core/shm-client';

test('spans are aligned, disjoint, and the region refuses what it cannot hold', () => {
  const s = new Spans(64, 64 + 1024);
  const a = s.alloc(100)!;
  const b = s.alloc(1)!;
  const c = s.alloc(64)!;
  assert.deepEqual([a, b, c], [64, 192, 256]);
  for (const at of [a, b, c]) assert.equal(at % 64, 0);
  assert.equal(s.alloc(1024), undefined, 'more than is free');
  assert.equal(s.alloc(1024 - 256), 320, 'exactly what is left');
  assert.equal(s.alloc(1), undefined, 'full');
});

test('freed spans merge with their neighbours, whatever the order they are freed in', () => {
  const s = new Spans(0, 640);
  const spans = [0, 1, 2, 3, 4].map(() => s.alloc(128)!);
  assert.deepEqual(spans, [0, 128, 256, 384, 512]);
  s.release(128, 128);
  s.release(384, 128);
  assert.equal(s.alloc(256), undefined, 'two separate holes of 128 do not make 256');
  s.release(256, 128);
  assert.equal(s.alloc(384), 128, 'the middle three merged');
  s.release(128, 384);
  s.release(0, 128);
  s.release(512, 128);
  assert.equal(s.alloc(640), 0, 'everything merged back into one span');
});
